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
    Incremental by difference through session_start_day_changes(by_segment=true). -#}
{%- set cursor = ingestion_cursor() %}

with events as (

    select * from {{ ref('stg_clickstream_events') }}

),

{% if is_incremental() -%}
new_event_cells as (

    select
        event_date as metric_date,
        country,
        device_type,
        max(batch_id) as last_batch_id

    from events
    where batch_id > {{ cursor }}
    group by event_date, country, device_type

),

session_changes as (

    {{ session_start_day_changes(ref('stg_clickstream_events'), cursor, by_segment=true) }}

),

changed_cells as (

    select metric_date, country, device_type from new_event_cells
    union
    select metric_date, country, device_type from session_changes

),

cell_totals as (

    select
        changed_cells.metric_date,
        changed_cells.country,
        changed_cells.device_type,
        coalesce(previous.sessions, 0) + coalesce(session_changes.sessions, 0) as sessions,
        coalesce(previous.abandoned_cart_sessions, 0)
            + coalesce(session_changes.abandoned_cart_sessions, 0) as abandoned_cart_sessions,
        coalesce(previous.viewed_sessions, 0)
            + coalesce(session_changes.viewed_sessions, 0) as viewed_sessions,
        coalesce(previous.carted_sessions, 0)
            + coalesce(session_changes.carted_sessions, 0) as carted_sessions,
        coalesce(previous.purchased_sessions, 0)
            + coalesce(session_changes.purchased_sessions, 0) as purchased_sessions,
        greatest(previous.last_batch_id, new_event_cells.last_batch_id) as last_batch_id

    from changed_cells
    left join {{ this }} as previous
        on changed_cells.metric_date = previous.metric_date
            and changed_cells.country = previous.country
            and changed_cells.device_type = previous.device_type
    left join new_event_cells
        on changed_cells.metric_date = new_event_cells.metric_date
            and changed_cells.country = new_event_cells.country
            and changed_cells.device_type = new_event_cells.device_type
    left join session_changes
        on changed_cells.metric_date = session_changes.metric_date
            and changed_cells.country = session_changes.country
            and changed_cells.device_type = session_changes.device_type

),
{%- else -%}
event_cells as (

    select
        event_date as metric_date,
        country,
        device_type,
        max(batch_id) as last_batch_id

    from events
    group by event_date, country, device_type

),

session_totals as (

    select
        session_date as metric_date,
        country,
        device_type,
        count(*) as sessions,
        count(*) filter (where abandoned_cart) as abandoned_cart_sessions,
        count(*) filter (where page_views > 0) as viewed_sessions,
        count(*) filter (where page_views > 0 and add_to_carts > 0) as carted_sessions,
        count(*) filter (
            where page_views > 0 and add_to_carts > 0 and purchases > 0
        ) as purchased_sessions

    from {{ ref('int_user_sessions') }}
    group by session_date, country, device_type

),

cell_totals as (

    select
        event_cells.metric_date,
        event_cells.country,
        event_cells.device_type,
        coalesce(session_totals.sessions, 0) as sessions,
        coalesce(session_totals.abandoned_cart_sessions, 0) as abandoned_cart_sessions,
        coalesce(session_totals.viewed_sessions, 0) as viewed_sessions,
        coalesce(session_totals.carted_sessions, 0) as carted_sessions,
        coalesce(session_totals.purchased_sessions, 0) as purchased_sessions,
        event_cells.last_batch_id

    from event_cells
    left join session_totals
        on event_cells.metric_date = session_totals.metric_date
            and event_cells.country = session_totals.country
            and event_cells.device_type = session_totals.device_type

),
{%- endif %}

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
