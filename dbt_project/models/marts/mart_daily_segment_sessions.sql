{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['metric_date', 'country', 'device_type'],
        indexes=[{'columns': ['metric_date', 'country', 'device_type'], 'unique': True}],
    )
}}

{#- mart_daily_metrics' and mart_conversion_funnel's session measures per UTC day, country
    and device, for the Overview's filters. A session's day, country and device are those
    of its first event (int_user_sessions); a session spans products, so it has no product
    category. The cells are the (day, country, device) cells with events, as the daily
    marts' days are the days with events, so a cell that loses its last session start to a
    late event keeps a row with zero sessions in both incremental and full-refresh builds.
    Incremental by difference through session_start_day_changes(by_segment=true); a full
    build adds all sessions to nothing. -#}
{%- set cursor = ingestion_cursor() %}

with new_events as (

    {{ after_cursor(ref('stg_clickstream_events'), cursor) }}

),

new_event_cells as (

    select
        event_date as metric_date,
        country,
        device_type,
        max(batch_id) as last_batch_id

    from new_events
    group by event_date, country, device_type

),

session_changes as (

    {{ session_start_day_changes(
        ref('stg_clickstream_events'), ref('int_user_sessions'), cursor, by_segment=true
    ) }}

),

cell_totals as (

    {{ stored_plus_changes(
        keys=['metric_date', 'country', 'device_type'],
        changes={
            'new_event_cells': [],
            'session_changes': session_measure_columns(),
        },
        batch_changes='new_event_cells',
    ) }}

),

final as (

    select
        metric_date,
        country,
        device_type,
        sessions::bigint as sessions,
        abandoned_cart_sessions::bigint as abandoned_cart_sessions,
        viewed_sessions::bigint as viewed_sessions,
        carted_sessions::bigint as carted_sessions,
        purchased_sessions::bigint as purchased_sessions,
        last_batch_id

    from cell_totals

)

select * from final
