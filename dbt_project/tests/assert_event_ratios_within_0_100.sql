-- Event-count ratios can exceed 100 without a bug (a day with more purchase events than
-- page views, e.g. when page views were rejected upstream), so this only warns: a
-- warning points at odd data, not at wrong arithmetic. Negative values would be a bug.
{{ config(severity='warn') }}

with rates as (

    select 'mart_daily_metrics.conversion_rate' as rate, metric_date::text as row_key,
        conversion_rate as value
    from {{ ref('mart_daily_metrics') }}
    union all
    select 'mart_daily_metrics.cart_rate', metric_date::text, cart_rate
    from {{ ref('mart_daily_metrics') }}
    union all
    select 'mart_daily_metrics.checkout_rate', metric_date::text, checkout_rate
    from {{ ref('mart_daily_metrics') }}
    union all
    select 'mart_product_performance.view_to_purchase_rate', product_id, view_to_purchase_rate
    from {{ ref('mart_product_performance') }}

)

select *
from rates
where value < 0 or value > 100
