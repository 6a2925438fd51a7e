{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['metric_date', 'country', 'device_type', 'product_category'],
        indexes=[
            {'columns': ['metric_date', 'country', 'device_type', 'product_category'],
             'unique': True},
        ],
    )
}}

{#- mart_daily_metrics' event measures split by the event's own country, device and product
    category, so the Overview's filters read a few hundred rows of Gold instead of Silver.
    Every column is additive: a filtered period is a sum over cells. Users are too: each
    user-day counts once, in the cell of the user's first event that day, so summing cells
    never counts a user twice (a per-cell distinct count would, for a user who spans
    categories or devices in a day).

    Incremental by difference, as mart_daily_metrics: a run adds the new batches' events to
    their cells, counts new user-days in the cell of their first event, and moves a user-day
    whose first event changed (a late event earlier in the day) from its old cell to its new
    one. Only those user-days' events are read (through the (user_id, event_date) index);
    for every other touched user-day one index probe finds an earlier stored event. A full
    build runs the same query with every event as new and nothing stored. -#}
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
        country,
        device_type,
        product_category,
        {{- aggregate_event_measures(measures) }}
        max(batch_id) as last_batch_id

    from new_events
    group by event_date, country, device_type, product_category

),

new_user_day_firsts as (

    select distinct on (user_id, event_date)
        user_id,
        event_date,
        event_timestamp,
        event_id,
        country,
        device_type,
        product_category

    from new_events
    order by user_id, event_date, event_timestamp, event_id

),

{% if is_incremental() -%}
moved_user_days as (

    -- A user-day changes cell only when its first event is new: a new user-day, or a late
    -- event earlier than its old first. For the others an earlier stored event exists, and
    -- the probe stops at the first one it finds: a busy user-day (hundreds of events) costs
    -- an index probe, not a read of all its events.
    select *
    from new_user_day_firsts
    where not exists (
        select 1
        from events as earlier
        where earlier.user_id = new_user_day_firsts.user_id
            and earlier.event_date = new_user_day_firsts.event_date
            and earlier.batch_id <= {{ cursor }}
            and (earlier.event_timestamp, earlier.event_id)
                < (new_user_day_firsts.event_timestamp, new_user_day_firsts.event_id)
    )

),

user_day_states as (

    -- The old first event's cell (none: a new user-day), read only for the moved user-days.
    select
        moved_user_days.event_date as metric_date,
        old_first.country as old_country,
        old_first.device_type as old_device_type,
        old_first.product_category as old_product_category,
        moved_user_days.country as new_country,
        moved_user_days.device_type as new_device_type,
        moved_user_days.product_category as new_product_category

    from moved_user_days
    left join lateral (
        select earlier.country, earlier.device_type, earlier.product_category
        from events as earlier
        where earlier.user_id = moved_user_days.user_id
            and earlier.event_date = moved_user_days.event_date
            and earlier.batch_id <= {{ cursor }}
        order by earlier.event_timestamp, earlier.event_id
        limit 1
    ) as old_first on true

),

user_contributions as (

    select
        metric_date,
        old_country as country,
        old_device_type as device_type,
        old_product_category as product_category,
        -1 as weight
    from user_day_states
    where old_country is not null

    union all

    select
        metric_date,
        new_country,
        new_device_type,
        new_product_category,
        1
    from user_day_states

),

user_changes as (

    select
        metric_date,
        country,
        device_type,
        product_category,
        sum(weight) as user_days

    from user_contributions
    group by metric_date, country, device_type, product_category

),
{%- else -%}
user_changes as (

    -- Nothing stored: every user-day is new and counts once, in its first event's cell.
    select
        event_date as metric_date,
        country,
        device_type,
        product_category,
        count(*) as user_days

    from new_user_day_firsts
    group by event_date, country, device_type, product_category

),
{%- endif %}

cell_totals as (

    -- A user-day's first event lies in its cell, so the cells changed are cells with events.
    {{ stored_plus_changes(
        keys=['metric_date', 'country', 'device_type', 'product_category'],
        changes={'event_changes': measures, 'user_changes': ['user_days']},
        batch_changes='event_changes',
    ) }}

),

final as (

    select
        metric_date,
        country,
        device_type,
        product_category,
        {{- cast_event_measures(measures) }}
        user_days::bigint as user_days,
        last_batch_id

    from cell_totals

)

select * from final
