{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['metric_date', 'country', 'device_type', 'product_category'],
        indexes=[
            {'columns': ['metric_date', 'country', 'device_type', 'product_category'],
             'unique': True},
        ],
    )
}}

{#- Event measures and user-days per UTC day, country, device and product category; the
    query (and how it is incremental) is segment_metrics' in macros/segment_marts.sql,
    shared with mart_hourly_segment_metrics. -#}
{{ segment_metrics('day') }}
