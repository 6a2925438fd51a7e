{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
        indexes=[
            {'columns': ['user_id'], 'unique': True},
            {'columns': ['frequency']},
            {'columns': ['last_session_at']},
            {'columns': ['monetary']},
            {'columns': ['last_batch_id']},
        ],
        post_hook=[
            "delete from {{ this }} where frequency = 0",
        ],
    )
}}

{#- One row per user: what the RFM scores and the hot leads need from their sessions, so the
    user marts read users, never sessions or events.

    An incremental run changes the users that own, or owned, a session new batches touched
    (a late event can hand a session to another user: a session's user is its first
    event's). Counts and sums are the stored ones plus their changes, each touched session
    counting -1 for its state before (its events up to the cursor) and +1 for its state now,
    read from the touched sessions' events only; the latest and earliest sessions are read
    from int_user_sessions through its (user_id, ...) indexes. So a run costs the sessions it
    touched, not the users' whole history. A user left with no session gets frequency 0 and
    is deleted by the post-hook. -#}
{%- set cursor = ingestion_cursor() %}

-- depends_on: {{ ref('stg_clickstream_events') }} (read by incremental runs only)

-- Not materialized: referenced more than once, PostgreSQL would otherwise copy the whole
-- relation into a CTE and lose its indexes, making the incremental run cost the history.
with sessions as not materialized (

    select * from {{ ref('int_user_sessions') }}

),

{% if is_incremental() -%}
events as not materialized (

    select * from {{ ref('stg_clickstream_events') }}

),

touched_events as (

    select
        events.session_id,
        events.event_id,
        events.event_timestamp,
        events.user_id,
        events.batch_id,
        events.line_revenue,
        events.is_add_to_cart,
        events.is_purchase

    from events
    where events.session_id in (
        select distinct new_events.session_id
        from events as new_events
        where new_events.batch_id > {{ cursor }}
    )

),

-- int_user_sessions' rules (user of the first event, revenue, purchased, abandoned cart) on
-- each touched session's events before the cursor and on all of them.
session_states as (

    select
        session_id,
        (array_agg(user_id order by event_timestamp, event_id)
            filter (where batch_id <= {{ cursor }}))[1] as old_user_id,
        coalesce(sum(line_revenue) filter (where batch_id <= {{ cursor }}), 0) as old_revenue,
        coalesce(bool_or(is_purchase) filter (where batch_id <= {{ cursor }}), false) as old_purchased,
        coalesce(bool_or(is_add_to_cart) filter (where batch_id <= {{ cursor }}), false) as old_carted,
        (array_agg(user_id order by event_timestamp, event_id))[1] as new_user_id,
        sum(line_revenue) as new_revenue,
        bool_or(is_purchase) as new_purchased,
        bool_or(is_add_to_cart) as new_carted

    from touched_events
    group by session_id

),

session_changes as (

    select
        old_user_id as user_id,
        -1 as sessions,
        -old_revenue as revenue,
        -(old_purchased::integer) as purchase_sessions,
        -((old_carted and not old_purchased)::integer) as abandoned_cart_sessions

    from session_states
    where old_user_id is not null

    union all

    select
        new_user_id,
        1,
        new_revenue,
        new_purchased::integer,
        (new_carted and not new_purchased)::integer

    from session_states

),

user_changes as (

    select
        user_id,
        sum(sessions) as sessions,
        sum(revenue) as revenue,
        sum(purchase_sessions) as purchase_sessions,
        sum(abandoned_cart_sessions) as abandoned_cart_sessions

    from session_changes
    group by user_id

),

users as (

    select
        user_changes.user_id,
        firsts.session_start as first_session_at,
        lasts.session_start as last_session_at,
        coalesce(stored.frequency, 0) + user_changes.sessions as frequency,
        (coalesce(stored.monetary, 0) + user_changes.revenue)::numeric(18, 2) as monetary,
        coalesce(stored.purchase_sessions, 0) + user_changes.purchase_sessions as purchase_sessions,
        coalesce(stored.abandoned_cart_sessions, 0) + user_changes.abandoned_cart_sessions
            as abandoned_cart_sessions,
        last_purchases.session_start as last_purchase_session_at,
        (
            select max(batches.last_batch_id) from sessions as batches
            where batches.user_id = user_changes.user_id
        ) as last_batch_id

    from user_changes
    left join {{ this }} as stored
        on user_changes.user_id = stored.user_id
    left join lateral (
        select session_start from sessions
        where sessions.user_id = user_changes.user_id
        order by session_start limit 1
    ) as firsts on true
    left join lateral (
        select session_start from sessions
        where sessions.user_id = user_changes.user_id
        order by session_start desc limit 1
    ) as lasts on true
    left join lateral (
        select session_start from sessions
        where sessions.user_id = user_changes.user_id and sessions.purchased
        order by session_start desc limit 1
    ) as last_purchases on true

),

latest_cart_sessions as (

    select
        users.user_id,
        carts.session_id as cart_session_id,
        carts.session_start as cart_session_start,
        carts.abandoned_cart as cart_abandoned,
        carts.cart_value,
        carts.page_views as cart_page_views

    from users
    cross join lateral (
        select * from sessions
        where sessions.user_id = users.user_id and sessions.reached_cart
        order by session_start desc, session_id desc limit 1
    ) as carts

),

user_ids as (

    select user_id from users

),
{%- else -%}
users as (

    select
        user_id,
        min(session_start) as first_session_at,
        max(session_start) as last_session_at,
        count(*) as frequency,
        sum(revenue)::numeric(18, 2) as monetary,
        count(*) filter (where purchased) as purchase_sessions,
        count(*) filter (where abandoned_cart) as abandoned_cart_sessions,
        max(session_start) filter (where purchased) as last_purchase_session_at,
        max(last_batch_id) as last_batch_id

    from sessions
    group by user_id

),

latest_cart_sessions as (

    select distinct on (user_id)
        user_id,
        session_id as cart_session_id,
        session_start as cart_session_start,
        abandoned_cart as cart_abandoned,
        cart_value,
        page_views as cart_page_views

    from sessions
    where reached_cart
    order by user_id, session_start desc, session_id desc

),

user_ids as (

    select user_id from users

),
{%- endif %}

final as (

    select
        user_ids.user_id,
        users.first_session_at,
        users.last_session_at,
        coalesce(users.frequency, 0) as frequency,
        users.monetary,
        users.purchase_sessions,
        users.abandoned_cart_sessions,
        users.last_purchase_session_at,
        latest_cart_sessions.cart_session_id,
        latest_cart_sessions.cart_session_start,
        latest_cart_sessions.cart_abandoned,
        latest_cart_sessions.cart_value,
        latest_cart_sessions.cart_page_views,
        users.last_batch_id

    from user_ids
    left join users
        on user_ids.user_id = users.user_id
    left join latest_cart_sessions
        on user_ids.user_id = latest_cart_sessions.user_id

)

select * from final
