{#- The ingestion cursor an incremental model has already consumed: the highest Bronze
    batch_id folded into {{ this }} (every model keeps it in a last_batch_id column).

    It is read with run_query and inlined as a literal rather than left as a subquery, so
    PostgreSQL plans `batch_id > <literal>` from the index bounds (a handful of new rows)
    instead of guessing a third of the table and choosing a sequential scan. -#}
{% macro ingestion_cursor(column='last_batch_id') -%}
    {%- if execute and is_incremental() -%}
        {%- set result = run_query('select coalesce(max(' ~ column ~ '), 0) from ' ~ this) -%}
        {{- result.columns[0].values()[0] | int -}}
    {%- else -%}
        0
    {%- endif -%}
{%- endmacro %}

{#- The rows of `relation` that this run adds: those of batches after `cursor` (the value of
    ingestion_cursor()) in an incremental run, all of them in a full build. -#}
{% macro after_cursor(relation, cursor) -%}
    select * from {{ relation }}
    {%- if is_incremental() %}
    where batch_id > {{ cursor }}
    {%- endif %}
{%- endmacro %}
