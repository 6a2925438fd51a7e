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
    or turn from abandoned to bought. The KPIs are then recomputed from the counts. A full
    build runs the same query with every event as new, int_user_sessions' sessions as the
    session changes and nothing stored (stored_plus_changes). -#}
{%- set cursor = ingestion_cursor() %}
{%- set measures = event_measures() %}

-- Not materialized: referenced twice, PostgreSQL would otherwise copy all of Silver into a
-- CTE and lose its indexes, making the incremental run cost the history.
with events as not materialized (

    select * from {{ ref('stg_clickstream_events') }}

),

-- Not materialized either: referenced twice, and in a full build it is all of Silver.
new_events as not materialized (

    {{ after_cursor('events', cursor) }}

),

event_changes as (

    select
        event_date as metric_date,
        {{- aggregate_event_measures(measures) }}
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
    {% if is_incremental() -%}
    where not exists (
        select 1
        from events as earlier
        where earlier.user_id = new_user_days.user_id
            and earlier.event_date = new_user_days.event_date
            and earlier.batch_id <= {{ cursor }}
    )
    {%- endif %}
    group by new_user_days.event_date

),

session_changes as (

    {{ session_start_day_changes(
        ref('stg_clickstream_events'), ref('int_user_sessions'), cursor
    ) }}

),

day_totals as (

    -- Every session starts with an event on its start day, so the days changed are days
    -- with events: the model's rows.
    {{ stored_plus_changes(
        keys=['metric_date'],
        changes={
            'event_changes': measures,
            'user_changes': ['unique_users'],
            'session_changes': ['sessions', 'abandoned_cart_sessions'],
        },
        batch_changes='event_changes',
    ) }}

),

final as (

    select
        metric_date,
        {{- cast_event_measures(measures) }}
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
