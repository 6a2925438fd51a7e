{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='metric_date',
        indexes=[{'columns': ['metric_date'], 'unique': True}],
    )
}}

{#- Event counts belong to the UTC day of the event; sessions to the UTC day they started.
    Every count here can be updated by difference, so an incremental run adds to the stored
    days only what the new batches change: their events, the (day, user) pairs they show
    for the first time, and the sessions they create, move across midnight (a late event)
    or turn from abandoned to bought. The KPIs are then recomputed from the counts. -#}
{%- set cursor = ingestion_cursor() %}

-- Not materialized: referenced twice, PostgreSQL would otherwise copy all of Silver into a
-- CTE and lose its indexes, making the incremental run cost the history.
with events as not materialized (

    select * from {{ ref('stg_clickstream_events') }}

),

{% if is_incremental() -%}
new_events as (

    select * from events
    where batch_id > {{ cursor }}

),

event_changes as (

    select
        event_date as metric_date,
        count(*) as events,
        count(*) filter (where is_page_view) as page_views,
        count(*) filter (where is_add_to_cart) as add_to_carts,
        count(*) filter (where is_purchase) as purchases,
        coalesce(sum(quantity) filter (where is_purchase), 0) as units_sold,
        sum(line_revenue) as revenue,
        max(batch_id) as last_batch_id

    from new_events
    group by event_date

),

new_user_days as (

    select distinct event_date, user_id
    from new_events

),

user_changes as (

    -- A user counts once per day: only pairs with no earlier event that day are new.
    select
        new_user_days.event_date as metric_date,
        count(*) as unique_users

    from new_user_days
    where not exists (
        select 1
        from events as earlier
        where earlier.user_id = new_user_days.user_id
            and earlier.event_date = new_user_days.event_date
            and earlier.batch_id <= {{ cursor }}
    )
    group by new_user_days.event_date

),

session_changes as (

    {{ session_start_day_changes(ref('stg_clickstream_events'), cursor) }}

),

changed_days as (

    select metric_date from event_changes
    union
    select metric_date from session_changes

),

day_totals as (

    select
        changed_days.metric_date,
        coalesce(previous.events, 0) + coalesce(event_changes.events, 0) as events,
        coalesce(previous.page_views, 0) + coalesce(event_changes.page_views, 0) as page_views,
        coalesce(previous.add_to_carts, 0)
            + coalesce(event_changes.add_to_carts, 0) as add_to_carts,
        coalesce(previous.purchases, 0) + coalesce(event_changes.purchases, 0) as purchases,
        coalesce(previous.units_sold, 0) + coalesce(event_changes.units_sold, 0) as units_sold,
        coalesce(previous.revenue, 0) + coalesce(event_changes.revenue, 0) as revenue,
        coalesce(previous.unique_users, 0)
            + coalesce(user_changes.unique_users, 0) as unique_users,
        coalesce(previous.sessions, 0) + coalesce(session_changes.sessions, 0) as sessions,
        coalesce(previous.abandoned_cart_sessions, 0)
            + coalesce(session_changes.abandoned_cart_sessions, 0) as abandoned_cart_sessions,
        -- greatest() skips nulls: a day changed only by a session move keeps its value.
        greatest(previous.last_batch_id, event_changes.last_batch_id) as last_batch_id

    from changed_days
    left join {{ this }} as previous
        on changed_days.metric_date = previous.metric_date
    left join event_changes
        on changed_days.metric_date = event_changes.metric_date
    left join user_changes
        on changed_days.metric_date = user_changes.metric_date
    left join session_changes
        on changed_days.metric_date = session_changes.metric_date

),
{%- else -%}
event_totals as (

    select
        event_date as metric_date,
        count(*) as events,
        count(*) filter (where is_page_view) as page_views,
        count(*) filter (where is_add_to_cart) as add_to_carts,
        count(*) filter (where is_purchase) as purchases,
        coalesce(sum(quantity) filter (where is_purchase), 0) as units_sold,
        sum(line_revenue) as revenue,
        count(distinct user_id) as unique_users,
        max(batch_id) as last_batch_id

    from events
    group by event_date

),

session_totals as (

    select
        session_date as metric_date,
        count(*) as sessions,
        count(*) filter (where abandoned_cart) as abandoned_cart_sessions

    from {{ ref('int_user_sessions') }}
    group by session_date

),

day_totals as (

    -- Every session starts with an event on its start day, so the event days are all days.
    select
        event_totals.metric_date,
        event_totals.events,
        event_totals.page_views,
        event_totals.add_to_carts,
        event_totals.purchases,
        event_totals.units_sold,
        event_totals.revenue,
        event_totals.unique_users,
        coalesce(session_totals.sessions, 0) as sessions,
        coalesce(session_totals.abandoned_cart_sessions, 0) as abandoned_cart_sessions,
        event_totals.last_batch_id

    from event_totals
    left join session_totals
        on event_totals.metric_date = session_totals.metric_date

),
{%- endif %}

final as (

    select
        metric_date,
        events::bigint as events,
        page_views::bigint as page_views,
        add_to_carts::bigint as add_to_carts,
        purchases::bigint as purchases,
        units_sold::bigint as units_sold,
        revenue::numeric(18, 2) as revenue,
        unique_users::bigint as unique_users,
        sessions::bigint as sessions,
        abandoned_cart_sessions::bigint as abandoned_cart_sessions,
        {{ percent('purchases', 'page_views') }} as conversion_rate,
        {{ percent('add_to_carts', 'page_views') }} as cart_rate,
        {{ percent('purchases', 'add_to_carts') }} as checkout_rate,
        {{ percent('abandoned_cart_sessions', 'sessions') }} as cart_abandonment_rate,
        {{ ratio('revenue', 'purchases') }} as average_order_value,
        {{ ratio('revenue', 'unique_users') }} as revenue_per_user,
        last_batch_id

    from day_totals

)

select * from final
