{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='score',
        indexes=[{'columns': ['score'], 'unique': True}],
        post_hook=[
            "delete from {{ this }} where users = 0",
        ],
    )
}}

{#- The RFM quintile boundaries, four rows (scores 2-5): per measure, the value a user must
    exceed to score k or more, and how many users lie below it and at or below it. They let
    mart_user_behavior score a user from four numbers instead of ranking all users.

    An incremental run brings the counts at each stored boundary up to date from the users the
    run changed alone (their value before, still in gold.mart_user_behavior, against their value
    now, in int_user_activity), then moves each boundary along the measure's index only as far
    as its position moved (rfm_boundaries.sql). It reads the mart by name, not by ref (the mart
    is built from this model): the mart holds the values these counts were made from only when
    both folded in the same batch, so a run that finds them apart (the mart failed after this
    model ran) counts from all users again. -#}
{%- set cursor = ingestion_cursor() %}
{%- set measures = rfm_measures() %}
{%- set mart = none %}
{%- if execute and is_incremental() %}
    {%- set found = adapter.get_relation(database=this.database, schema='gold', identifier='mart_user_behavior') %}
    {%- if found is not none %}
        {%- set mart_cursor = run_query(
            'select coalesce(max(last_batch_id), 0) from ' ~ found).columns[0].values()[0] | int %}
        {%- if mart_cursor == cursor | int %}
            {%- set mart = found %}
        {%- else %}
            {{- log('int_rfm_boundaries: counting all users again (gold.mart_user_behavior is at batch '
                ~ mart_cursor ~ ', the boundaries at ' ~ cursor ~ ')', info=True) }}
        {%- endif %}
    {%- endif %}
{%- endif %}

-- depends_on: {{ ref('stg_clickstream_events') }} (read by incremental runs only)

-- Not materialized: read by index many times, a copy would lose the indexes.
with users as not materialized (

    select * from {{ ref('int_user_activity') }}

),

{% if mart is not none -%}
changed_users as (

    {{ touched_user_ids(ref('stg_clickstream_events'), cursor) }}

),

changes as (

    select
        before.user_id as before_user_id,
        now.user_id as now_user_id,
        {%- for measure, column in measures %}
        before.{{ column }} as before_{{ measure }},
        now.{{ column }} as now_{{ measure }}{{ ',' if not loop.last }}
        {%- endfor %}

    from changed_users
    left join {{ mart }} as before
        on changed_users.user_id = before.user_id
    left join users as now
        on changed_users.user_id = now.user_id

),

targets_before as (

    -- No stored row (no users before): a null boundary, found from the first value.
    select
        scores.score,
        {%- for measure, column in measures %}
        stored.{{ measure }}_boundary,
        {%- for side, operator in [('below', '<'), ('through', '<=')] %}
        coalesce(stored.{{ measure }}_{{ side }}, 0)
            + count(*) filter (where changes.now_{{ measure }} {{ operator }} stored.{{ measure }}_boundary)
            - count(*) filter (where changes.before_{{ measure }} {{ operator }} stored.{{ measure }}_boundary)
            as {{ measure }}_{{ side }},
        {%- endfor %}
        {%- endfor %}
        coalesce(stored.users, 0) + count(changes.now_user_id) - count(changes.before_user_id) as users

    from generate_series(2, 5) as scores (score)
    left join {{ this }} as stored
        on scores.score = stored.score
    left join changes on true
    group by
        scores.score,
        stored.users
        {%- for measure, column in measures %},
        stored.{{ measure }}_boundary,
        stored.{{ measure }}_below,
        stored.{{ measure }}_through
        {%- endfor %}

),
{%- else -%}
targets_before as (

    select
        score,
        (select count(*) from users) as users
        {%- for measure, column in measures %},
        null::{{ 'timestamptz' if measure == 'recency' else 'bigint' if measure == 'frequency' else 'numeric' }} as {{ measure }}_boundary,
        0::bigint as {{ measure }}_below,
        0::bigint as {{ measure }}_through
        {%- endfor %}

    from generate_series(2, 5) as scores (score)

),
{%- endif %}

targets as (

    select
        targets_before.*,
        -- ceil((score - 1) x users / 5), in integers.
        ((score - 1) * users + 4) / 5 as position

    from targets_before

),

{% for measure, column in measures -%}
{{ rfm_boundary_ctes(measure, column, 'users', 'targets') }},

{% endfor -%}
final as (

    select
        targets.score,
        targets.users,
        {%- for measure, column in measures %}
        {{ measure }}_counted.{{ measure }}_boundary,
        {{ measure }}_counted.{{ measure }}_below,
        {{ measure }}_counted.{{ measure }}_through,
        {%- endfor %}
        (select coalesce(max(last_batch_id), 0) from users) as last_batch_id

    from targets
    {%- for measure, column in measures %}
    inner join {{ measure }}_counted
        on targets.score = {{ measure }}_counted.score
    {%- endfor %}

)

select * from final
