{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['metric_hour', 'country', 'device_type'],
        indexes=[{'columns': ['metric_hour', 'country', 'device_type'], 'unique': True}],
    )
}}

{#- mart_daily_segment_sessions at the grain of a UTC hour: session measures per hour a
    session started, country and device. The query (and how it is incremental) is
    segment_sessions' in macros/segment_marts.sql. -#}
{{ segment_sessions('hour') }}
