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
    mart_daily_metrics does. -#}
{%- set cursor = ingestion_cursor() %}

with events as (

    select * from {{ ref('stg_clickstream_events') }}

),

{% if is_incremental() -%}
new_event_days as (

    select
        event_date as metric_date,
        max(batch_id) as last_batch_id

    from events
    where batch_id > {{ cursor }}
    group by event_date

),

session_changes as (

    {{ session_start_day_changes(ref('stg_clickstream_events'), cursor) }}

),

changed_days as (

    select metric_date from new_event_days
    union
    select metric_date from session_changes

),

day_totals as (

    select
        changed_days.metric_date,
        coalesce(previous.sessions, 0) + coalesce(session_changes.sessions, 0) as sessions,
        coalesce(previous.viewed_sessions, 0)
            + coalesce(session_changes.viewed_sessions, 0) as viewed_sessions,
        coalesce(previous.carted_sessions, 0)
            + coalesce(session_changes.carted_sessions, 0) as carted_sessions,
        coalesce(previous.purchased_sessions, 0)
            + coalesce(session_changes.purchased_sessions, 0) as purchased_sessions,
        greatest(previous.last_batch_id, new_event_days.last_batch_id) as last_batch_id

    from changed_days
    left join {{ this }} as previous
        on changed_days.metric_date = previous.metric_date
    left join new_event_days
        on changed_days.metric_date = new_event_days.metric_date
    left join session_changes
        on changed_days.metric_date = session_changes.metric_date

),
{%- else -%}
event_days as (

    select
        event_date as metric_date,
        max(batch_id) as last_batch_id

    from events
    group by event_date

),

session_totals as (

    select
        session_date as metric_date,
        count(*) as sessions,
        count(*) filter (where page_views > 0) as viewed_sessions,
        count(*) filter (where page_views > 0 and add_to_carts > 0) as carted_sessions,
        count(*) filter (
            where page_views > 0 and add_to_carts > 0 and purchases > 0
        ) as purchased_sessions

    from {{ ref('int_user_sessions') }}
    group by session_date

),

day_totals as (

    select
        event_days.metric_date,
        coalesce(session_totals.sessions, 0) as sessions,
        coalesce(session_totals.viewed_sessions, 0) as viewed_sessions,
        coalesce(session_totals.carted_sessions, 0) as carted_sessions,
        coalesce(session_totals.purchased_sessions, 0) as purchased_sessions,
        event_days.last_batch_id

    from event_days
    left join session_totals
        on event_days.metric_date = session_totals.metric_date

),
{%- endif %}

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
