{#- The bodies of the segment marts, one per measure family, for both grains (grain.sql):
    mart_daily_segment_metrics / mart_hourly_segment_metrics and mart_daily_segment_sessions /
    mart_hourly_segment_sessions are the same query with the period a UTC day or a UTC hour,
    so the two grains cannot drift apart. -#}

{#- mart_daily_metrics' event measures split by period and by the event's own country, device
    and product category, so the Overview's filters read a few hundred rows of Gold instead of
    Silver. Every column is additive: a filtered period is a sum over cells. Users are too:
    each user-period (user-day, or user-hour) counts once, in the cell of the user's first
    event of that period, so summing cells never counts a user twice (a per-cell distinct
    count would, for a user who spans categories or devices in a period).

    Incremental by difference, as mart_daily_metrics: a run adds the new batches' events to
    their cells, counts new user-periods in the cell of their first event, and moves a
    user-period whose first event changed (a late event earlier in the period) from its old
    cell to its new one. Only those user-periods' events are read (through the
    (user_id, event_date) index: an hour lies inside one day); for every other touched
    user-period one index probe finds an earlier stored event. A full build runs the same
    query with every event as new and nothing stored. -#}
{% macro segment_metrics(grain) -%}
{%- set cursor = ingestion_cursor() %}
{%- set measures = event_measures() %}
{%- set period = grain_column(grain) %}
{%- set users = 'user_days' if grain == 'day' else 'user_hours' %}

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
        {{ event_period(grain) }} as {{ period }},
        country,
        device_type,
        product_category,
        {{- aggregate_event_measures(measures) }}
        max(batch_id) as last_batch_id

    from new_events
    group by {{ event_period(grain) }}, country, device_type, product_category

),

new_user_period_firsts as (

    select distinct on (user_id, event_date, {{ event_period(grain) }})
        user_id,
        event_date,
        {{ event_period(grain) }} as {{ period }},
        event_timestamp,
        event_id,
        country,
        device_type,
        product_category

    from new_events
    order by user_id, event_date, {{ event_period(grain) }}, event_timestamp, event_id

),

{% if is_incremental() -%}
moved_user_periods as (

    -- A user-period changes cell only when its first event is new: a new user-period, or a
    -- late event earlier than its old first. For the others an earlier stored event exists,
    -- and the probe stops at the first one it finds: a busy user-period (hundreds of
    -- events) costs an index probe, not a read of all its events.
    select *
    from new_user_period_firsts
    where not exists (
        select 1
        from events as earlier
        where earlier.user_id = new_user_period_firsts.user_id
            and earlier.event_date = new_user_period_firsts.event_date
            {%- if grain != 'day' %}
            -- A range on event_timestamp, not date_trunc(...) = hour: the planner keeps the
            -- per-user-day index probe instead of hashing all of Silver. The upper end is the
            -- new first event itself (below).
            and earlier.event_timestamp >= new_user_period_firsts.{{ period }}
            {%- endif %}
            and earlier.batch_id <= {{ cursor }}
            and (earlier.event_timestamp, earlier.event_id)
                < (new_user_period_firsts.event_timestamp, new_user_period_firsts.event_id)
    )

),

user_period_states as (

    -- The old first event's cell (none: a new user-period), read only for the moved ones.
    select
        moved_user_periods.{{ period }},
        old_first.country as old_country,
        old_first.device_type as old_device_type,
        old_first.product_category as old_product_category,
        moved_user_periods.country as new_country,
        moved_user_periods.device_type as new_device_type,
        moved_user_periods.product_category as new_product_category

    from moved_user_periods
    left join lateral (
        select earlier.country, earlier.device_type, earlier.product_category
        from events as earlier
        where earlier.user_id = moved_user_periods.user_id
            and earlier.event_date = moved_user_periods.event_date
            {%- if grain != 'day' %}
            and earlier.event_timestamp >= moved_user_periods.{{ period }}
            and earlier.event_timestamp < moved_user_periods.{{ period }} + interval '1 {{ grain }}'
            {%- endif %}
            and earlier.batch_id <= {{ cursor }}
        order by earlier.event_timestamp, earlier.event_id
        limit 1
    ) as old_first on true

),

user_contributions as (

    select
        {{ period }},
        old_country as country,
        old_device_type as device_type,
        old_product_category as product_category,
        -1 as weight
    from user_period_states
    where old_country is not null

    union all

    select
        {{ period }},
        new_country,
        new_device_type,
        new_product_category,
        1
    from user_period_states

),

user_changes as (

    select
        {{ period }},
        country,
        device_type,
        product_category,
        sum(weight) as {{ users }}

    from user_contributions
    group by {{ period }}, country, device_type, product_category

),
{%- else -%}
user_changes as (

    -- Nothing stored: every user-period is new and counts once, in its first event's cell.
    select
        {{ period }},
        country,
        device_type,
        product_category,
        count(*) as {{ users }}

    from new_user_period_firsts
    group by {{ period }}, country, device_type, product_category

),
{%- endif %}

cell_totals as (

    -- A user-period's first event lies in its cell, so the cells changed are cells with events.
    {{ stored_plus_changes(
        keys=[period, 'country', 'device_type', 'product_category'],
        changes={'event_changes': measures, 'user_changes': [users]},
        batch_changes='event_changes',
    ) }}

),

final as (

    select
        {{ period }},
        country,
        device_type,
        product_category,
        {{- cast_event_measures(measures) }}
        {{ users }}::bigint as {{ users }},
        last_batch_id

    from cell_totals

)

select * from final
{%- endmacro %}

{#- mart_daily_metrics' and mart_conversion_funnel's session measures per period, country and
    device, for the Overview's filters. A session's period, country and device are those of
    its first event (int_user_sessions); a session spans products, so it has no product
    category. The cells are the (period, country, device) cells with events, as the daily
    marts' days are the days with events, so a cell that loses its last session start to a
    late event keeps a row with zero sessions in both incremental and full-refresh builds.
    Incremental by difference through session_start_day_changes(by_segment=true); a full
    build adds all sessions to nothing. -#}
{% macro segment_sessions(grain) -%}
{%- set cursor = ingestion_cursor() %}
{%- set period = grain_column(grain) %}

with new_events as (

    {{ after_cursor(ref('stg_clickstream_events'), cursor) }}

),

new_event_cells as (

    select
        {{ event_period(grain) }} as {{ period }},
        country,
        device_type,
        max(batch_id) as last_batch_id

    from new_events
    group by {{ event_period(grain) }}, country, device_type

),

session_changes as (

    {{ session_start_day_changes(
        ref('stg_clickstream_events'), ref('int_user_sessions'), cursor,
        by_segment=true, grain=grain,
    ) }}

),

cell_totals as (

    {{ stored_plus_changes(
        keys=[period, 'country', 'device_type'],
        changes={
            'new_event_cells': [],
            'session_changes': session_measure_columns(),
        },
        batch_changes='new_event_cells',
    ) }}

),

final as (

    select
        {{ period }},
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
{%- endmacro %}
