{#- The two time grains of the Gold marts, one definition each: a UTC day (metric_date, a
    date) and a UTC hour (metric_hour, a timestamptz at the start of the hour). An hour is
    taken in UTC explicitly, so the session's TimeZone setting never moves an event between
    hours, and stored as timestamptz, so the dashboard compares it with instants, not with
    wall-clock times. -#}
{% macro grain_column(grain) -%}
    {%- if grain == 'day' -%}
        metric_date
    {%- elif grain == 'hour' -%}
        metric_hour
    {%- else -%}
        {{- exceptions.raise_compiler_error("grain is 'day' or 'hour', got '" ~ grain ~ "'") -}}
    {%- endif -%}
{%- endmacro %}

{#- The period an instant (a timestamptz expression) falls in at this grain. -#}
{% macro period_of(grain, timestamp_expression) -%}
    {%- if grain == 'day' -%}
        ({{ timestamp_expression }} at time zone 'UTC')::date
    {%- elif grain == 'hour' -%}
        date_trunc('hour', {{ timestamp_expression }}, 'UTC')
    {%- else -%}
        {{- exceptions.raise_compiler_error("grain is 'day' or 'hour', got '" ~ grain ~ "'") -}}
    {%- endif -%}
{%- endmacro %}

{#- The period of a stg_clickstream_events row (optionally qualified by `alias`): its
    event_date column for a day, so the daily marts read the stored column. -#}
{% macro event_period(grain, alias=none) -%}
    {%- set prefix = (alias ~ '.') if alias else '' -%}
    {%- if grain == 'day' -%}
        {{ prefix }}event_date
    {%- else -%}
        {{ period_of(grain, prefix ~ 'event_timestamp') }}
    {%- endif -%}
{%- endmacro %}
