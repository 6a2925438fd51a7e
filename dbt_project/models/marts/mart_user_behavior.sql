{{
    config(
        materialized='table',
        indexes=[
            {'columns': ['user_id'], 'unique': True},
            {'columns': ['rfm_tier']},
        ],
    )
}}

{#- RFM is global by nature: one user's new session can move every other user's quintile,
    so this model is a table rebuilt on each run. It reads int_user_activity, one row per
    user kept incrementally, never the sessions or the events: a run costs the number of
    users, not the history. -#}

with users as (

    select * from {{ ref('int_user_activity') }}

),

as_of as (

    -- Recency is measured from the newest data, not the wall clock, so a rebuild of the
    -- same data gives the same answer and scores do not drift while ingestion pauses.
    -- The newest session's UTC day: int_user_sessions' session_date of the latest start.
    select (max(last_session_at) at time zone 'UTC')::date as as_of_date
    from users

),

scored as (

    select
        users.*,
        as_of.as_of_date,
        as_of.as_of_date - (users.last_session_at at time zone 'UTC')::date as recency_days,
        as_of.as_of_date - (users.first_session_at at time zone 'UTC')::date as tenure_days,
        {#- Quintile of the user's rank among all users (5 best). Equal values share the
            lower score: a user never scores above an identical one. Recency ranks the
            exact last session time, which orders like recency_days with fewer ties. -#}
        {{ quintile_score('users.last_session_at') }} as r_score,
        {{ quintile_score('users.frequency') }} as f_score,
        {{ quintile_score('users.monetary') }} as m_score

    from users
    cross join as_of

),

final as (

    select
        user_id,
        first_session_at,
        last_session_at,
        recency_days,
        frequency,
        monetary,
        purchase_sessions,
        abandoned_cart_sessions,
        r_score,
        f_score,
        m_score,
        r_score + f_score + m_score as rfm_score,
        {{ rfm_tier('r_score + f_score + m_score') }} as rfm_tier,
        case
            when recency_days > 30 then 'Churned'
            when recency_days > 14 then 'Dormant'
            when tenure_days < 7 then 'New'
            when purchase_sessions >= 2 then 'Repeat Buyer'
            when purchase_sessions = 1 then 'Buyer'
            else 'Browser'
        end as lifecycle_stage,
        as_of_date

    from scored

)

select * from final
