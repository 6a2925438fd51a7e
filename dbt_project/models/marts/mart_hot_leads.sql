{{
    config(
        materialized='table',
        indexes=[{'columns': ['user_id'], 'unique': True}],
    )
}}

{#- Users to retarget: their latest session with a cart ended without a purchase, and no
    session of theirs with a purchase started after it. int_hot_lead_components keeps the
    leads and each one's own components, updated for the users a run touched; this table
    adds what is relative to all leads (the cart-value percentile and the rank) or to the
    as-of day, which moves daily (the days since the cart was abandoned), reading that
    narrow table alone. A table, not a view, so the dashboard reads it by index. The
    propensity formula is documented in _marts.yml. -#}

with leads as (

    select * from {{ ref('int_hot_lead_components') }}

),

as_of as (

    -- Every user of mart_user_behavior holds the same as-of day.
    select as_of_date from {{ ref('mart_user_behavior') }} limit 1

),

dated as (

    select
        leads.*,
        as_of.as_of_date,
        as_of.as_of_date - (leads.abandoned_at at time zone 'UTC')::date as days_since_abandoned

    from leads
    cross join as_of

),

components as (

    select
        dated.*,
        -- All in double precision so the documented formula gives the same bits anywhere.
        1.0::float8 / (1 + days_since_abandoned) as recency_component,
        cume_dist() over (order by abandoned_cart_value) as cart_value_component

    from dated

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
