-- Event-count ratios can exceed 100 without a bug (a day with more purchase events than
-- page views, e.g. when page views were rejected upstream), so this only warns: a
-- warning points at odd data, not at wrong arithmetic. Negative values would be a bug.
{{ config(severity='warn') }}

{{ rates_outside_0_100({
    'mart_daily_metrics': ['metric_date', ['conversion_rate', 'cart_rate', 'checkout_rate']],
    'mart_product_performance': ['product_id', ['view_to_purchase_rate']],
}) }}
