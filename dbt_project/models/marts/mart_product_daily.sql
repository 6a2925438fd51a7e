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

with events as (

    select * from {{ ref('stg_clickstream_events') }}
    {% if is_incremental() -%}
    where batch_id > {{ cursor }}
    {%- endif %}

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
        count(*) filter (where is_page_view) as views,
        count(*) filter (where is_add_to_cart) as carts,
        count(*) filter (where is_purchase) as purchases,
        coalesce(sum(quantity) filter (where is_purchase), 0) as units_sold,
        sum(line_revenue) as revenue,
        max(batch_id) as last_batch_id

    from events
    group by event_date, product_id, country, device_type

),

{% if is_incremental() -%}
cell_totals as (

    select
        event_totals.metric_date,
        event_totals.product_id,
        event_totals.country,
        event_totals.device_type,
        -- least/greatest skip nulls in PostgreSQL: a cell new to the table keeps its values.
        least(previous.product_name, event_totals.product_name) as product_name,
        least(previous.product_category, event_totals.product_category) as product_category,
        coalesce(previous.views, 0) + event_totals.views as views,
        coalesce(previous.carts, 0) + event_totals.carts as carts,
        coalesce(previous.purchases, 0) + event_totals.purchases as purchases,
        coalesce(previous.units_sold, 0) + event_totals.units_sold as units_sold,
        coalesce(previous.revenue, 0) + event_totals.revenue as revenue,
        greatest(previous.last_batch_id, event_totals.last_batch_id) as last_batch_id

    from event_totals
    left join {{ this }} as previous
        on event_totals.metric_date = previous.metric_date
            and event_totals.product_id = previous.product_id
            and event_totals.country = previous.country
            and event_totals.device_type = previous.device_type

),
{%- else -%}
cell_totals as (

    select * from event_totals

),
{%- endif %}

final as (

    select
        metric_date,
        product_id,
        country,
        device_type,
        product_name,
        product_category,
        views::bigint as views,
        carts::bigint as carts,
        purchases::bigint as purchases,
        units_sold::bigint as units_sold,
        revenue::numeric(18, 2) as revenue,
        last_batch_id

    from cell_totals

)

select * from final
