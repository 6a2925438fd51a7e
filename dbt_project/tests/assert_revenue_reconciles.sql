-- Revenue reconciliation: Silver purchase revenue equals the revenue of every Gold table
-- that sums it (days, segments, products, product-days, sessions, users). Returns a row
-- per layer that disagrees.
{{ config(tags=['full_scan']) }}

with silver as (

    select coalesce(sum(line_revenue), 0) as revenue
    from {{ ref('stg_clickstream_events') }}
    where is_purchase

),

layers as (

    select 'mart_daily_metrics' as layer, coalesce(sum(revenue), 0) as revenue
    from {{ ref('mart_daily_metrics') }}
    union all
    select 'mart_product_performance', coalesce(sum(revenue), 0)
    from {{ ref('mart_product_performance') }}
    union all
    select 'mart_daily_segment_metrics', coalesce(sum(revenue), 0)
    from {{ ref('mart_daily_segment_metrics') }}
    union all
    select 'mart_product_daily', coalesce(sum(revenue), 0)
    from {{ ref('mart_product_daily') }}
    union all
    select 'int_user_sessions', coalesce(sum(revenue), 0)
    from {{ ref('int_user_sessions') }}
    union all
    select 'mart_user_behavior', coalesce(sum(monetary), 0)
    from {{ ref('mart_user_behavior') }}

)

select
    layers.layer,
    layers.revenue as layer_revenue,
    silver.revenue as silver_revenue

from layers
cross join silver
where layers.revenue <> silver.revenue
