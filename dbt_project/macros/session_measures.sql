{#- The session measures of the Gold marts, one definition each: sessions; abandoned cart
    sessions (carted and did not buy); and the funnel page view -> add to cart -> purchase,
    where a step counts the sessions that reached it and every step before it, so the
    funnel is monotone by definition (a session that bought with no cart event is no funnel
    purchase). The arguments say how a session's flags read in the rows aggregated (SQL
    conditions); with `weight`, a +1/-1 column, the measures are sums of weights (changes by
    difference) instead of counts of rows. Columns: session_measure_columns(), the last
    with no trailing comma. -#}
{% macro session_measures(viewed, carted, purchased, abandoned, weight=none) -%}
    {%- set conditions = {
        'abandoned_cart_sessions': abandoned,
        'viewed_sessions': viewed,
        'carted_sessions': viewed ~ ' and ' ~ carted,
        'purchased_sessions': viewed ~ ' and ' ~ carted ~ ' and ' ~ purchased,
    } -%}
    {%- if weight is none %}
        count(*) as sessions,
    {%- else %}
        sum({{ weight }}) as sessions,
    {%- endif %}
    {%- for column, condition in conditions.items() %}
    {%- if weight is none %}
        count(*) filter (where {{ condition }}) as {{ column }}
    {%- else %}
        coalesce(sum({{ weight }}) filter (where {{ condition }}), 0) as {{ column }}
    {%- endif %}
    {%- if not loop.last %},{% endif %}
    {%- endfor -%}
{%- endmacro %}

{#- The columns session_measures() returns, in order. -#}
{% macro session_measure_columns() -%}
    {{- return([
        'sessions',
        'abandoned_cart_sessions',
        'viewed_sessions',
        'carted_sessions',
        'purchased_sessions',
    ]) -}}
{%- endmacro %}
