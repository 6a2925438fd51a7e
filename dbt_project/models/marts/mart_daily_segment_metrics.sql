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
    for every other touched user-day one index probe finds an earlier stored event. -#}
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
        country,
        device_type,
        product_category,
        count(*) as events,
        count(*) filter (where is_page_view) as page_views,
        count(*) filter (where is_add_to_cart) as add_to_carts,
        count(*) filter (where is_purchase) as purchases,
        coalesce(sum(quantity) filter (where is_purchase), 0) as units_sold,
        sum(line_revenue) as revenue,
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

changed_cells as (

    select metric_date, country, device_type, product_category from event_changes
    union
    select metric_date, country, device_type, product_category from user_changes

),

cell_totals as (

    select
        changed_cells.metric_date,
        changed_cells.country,
        changed_cells.device_type,
        changed_cells.product_category,
        coalesce(previous.events, 0) + coalesce(event_changes.events, 0) as events,
        coalesce(previous.page_views, 0) + coalesce(event_changes.page_views, 0) as page_views,
        coalesce(previous.add_to_carts, 0)
            + coalesce(event_changes.add_to_carts, 0) as add_to_carts,
        coalesce(previous.purchases, 0) + coalesce(event_changes.purchases, 0) as purchases,
        coalesce(previous.units_sold, 0) + coalesce(event_changes.units_sold, 0) as units_sold,
        coalesce(previous.revenue, 0) + coalesce(event_changes.revenue, 0) as revenue,
        coalesce(previous.user_days, 0) + coalesce(user_changes.user_days, 0) as user_days,
        -- greatest() skips nulls: a cell changed only by a user-day move keeps its value.
        greatest(previous.last_batch_id, event_changes.last_batch_id) as last_batch_id

    from changed_cells
    left join {{ this }} as previous
        on changed_cells.metric_date = previous.metric_date
            and changed_cells.country = previous.country
            and changed_cells.device_type = previous.device_type
            and changed_cells.product_category = previous.product_category
    left join event_changes
        on changed_cells.metric_date = event_changes.metric_date
            and changed_cells.country = event_changes.country
            and changed_cells.device_type = event_changes.device_type
            and changed_cells.product_category = event_changes.product_category
    left join user_changes
        on changed_cells.metric_date = user_changes.metric_date
            and changed_cells.country = user_changes.country
            and changed_cells.device_type = user_changes.device_type
            and changed_cells.product_category = user_changes.product_category

),
{%- else -%}
event_totals as (

    select
        event_date as metric_date,
        country,
        device_type,
        product_category,
        count(*) as events,
        count(*) filter (where is_page_view) as page_views,
        count(*) filter (where is_add_to_cart) as add_to_carts,
        count(*) filter (where is_purchase) as purchases,
        coalesce(sum(quantity) filter (where is_purchase), 0) as units_sold,
        sum(line_revenue) as revenue,
        max(batch_id) as last_batch_id

    from events
    group by event_date, country, device_type, product_category

),

user_day_first_events as (

    select distinct on (user_id, event_date)
        event_date as metric_date,
        country,
        device_type,
        product_category

    from events
    order by user_id, event_date, event_timestamp, event_id

),

user_totals as (

    select
        metric_date,
        country,
        device_type,
        product_category,
        count(*) as user_days

    from user_day_first_events
    group by metric_date, country, device_type, product_category

),

cell_totals as (

    -- A user-day's first event lies in its cell, so the event cells are all cells.
    select
        event_totals.metric_date,
        event_totals.country,
        event_totals.device_type,
        event_totals.product_category,
        event_totals.events,
        event_totals.page_views,
        event_totals.add_to_carts,
        event_totals.purchases,
        event_totals.units_sold,
        event_totals.revenue,
        coalesce(user_totals.user_days, 0) as user_days,
        event_totals.last_batch_id

    from event_totals
    left join user_totals
        on event_totals.metric_date = user_totals.metric_date
            and event_totals.country = user_totals.country
            and event_totals.device_type = user_totals.device_type
            and event_totals.product_category = user_totals.product_category

),
{%- endif %}

final as (

    select
        metric_date,
        country,
        device_type,
        product_category,
        events::bigint as events,
        page_views::bigint as page_views,
        add_to_carts::bigint as add_to_carts,
        purchases::bigint as purchases,
        units_sold::bigint as units_sold,
        revenue::numeric(18, 2) as revenue,
        user_days::bigint as user_days,
        last_batch_id

    from cell_totals

)

select * from final
