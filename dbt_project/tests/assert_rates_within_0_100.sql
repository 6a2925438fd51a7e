-- Rates that are shares of a whole by construction stay within 0-100 (null allowed: no
-- denominator). Event-count ratios (conversion, cart, checkout, view-to-purchase) are
-- checked by assert_event_ratios_within_0_100, which only warns.
with rates as (

    select 'mart_daily_metrics.cart_abandonment_rate' as rate, metric_date::text as row_key,
        cart_abandonment_rate as value
    from {{ ref('mart_daily_metrics') }}
    union all
    select 'mart_conversion_funnel.view_to_cart_rate', metric_date::text, view_to_cart_rate
    from {{ ref('mart_conversion_funnel') }}
    union all
    select 'mart_conversion_funnel.cart_to_purchase_rate', metric_date::text, cart_to_purchase_rate
    from {{ ref('mart_conversion_funnel') }}
    union all
    select 'mart_conversion_funnel.overall_conversion_rate', metric_date::text,
        overall_conversion_rate
    from {{ ref('mart_conversion_funnel') }}
    union all
    select 'mart_hot_leads.propensity_score x 100', user_id, 100 * propensity_score::numeric
    from {{ ref('mart_hot_leads') }}

)

select *
from rates
where value < 0 or value > 100
