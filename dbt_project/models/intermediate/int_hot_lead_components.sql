{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
        indexes=[
            {'columns': ['user_id'], 'unique': True},
            {'columns': ['abandoned_session_id']},
            {'columns': ['r_score', 'last_session_at']},
            {'columns': ['f_score', 'frequency']},
            {'columns': ['m_score', 'monetary']},
        ],
        post_hook=[
            "delete from {{ this }} where abandoned_session_id is null",
        ],
    )
}}

{#- The hot leads, one row per lead, with every part of mart_hot_leads that is the user's
    own: the abandoned session, the user's purchases, revenue and RFM tier, and the
    engagement and loyalty components. mart_hot_leads adds only what is relative to all
    leads (the cart-value percentile, the rank) or to the as-of day (days since abandoned).

    An incremental run re-decides the users a run touched (their sessions changed: a lead
    may buy, a user may abandon a cart) and the leads whose stored RFM score a moved quintile
    boundary no longer matches (their tier changed in mart_user_behavior; found through the
    (score, measure) indexes, as the mart finds them), reading those users alone from
    int_user_activity and mart_user_behavior by user_id. A re-decided user who is not a lead
    (any more) is written with no abandoned session and deleted by the post-hook.

    The cursor is the newest batch among the stored leads: batches after it that left no
    lead (every user they touched bought or never carted) are read again by the next run,
    which changes nothing but its cost. -#}
{%- set cursor = ingestion_cursor() %}

-- depends_on: {{ ref('stg_clickstream_events') }} (read by incremental runs only)
-- depends_on: {{ ref('int_rfm_boundaries') }} (read by incremental runs only)

-- Not materialized: read by index, a copy would lose the indexes.
with activity as not materialized (

    select * from {{ ref('int_user_activity') }}

),

users as not materialized (

    select * from {{ ref('mart_user_behavior') }}

),

{% if is_incremental() -%}
boundaries as (

    select * from {{ ref('int_rfm_boundaries') }}

),

user_ids as (

    {{ touched_user_ids(ref('stg_clickstream_events'), cursor) }}
    {{ rescored_user_ids(this, 'boundaries') }}

),
{%- else -%}
user_ids as (

    select user_id from activity where cart_abandoned

),
{%- endif %}

decided as (

    select
        user_ids.user_id,
        -- A lead: the latest session with a cart was abandoned, no purchase started after it.
        coalesce(
            activity.cart_abandoned
            and users.user_id is not null
            and (
                activity.last_purchase_session_at is null
                or activity.last_purchase_session_at <= activity.cart_session_start
            ),
            false
        ) as is_lead,
        activity.cart_session_id,
        activity.cart_session_start,
        activity.cart_value,
        activity.cart_page_views,
        users.purchase_sessions,
        users.monetary,
        users.last_session_at,
        users.frequency,
        users.r_score,
        users.f_score,
        users.m_score,
        users.rfm_tier,
        users.last_batch_id

    from user_ids
    left join activity
        on user_ids.user_id = activity.user_id
    left join users
        on user_ids.user_id = users.user_id

),

final as (

    select
        user_id,
        case when is_lead then cart_session_id end as abandoned_session_id,
        cart_session_start as abandoned_at,
        cart_value as abandoned_cart_value,
        cart_page_views as abandoned_session_page_views,
        purchase_sessions,
        monetary,
        rfm_tier,
        -- All in double precision so the documented formula gives the same bits anywhere.
        least(cart_page_views, 10)::float8 / 10 as engagement_component,
        least(purchase_sessions, 3)::float8 / 3 as loyalty_component,
        -- What finds a lead a moved boundary rescores (see above).
        last_session_at,
        frequency,
        r_score,
        f_score,
        m_score,
        last_batch_id

    from decided
    {%- if not is_incremental() %}
    where is_lead
    {%- endif %}

)

select * from final
