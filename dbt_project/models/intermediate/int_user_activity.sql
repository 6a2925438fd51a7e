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
    user marts read users, never sessions or events. An incremental run rebuilds the users
    with an event in a session that new batches touched, from all of their sessions. That is
    every user in such a session, not only its user now: a late event can hand a session to
    another user (a session's user is its first event's), and the user it left must lose it.
    A user left with no session is written with frequency 0 and deleted by the post-hook. -#}
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

user_ids as (

    {{ touched_user_ids('events', cursor) }}

),

user_sessions as (

    select sessions.*
    from sessions
    where sessions.user_id in (select user_ids.user_id from user_ids)

),
{%- else -%}
user_sessions as (

    select * from sessions

),

user_ids as (

    select distinct user_sessions.user_id
    from user_sessions

),
{%- endif %}

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

    from user_sessions
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

    from user_sessions
    where reached_cart
    order by user_id, session_start desc, session_id desc

),

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
