{#- The body of a singular test that rates stay within 0-100: a row per value out of range,
    labelled `<model>.<rate>` with the row's key as text. A null rate (no denominator)
    passes. `rates` maps each model to [its key column, its rates], the rates a list of
    columns, or a {label: expression} map for a value to scale first. -#}
{% macro rates_outside_0_100(rates) -%}
with rates as (
    {%- for model, key_and_rates in rates.items() %}
    {%- set key, model_rates = key_and_rates %}
    {%- set outer_loop = loop %}
    {%- for label in model_rates %}

    select
        '{{ model }}.{{ label }}' as rate,
        {{ key }}::text as row_key,
        {{ model_rates[label] if model_rates is mapping else label }} as value
    from {{ ref(model) }}
    {%- if not (loop.last and outer_loop.last) %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- endfor %}

)

select *
from rates
where value < 0 or value > 100
{%- endmacro %}
