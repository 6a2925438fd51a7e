{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['metric_hour', 'country', 'device_type', 'product_category'],
        indexes=[
            {'columns': ['metric_hour', 'country', 'device_type', 'product_category'],
             'unique': True},
        ],
    )
}}

{#- mart_daily_segment_metrics at the grain of a UTC hour, for the Overview's intraday
    periods: event measures and user-hours per hour, country, device and product category.
    The query (and how it is incremental) is segment_metrics' in macros/segment_marts.sql. -#}
{{ segment_metrics('hour') }}
