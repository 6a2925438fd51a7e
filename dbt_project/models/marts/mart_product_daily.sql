{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['metric_date', 'product_id', 'country', 'device_type'],
        indexes=[
            {'columns': ['metric_date', 'product_id', 'country', 'device_type'], 'unique': True},
        ],
    )
}}

{#- mart_product_performance's measures per UTC day of the event, and per the event's
    country and device, so the Overview's top products follow its period and filters
    (the category filter applies through product_category). Every measure is a sum, so an
    incremental run adds the new batches' events to the cells they fall in, as
    mart_product_performance does; each event_id reaches Silver once, in one batch. -#}
{%- set cursor = ingestion_cursor() %}
{%- set measures = event_measures('product') %}

with new_events as (

    {{ after_cursor(ref('stg_clickstream_events'), cursor) }}

),

event_totals as (

    select
        event_date as metric_date,
        product_id,
        country,
        device_type,
        -- As in mart_product_performance: if events ever disagree, the alphabetically first.
        min(product_name) as product_name,
        min(product_category) as product_category,
        {{- aggregate_event_measures(measures) }}
        max(batch_id) as last_batch_id

    from new_events
    group by event_date, product_id, country, device_type

),

cell_totals as (

    {{ stored_plus_changes(
        keys=['metric_date', 'product_id', 'country', 'device_type'],
        changes={'event_totals': measures},
        batch_changes='event_totals',
        keep_least=['product_name', 'product_category'],
    ) }}

),

final as (

    select
        metric_date,
        product_id,
        country,
        device_type,
        product_name,
        product_category,
        {{- cast_event_measures(measures) }}
        last_batch_id

    from cell_totals

)

select * from final
