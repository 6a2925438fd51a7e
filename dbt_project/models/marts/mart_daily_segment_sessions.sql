{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['metric_date', 'country', 'device_type'],
        indexes=[{'columns': ['metric_date', 'country', 'device_type'], 'unique': True}],
    )
}}

{#- Session measures per UTC day a session started, country and device; the query (and how
    it is incremental) is segment_sessions' in macros/segment_marts.sql, shared with
    mart_hourly_segment_sessions. -#}
{{ segment_sessions('day') }}
