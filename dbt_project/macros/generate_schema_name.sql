{#- Relations are exactly silver.* and gold.* (the Dagster asset keys and the dashboard's
    queries name them so), not dbt's default <target schema>_silver. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
