{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='session_id',
        indexes=[
            {'columns': ['session_id'], 'unique': True},
            {'columns': ['last_batch_id']},
            {'columns': ['session_date']},
            {'columns': ['user_id', 'session_start']},
            {'columns': ['user_id', 'last_batch_id']},
        ],
    )
}}

{#- An incremental run rebuilds only the sessions that new batches touched, from all of
    their events (a late event can change a session's start, device or totals), and
    replaces those rows by session_id. -#}
{%- set cursor = ingestion_cursor() %}

-- Not materialized: referenced twice, PostgreSQL would otherwise copy all of Silver into a
-- CTE and lose its indexes, making the incremental run cost the history.
with events as not materialized (

    select * from {{ ref('stg_clickstream_events') }}

),

{% if is_incremental() -%}
touched_sessions as (

    select distinct session_id
    from events
    where batch_id > {{ cursor }}

),

session_events as (

    select events.*
    from events
    where events.session_id in (select touched_sessions.session_id from touched_sessions)

),
{%- else -%}
session_events as (

    select * from events

),
{%- endif %}

sessions as (

    select
        session_id,
        -- A session's user, device and country are those of its first event.
        (array_agg(user_id order by event_timestamp, event_id))[1] as user_id,
        min(event_timestamp) as session_start,
        max(event_timestamp) as session_end,
        count(*) as events,
        count(*) filter (where is_page_view) as page_views,
        count(*) filter (where is_add_to_cart) as add_to_carts,
        count(*) filter (where is_purchase) as purchases,
        coalesce(sum(quantity) filter (where is_purchase), 0) as units_purchased,
        sum(line_revenue)::numeric(18, 2) as revenue,
        coalesce(
            sum(product_price * quantity) filter (where is_add_to_cart), 0
        )::numeric(18, 2) as cart_value,
        (array_agg(device_type order by event_timestamp, event_id))[1] as device_type,
        (array_agg(country order by event_timestamp, event_id))[1] as country,
        max(batch_id) as last_batch_id

    from session_events
    group by session_id

),

final as (

    select
        session_id,
        user_id,
        session_start,
        session_end,
        (session_start at time zone 'UTC')::date as session_date,
        extract(epoch from session_end - session_start)::numeric(12, 3) as duration_seconds,
        events,
        page_views,
        add_to_carts,
        purchases,
        units_purchased,
        revenue,
        cart_value,
        add_to_carts > 0 as reached_cart,
        purchases > 0 as purchased,
        add_to_carts > 0 and purchases = 0 as abandoned_cart,
        device_type,
        country,
        last_batch_id

    from sessions

)

select * from final
