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

with events as (

    select * from {{ ref('stg_clickstream_events') }}
    {% if is_incremental() -%}
    where batch_id > {{ cursor }}
    {%- endif %}

),

event_totals as (

    select
        product_id,
        -- Events of one product carry the catalog's name; if they ever disagree, the
        -- alphabetically first wins, which an additive run can keep without history.
        min(product_name) as product_name,
        min(product_category) as product_category,
        count(*) filter (where is_page_view) as views,
        count(*) filter (where is_add_to_cart) as carts,
        count(*) filter (where is_purchase) as purchases,
        coalesce(sum(quantity) filter (where is_purchase), 0) as units_sold,
        sum(line_revenue) as revenue,
        max(batch_id) as last_batch_id

    from events
    group by product_id

),

{% if is_incremental() -%}
product_totals as (

    select
        coalesce(previous.product_id, event_totals.product_id) as product_id,
        -- least/greatest skip nulls in PostgreSQL: a side without the product is ignored.
        least(previous.product_name, event_totals.product_name) as product_name,
        least(previous.product_category, event_totals.product_category) as product_category,
        coalesce(previous.views, 0) + coalesce(event_totals.views, 0) as views,
        coalesce(previous.carts, 0) + coalesce(event_totals.carts, 0) as carts,
        coalesce(previous.purchases, 0) + coalesce(event_totals.purchases, 0) as purchases,
        coalesce(previous.units_sold, 0) + coalesce(event_totals.units_sold, 0) as units_sold,
        coalesce(previous.revenue, 0) + coalesce(event_totals.revenue, 0) as revenue,
        greatest(previous.last_batch_id, event_totals.last_batch_id) as last_batch_id

    from {{ this }} as previous
    full outer join event_totals
        on previous.product_id = event_totals.product_id

),
{%- else -%}
product_totals as (

    select * from event_totals

),
{%- endif %}

final as (

    select
        product_id,
        product_name,
        product_category,
        views::bigint as views,
        carts::bigint as carts,
        purchases::bigint as purchases,
        units_sold::bigint as units_sold,
        revenue::numeric(18, 2) as revenue,
        {{ percent('purchases', 'views') }} as view_to_purchase_rate,
        rank() over (order by revenue desc) as revenue_rank,
        last_batch_id

    from product_totals

)

select * from final
