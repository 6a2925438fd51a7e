{#- RFM definitions, one place (the reference README's "RFM Segmentation"). -#}

{#- 1-5 by quintile, 5 best: 1 + floor(5 * (rank - 1) / users), rank ascending with ties
    sharing the lowest rank. -#}
{% macro quintile_score(expression) -%}
    (1 + floor(5.0 * (rank() over (order by {{ expression }}) - 1) / count(*) over ()))::integer
{%- endmacro %}

{#- The reference's bands: Champion 13-15, Loyal 10-12, Potential 7-9, At Risk 5-6, Lost 3-4. -#}
{% macro rfm_tier(score_expression) -%}
    case
        when {{ score_expression }} >= 13 then 'Champion'
        when {{ score_expression }} >= 10 then 'Loyal'
        when {{ score_expression }} >= 7 then 'Potential'
        when {{ score_expression }} >= 5 then 'At Risk'
        else 'Lost'
    end
{%- endmacro %}

{#- The same score from int_rfm_boundaries: a user scores k or more exactly when their value
    is above the score-k boundary (the value at position ceil((k - 1) x users / 5)), since then
    at least that many users lie strictly below them. -#}
{% macro boundary_score(expression, measure, boundaries) -%}
    (1 + (
        select count(*) from {{ boundaries }} where {{ expression }} > {{ boundaries }}.{{ measure }}_boundary
    ))::integer
{%- endmacro %}
