{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='metric_date',
        indexes=[{'columns': ['metric_date'], 'unique': True}],
    )
}}

{#- The session funnel page view -> add to cart -> purchase, per UTC day a session started.
    A step counts the sessions that reached it and every step before it, so the funnel is
    monotone by definition (a session that bought with no cart event is not a funnel
    purchase; mart_daily_metrics still counts its purchase events). The days are those of
    mart_daily_metrics, the days with events, so a day that loses its last session start to
    a late event keeps a row with zero sessions. Incremental runs update by difference, as
    mart_daily_metrics does; a full build adds all sessions to nothing. -#}
{%- set cursor = ingestion_cursor() %}

with new_events as (

    {{ after_cursor(ref('stg_clickstream_events'), cursor) }}

),

new_event_days as (

    select
        event_date as metric_date,
        max(batch_id) as last_batch_id

    from new_events
    group by event_date

),

session_changes as (

    {{ session_start_day_changes(
        ref('stg_clickstream_events'), ref('int_user_sessions'), cursor
    ) }}

),

day_totals as (

    {{ stored_plus_changes(
        keys=['metric_date'],
        changes={
            'new_event_days': [],
            'session_changes': [
                'sessions',
                'viewed_sessions',
                'carted_sessions',
                'purchased_sessions',
            ],
        },
        batch_changes='new_event_days',
    ) }}

),

final as (

    select
        metric_date,
        sessions::bigint as sessions,
        viewed_sessions::bigint as viewed_sessions,
        carted_sessions::bigint as carted_sessions,
        purchased_sessions::bigint as purchased_sessions,
        {{ percent('carted_sessions', 'viewed_sessions') }} as view_to_cart_rate,
        {{ percent('purchased_sessions', 'carted_sessions') }} as cart_to_purchase_rate,
        {{ percent('purchased_sessions', 'viewed_sessions') }} as overall_conversion_rate,
        last_batch_id

    from day_totals

)

select * from final
