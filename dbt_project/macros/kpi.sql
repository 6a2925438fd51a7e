{#- The reference's KPI arithmetic: a share is numerator / denominator x 100, and a
    division by zero gives null (no data to rate), never an error or a 0. Ratios are
    returned as double precision: they are for charts, and a float compares the same in
    SQL, Python and the unit tests (an unconstrained numeric carries 16+ decimals). -#}
{% macro percent(numerator, denominator) -%}
    (100.0 * {{ numerator }} / nullif({{ denominator }}, 0))::float8
{%- endmacro %}

{% macro ratio(numerator, denominator) -%}
    ({{ numerator }}::numeric / nullif({{ denominator }}, 0))::float8
{%- endmacro %}
