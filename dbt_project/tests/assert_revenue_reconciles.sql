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
    {%- for layer, revenue_column in {
        'mart_daily_metrics': 'revenue',
        'mart_product_performance': 'revenue',
        'mart_daily_segment_metrics': 'revenue',
        'mart_product_daily': 'revenue',
        'int_user_sessions': 'revenue',
        'mart_user_behavior': 'monetary',
    }.items() %}

    select '{{ layer }}' as layer, coalesce(sum({{ revenue_column }}), 0) as revenue
    from {{ ref(layer) }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

)

select
    layers.layer,
    layers.revenue as layer_revenue,
    silver.revenue as silver_revenue

from layers
cross join silver
where layers.revenue <> silver.revenue
