{#- Per UTC day, how the session counts change when the events after `cursor` are added:
    for every session those events touch, its state before (events with batch_id <= cursor)
    counts -1 on its old start day and its state after counts +1 on its new start day.
    A late event that moves a session's start across midnight so moves it between days,
    and a cart that became a purchase leaves the abandoned count. Only the touched
    sessions' events are read (through the session_id index), so the cost follows the new
    data, not the history.

    Columns: metric_date, sessions, abandoned_cart_sessions, viewed_sessions,
    carted_sessions, purchased_sessions (funnel steps: reached this and every earlier step). -#}
{% macro session_start_day_changes(events_relation, cursor) -%}
    with touched_events as (

        select
            touched.session_id,
            touched.event_timestamp,
            touched.batch_id,
            touched.is_page_view,
            touched.is_add_to_cart,
            touched.is_purchase

        from {{ events_relation }} as touched
        where touched.session_id in (
            select distinct new_events.session_id
            from {{ events_relation }} as new_events
            where new_events.batch_id > {{ cursor }}
        )

    ),

    session_states as (

        select
            session_id,
            (min(event_timestamp) filter (where batch_id <= {{ cursor }})
                at time zone 'UTC')::date as old_start_date,
            coalesce(bool_or(is_page_view) filter (where batch_id <= {{ cursor }}), false)
                as old_viewed,
            coalesce(bool_or(is_add_to_cart) filter (where batch_id <= {{ cursor }}), false)
                as old_carted,
            coalesce(bool_or(is_purchase) filter (where batch_id <= {{ cursor }}), false)
                as old_purchased,
            (min(event_timestamp) at time zone 'UTC')::date as new_start_date,
            bool_or(is_page_view) as new_viewed,
            bool_or(is_add_to_cart) as new_carted,
            bool_or(is_purchase) as new_purchased

        from touched_events
        group by session_id

    ),

    contributions as (

        select
            old_start_date as metric_date,
            -1 as weight,
            old_viewed as viewed,
            old_carted as carted,
            old_purchased as purchased
        from session_states
        where old_start_date is not null

        union all

        select
            new_start_date as metric_date,
            1 as weight,
            new_viewed as viewed,
            new_carted as carted,
            new_purchased as purchased
        from session_states

    )

    select
        metric_date,
        sum(weight) as sessions,
        coalesce(sum(weight) filter (where carted and not purchased), 0)
            as abandoned_cart_sessions,
        coalesce(sum(weight) filter (where viewed), 0) as viewed_sessions,
        coalesce(sum(weight) filter (where viewed and carted), 0) as carted_sessions,
        coalesce(sum(weight) filter (where viewed and carted and purchased), 0)
            as purchased_sessions

    from contributions
    group by metric_date
{%- endmacro %}
