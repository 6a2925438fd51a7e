{#- The measures RFM ranks, one place: (name in int_rfm_boundaries, column of
    int_user_activity). Recency ranks the exact last session time (see mart_user_behavior). -#}
{% macro rfm_measures() -%}
    {{ return([('recency', 'last_session_at'), ('frequency', 'frequency'), ('monetary', 'monetary')]) }}
{%- endmacro %}

{#- One measure's boundary for each score k (2-5): the value at position
    t = ceil((k - 1) x users / 5) of the users' values in ascending order, with the number of
    users below it and at or below it. A user scores k or more exactly when their value is
    above that boundary (see rfm.sql), so scores need the four boundaries, not the ranks.

    `targets` holds, per score, the previous boundary with its counts already brought up to
    date (or a null boundary: found from the first value). A boundary moves only when its
    position left the run of values equal to it, and then walks the measure's index from the
    old value by as many values as it moved: the work is the shift, bounded by the users the
    run changed, plus the users tied at the new value. -#}
{% macro rfm_boundary_ctes(measure, column, users, targets) -%}
{{ measure }}_moved as (

    select
        targets.score,
        targets.users,
        targets.position,
        targets.{{ measure }}_boundary as previous_boundary,
        targets.{{ measure }}_below as previous_below,
        targets.{{ measure }}_through as previous_through,
        case
            when targets.users = 0 then null
            when targets.{{ measure }}_boundary is null then (
                select {{ column }} from {{ users }}
                order by {{ column }} offset targets.position - 1 limit 1
            )
            when targets.position > targets.{{ measure }}_through then (
                select {{ column }} from {{ users }}
                where {{ column }} > targets.{{ measure }}_boundary
                order by {{ column }} offset targets.position - targets.{{ measure }}_through - 1 limit 1
            )
            when targets.position <= targets.{{ measure }}_below then (
                select {{ column }} from {{ users }}
                where {{ column }} < targets.{{ measure }}_boundary
                order by {{ column }} desc offset targets.{{ measure }}_below - targets.position limit 1
            )
            else targets.{{ measure }}_boundary
        end as boundary

    from {{ targets }} as targets

),

{{ measure }}_counted as (

    select
        moved.score,
        moved.boundary as {{ measure }}_boundary,
        case
            when moved.boundary is null then 0
            when moved.previous_boundary is null then (
                select count(*) from {{ users }} where {{ column }} < moved.boundary
            )
            when moved.boundary > moved.previous_boundary then moved.previous_through + (
                select count(*) from {{ users }}
                where {{ column }} > moved.previous_boundary and {{ column }} < moved.boundary
            )
            when moved.boundary < moved.previous_boundary then moved.previous_below - (
                select count(*) from {{ users }}
                where {{ column }} >= moved.boundary and {{ column }} < moved.previous_boundary
            )
            else moved.previous_below
        end as {{ measure }}_below,
        case
            when moved.boundary is null then 0
            when moved.previous_boundary is null then (
                select count(*) from {{ users }} where {{ column }} <= moved.boundary
            )
            when moved.boundary > moved.previous_boundary then moved.previous_through + (
                select count(*) from {{ users }}
                where {{ column }} > moved.previous_boundary and {{ column }} <= moved.boundary
            )
            when moved.boundary < moved.previous_boundary then moved.previous_below - (
                select count(*) from {{ users }}
                where {{ column }} > moved.boundary and {{ column }} < moved.previous_boundary
            )
            else moved.previous_through
        end as {{ measure }}_through

    from {{ measure }}_moved as moved

)
{%- endmacro %}

{#- `union` the users of `stored` (a relation keeping per user r/f/m_score beside the measures'
    columns) whose stored score a moved boundary no longer matches: score s needs boundary s <
    value <= boundary s + 1 (scores 1 and 5 are open on one side). Read through the
    (score, measure) indexes: the users between an old and a new boundary. -#}
{% macro rescored_user_ids(stored, boundaries) -%}
    {%- for measure, column in rfm_measures() %}
    {%- set score = measure[0] ~ '_score' %}
    {%- for s in range(1, 6) %}
    union

    select stored.user_id
    from {{ stored }} as stored
    where stored.{{ score }} = {{ s }}
        and (
            {%- if s > 1 %}
            stored.{{ column }} <= (select {{ measure }}_boundary from {{ boundaries }} where score = {{ s }})
            {%- endif %}
            {%- if s > 1 and s < 5 %}
            or{% endif %}
            {%- if s < 5 %}
            stored.{{ column }} > (select {{ measure }}_boundary from {{ boundaries }} where score = {{ s + 1 }})
            {%- endif %}
        )
    {%- endfor %}
    {%- endfor %}
{%- endmacro %}
