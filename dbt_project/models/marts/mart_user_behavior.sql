{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
        indexes=[
            {'columns': ['user_id'], 'unique': True},
            {'columns': ['rfm_tier']},
            {'columns': ['last_batch_id']},
            {'columns': ['r_score', 'last_session_at']},
            {'columns': ['f_score', 'frequency']},
            {'columns': ['m_score', 'monetary']},
        ],
        post_hook=[
            "delete from {{ this }} where frequency = 0",
        ],
    )
}}

{#- RFM is global by nature: one user's new session can move other users' quintiles. A full
    build ranks all users (quintile_score, the definition). An incremental run rewrites the
    users the new batches changed and the users whose stored score a moved quintile boundary
    no longer matches (found through the (score, measure) indexes: those between the old and
    the new boundary), scoring each from int_rfm_boundaries (boundary_score, equal to the
    rank's quintile). Recency counts days from the data's as-of day: on the run where that
    day moves, every user's recency does, and that run rewrites every user. A user left with
    no session is written with frequency 0 and deleted by the post-hook. -#}
{%- set cursor = ingestion_cursor() %}
{%- set every_user = not is_incremental() %}
{%- if execute and is_incremental() %}
    {%- set days = run_query(
        'select (select as_of_date from ' ~ this ~ ' limit 1)::text,'
        ~ " (select (max(last_session_at) at time zone 'UTC')::date from " ~ ref('int_user_activity') ~ ')::text') %}
    {%- set every_user = days.columns[0].values()[0] != days.columns[1].values()[0] %}
{%- endif %}

-- depends_on: {{ ref('stg_clickstream_events') }} (read by incremental runs only)
-- depends_on: {{ ref('int_rfm_boundaries') }} (read by incremental runs only)

-- Not materialized: read by index, a copy would lose the indexes.
with users as not materialized (

    select * from {{ ref('int_user_activity') }}

),

as_of as (

    -- Recency is measured from the newest data, not the wall clock, so a rebuild of the
    -- same data gives the same answer and scores do not drift while ingestion pauses.
    -- The newest session's UTC day: int_user_sessions' session_date of the latest start.
    select (max(last_session_at) at time zone 'UTC')::date as as_of_date
    from users

),

{% if is_incremental() -%}
boundaries as (

    select * from {{ ref('int_rfm_boundaries') }}

),

user_ids as (

    {{ touched_user_ids(ref('stg_clickstream_events'), cursor) }}
    {%- if every_user %}

    union

    select user_id from users
    {%- else %}
    {{ rescored_user_ids(this, 'boundaries') }}
    {%- endif %}

),
{%- endif %}

scored as (

    select
        {{ 'user_ids' if is_incremental() else 'users' }}.user_id,
        {#- A touched user may have no session left (no row in users): frequency 0, deleted by
            the post-hook. -#}
        {%- for column in [
            'users.first_session_at',
            'users.last_session_at',
            'coalesce(users.frequency, 0) as frequency',
            'users.monetary',
            'users.purchase_sessions',
            'users.abandoned_cart_sessions',
            'users.last_batch_id',
            'as_of.as_of_date',
            "as_of.as_of_date - (users.last_session_at at time zone 'UTC')::date as recency_days",
            "as_of.as_of_date - (users.first_session_at at time zone 'UTC')::date as tenure_days",
        ] %}
        {{ column }},
        {%- endfor %}
        {%- if is_incremental() %}
        {{ boundary_score('users.last_session_at', 'recency', 'boundaries') }} as r_score,
        {{ boundary_score('users.frequency', 'frequency', 'boundaries') }} as f_score,
        {{ boundary_score('users.monetary', 'monetary', 'boundaries') }} as m_score

    from user_ids
    left join users
        on user_ids.user_id = users.user_id
    {%- else %}
        {#- Quintile of the user's rank among all users (5 best). Equal values share the
            lower score: a user never scores above an identical one. Recency ranks the
            exact last session time, which orders like recency_days with fewer ties. -#}
        {{ quintile_score('users.last_session_at') }} as r_score,
        {{ quintile_score('users.frequency') }} as f_score,
        {{ quintile_score('users.monetary') }} as m_score

    from users
    {%- endif %}
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
        as_of_date,
        last_batch_id

    from scored

)

select * from final
