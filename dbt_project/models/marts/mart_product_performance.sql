{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='product_id',
        indexes=[{'columns': ['product_id'], 'unique': True}],
    )
}}

{#- Every measure here is a sum, so an incremental run adds the new batches' events to the
    stored totals instead of re-reading a product's history (a small catalog means every
    batch touches nearly every product, and re-reading them would cost the whole history).
    This is exact because each event_id reaches Silver once, in one batch. Revenue ranks
    are then recomputed over all products, which costs the catalog size, not the history. -#}
{%- set cursor = ingestion_cursor() %}
{%- set measures = event_measures('product') %}

with new_events as (

    {{ after_cursor(ref('stg_clickstream_events'), cursor) }}

),

event_totals as (

    select
        product_id,
        -- Events of one product carry the catalog's name; if they ever disagree, the
        -- alphabetically first wins, which an additive run can keep without history.
        min(product_name) as product_name,
        min(product_category) as product_category,
        {{- aggregate_event_measures(measures) }}
        max(batch_id) as last_batch_id

    from new_events
    group by product_id

),

product_totals as (

    -- Every stored product, changed or not: the revenue ranks are taken over all of them.
    {{ stored_plus_changes(
        keys=['product_id'],
        changes={'event_totals': measures},
        batch_changes='event_totals',
        keep_least=['product_name', 'product_category'],
        every_stored_row=true,
    ) }}

),

final as (

    select
        product_id,
        product_name,
        product_category,
        {{- cast_event_measures(measures) }}
        {{ percent('purchases', 'views') }} as view_to_purchase_rate,
        rank() over (order by revenue desc) as revenue_rank,
        last_batch_id

    from product_totals

)

select * from final
