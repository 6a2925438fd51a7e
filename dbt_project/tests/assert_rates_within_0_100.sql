-- Rates that are shares of a whole by construction stay within 0-100 (null allowed: no
-- denominator). Event-count ratios (conversion, cart, checkout, view-to-purchase) are
-- checked by assert_event_ratios_within_0_100, which only warns.
{{ rates_outside_0_100({
    'mart_daily_metrics': ['metric_date', ['cart_abandonment_rate']],
    'mart_conversion_funnel': [
        'metric_date',
        ['view_to_cart_rate', 'cart_to_purchase_rate', 'overall_conversion_rate'],
    ],
    'mart_hot_leads': ['user_id', {'propensity_score x 100': '100 * propensity_score::numeric'}],
}) }}
