{#- Per UTC day, how the session counts change when the events after `cursor` are added:
    for every session those events touch, its state before (events with batch_id <= cursor)
    counts -1 on its old start day and its state after counts +1 on its new start day.
    A late event that moves a session's start across midnight so moves it between days,
    and a cart that became a purchase leaves the abandoned count. Only the touched
    sessions' events are read (through the session_id index), so the cost follows the new
    data, not the history.

    In a full build nothing is stored, so the changes are the totals: those of
    session_start_day_totals over `sessions_relation` (int_user_sessions), which counts
    each session once instead of reading its events.

    Columns: metric_date, then session_measures(): sessions, abandoned_cart_sessions,
    viewed_sessions, carted_sessions, purchased_sessions.

    With by_segment=true the changes are per (metric_date, country, device_type) as well: a
    session's country and device are those of its first event (int_user_sessions' rule), so
    a late event that becomes a session's first event can move it between segments too.

    With grain='hour' the periods are UTC hours (metric_hour, grain.sql) instead of days: the
    same changes, a session counted in the hour of its first event. -#}
{% macro session_start_day_changes(
    events_relation, sessions_relation, cursor, by_segment=false, grain='day'
) -%}
    {%- set period = grain_column(grain) -%}
    {%- if not is_incremental() -%}
    {{ session_start_day_totals(sessions_relation, by_segment, grain) }}
    {%- else -%}
    with touched_events as (

        select
            touched.session_id,
            touched.event_id,
            touched.event_timestamp,
            touched.batch_id,
            touched.country,
            touched.device_type,
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
            {{ period_of(grain, 'min(event_timestamp) filter (where batch_id <= ' ~ cursor ~ ')') }}
                as old_start_date,
            coalesce(bool_or(is_page_view) filter (where batch_id <= {{ cursor }}), false)
                as old_viewed,
            coalesce(bool_or(is_add_to_cart) filter (where batch_id <= {{ cursor }}), false)
                as old_carted,
            coalesce(bool_or(is_purchase) filter (where batch_id <= {{ cursor }}), false)
                as old_purchased,
            {%- if by_segment %}
            (array_agg(country order by event_timestamp, event_id)
                filter (where batch_id <= {{ cursor }}))[1] as old_country,
            (array_agg(device_type order by event_timestamp, event_id)
                filter (where batch_id <= {{ cursor }}))[1] as old_device_type,
            (array_agg(country order by event_timestamp, event_id))[1] as new_country,
            (array_agg(device_type order by event_timestamp, event_id))[1] as new_device_type,
            {%- endif %}
            {{ period_of(grain, 'min(event_timestamp)') }} as new_start_date,
            bool_or(is_page_view) as new_viewed,
            bool_or(is_add_to_cart) as new_carted,
            bool_or(is_purchase) as new_purchased

        from touched_events
        group by session_id

    ),

    contributions as (

        select
            old_start_date as {{ period }},
            {%- if by_segment %}
            old_country as country,
            old_device_type as device_type,
            {%- endif %}
            -1 as weight,
            old_viewed as viewed,
            old_carted as carted,
            old_purchased as purchased
        from session_states
        where old_start_date is not null

        union all

        select
            new_start_date as {{ period }},
            {%- if by_segment %}
            new_country as country,
            new_device_type as device_type,
            {%- endif %}
            1 as weight,
            new_viewed as viewed,
            new_carted as carted,
            new_purchased as purchased
        from session_states

    )

    select
        {{ period }},
        {%- if by_segment %}
        country,
        device_type,
        {%- endif %}
        {{- session_measures(
            viewed='viewed',
            carted='carted',
            purchased='purchased',
            abandoned='carted and not purchased',
            weight='weight',
        ) }}

    from contributions
    group by {{ period }}{% if by_segment %}, country, device_type{% endif %}
    {%- endif %}
{%- endmacro %}

{#- Per UTC day a session started (and with by_segment per the country and device of its
    first event), the session measures of every session in `sessions_relation`
    (int_user_sessions): what a full build counts, with the columns of
    session_start_day_changes. -#}
{% macro session_start_day_totals(sessions_relation, by_segment=false, grain='day') -%}
    {%- set session_period = 'session_date' if grain == 'day' else period_of(grain, 'session_start') -%}
    select
        {{ session_period }} as {{ grain_column(grain) }},
        {%- if by_segment %}
        country,
        device_type,
        {%- endif %}
        {{- session_measures(
            viewed='page_views > 0',
            carted='add_to_carts > 0',
            purchased='purchases > 0',
            abandoned='abandoned_cart',
        ) }}

    from {{ sessions_relation }}
    group by {{ session_period }}{% if by_segment %}, country, device_type{% endif %}
{%- endmacro %}
