{{
    config(
        materialized='table',
        indexes=[{'columns': ['user_id'], 'unique': True}],
    )
}}

{#- Users to retarget: their latest session with a cart ended without a purchase, and no
    session of theirs with a purchase started after it. A table, like mart_user_behavior,
    because the cart-value percentile and the ranking are relative to all leads; it reads
    users (int_user_activity, mart_user_behavior), never sessions. The
    propensity formula is documented in _marts.yml. -#}

with activity as (

    select * from {{ ref('int_user_activity') }}

),

users as (

    select * from {{ ref('mart_user_behavior') }}

),

latest_cart_sessions as (

    -- Each user's latest session with a cart (int_user_activity keeps it per user).
    select
        user_id,
        cart_session_id as session_id,
        cart_session_start as session_start,
        cart_abandoned as abandoned_cart,
        cart_value,
        cart_page_views as page_views

    from activity
    where cart_session_id is not null

),

last_purchases as (

    select
        user_id,
        last_purchase_session_at

    from activity
    where last_purchase_session_at is not null

),

leads as (

    select
        latest_cart_sessions.user_id,
        latest_cart_sessions.session_id as abandoned_session_id,
        latest_cart_sessions.session_start as abandoned_at,
        users.as_of_date
            - (latest_cart_sessions.session_start at time zone 'UTC')::date as days_since_abandoned,
        latest_cart_sessions.cart_value as abandoned_cart_value,
        latest_cart_sessions.page_views as abandoned_session_page_views,
        users.purchase_sessions,
        users.monetary,
        users.rfm_tier,
        users.as_of_date

    from latest_cart_sessions
    inner join users
        on latest_cart_sessions.user_id = users.user_id
    left join last_purchases
        on latest_cart_sessions.user_id = last_purchases.user_id
    where latest_cart_sessions.abandoned_cart
        and (
            last_purchases.last_purchase_session_at is null
            or last_purchases.last_purchase_session_at <= latest_cart_sessions.session_start
        )

),

components as (

    select
        leads.*,
        -- All in double precision so the documented formula gives the same bits anywhere.
        1.0::float8 / (1 + days_since_abandoned) as recency_component,
        cume_dist() over (order by abandoned_cart_value) as cart_value_component,
        least(abandoned_session_page_views, 10)::float8 / 10 as engagement_component,
        least(purchase_sessions, 3)::float8 / 3 as loyalty_component

    from leads

),

scored as (

    select
        components.*,
        0.40::float8 * recency_component
            + 0.30::float8 * cart_value_component
            + 0.15::float8 * engagement_component
            + 0.15::float8 * loyalty_component as propensity_score

    from components

),

final as (

    select
        row_number() over (
            order by propensity_score desc, abandoned_cart_value desc, user_id
        ) as lead_rank,
        user_id,
        propensity_score,
        abandoned_session_id,
        abandoned_at,
        days_since_abandoned,
        abandoned_cart_value,
        abandoned_session_page_views,
        purchase_sessions,
        monetary,
        rfm_tier,
        recency_component,
        cart_value_component,
        engagement_component,
        loyalty_component,
        as_of_date

    from scored

)

select * from final
