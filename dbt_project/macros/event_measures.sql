{#- The event measures of the Gold marts, one definition each: what a group of
    stg_clickstream_events rows counts and sums, and the type the marts store it as. Page
    views, add to carts and purchases count events (the issue's definition); units are the
    quantity on purchase events; revenue is line_revenue (price x quantity on purchases, 0
    on other events). Counts are bigint, money numeric(18, 2). -#}
{% macro event_measure_definitions() -%}
    {{- return({
        'events': ('count(*)', 'bigint'),
        'page_views': ('count(*) filter (where is_page_view)', 'bigint'),
        'add_to_carts': ('count(*) filter (where is_add_to_cart)', 'bigint'),
        'purchases': ('count(*) filter (where is_purchase)', 'bigint'),
        'units_sold': ('coalesce(sum(quantity) filter (where is_purchase), 0)', 'bigint'),
        'revenue': ('sum(line_revenue)', 'numeric(18, 2)'),
    }) -}}
{%- endmacro %}

{#- The measures a mart stores, as {column: measure}, in the marts' column order. The daily
    marts (grain='daily') keep the measures' names; the product marts (grain='product') call
    a product's page views and add to carts its views and carts, and count no events. -#}
{% macro event_measures(grain='daily') -%}
    {%- if grain == 'daily' -%}
        {{- return({
            'events': 'events',
            'page_views': 'page_views',
            'add_to_carts': 'add_to_carts',
            'purchases': 'purchases',
            'units_sold': 'units_sold',
            'revenue': 'revenue',
        }) -}}
    {%- elif grain == 'product' -%}
        {{- return({
            'views': 'page_views',
            'carts': 'add_to_carts',
            'purchases': 'purchases',
            'units_sold': 'units_sold',
            'revenue': 'revenue',
        }) -}}
    {%- else -%}
        {{- exceptions.raise_compiler_error(
            "event_measures: grain is 'daily' or 'product', got '" ~ grain ~ "'") -}}
    {%- endif -%}
{%- endmacro %}

{#- Select-list items `<aggregate> as <column>,` for event_measures()' map, one a line, each
    with its trailing comma (call it as `{{- aggregate_event_measures(measures) }}` after a
    select-list item; more items follow). -#}
{% macro aggregate_event_measures(measures) -%}
    {%- set definitions = event_measure_definitions() -%}
    {%- for column, measure in measures.items() %}
        {{ definitions[measure][0] }} as {{ column }},
    {%- endfor -%}
{%- endmacro %}

{#- Select-list items `<column>::<stored type> as <column>,` for the final CTE, as above. -#}
{% macro cast_event_measures(measures) -%}
    {%- set definitions = event_measure_definitions() -%}
    {%- for column, measure in measures.items() %}
        {{ column }}::{{ definitions[measure][1] }} as {{ column }},
    {%- endfor -%}
{%- endmacro %}
