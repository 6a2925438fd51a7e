{#- Incremental by difference, the one way the Gold marts fold new batches in: the rows of
    {{ this }} that this run changes, each its stored value plus its change, so a run reads
    the changes and the stored rows they touch, never the history.

    `changes` maps each CTE of changes (one row per key, keyed by `keys`, the model's
    unique_key) to the additive columns it changes; [] for a CTE that only names changed
    rows (the days or cells the new events fall in). A key in any of them is a changed row,
    and a column a CTE has no row for changes by 0. `batch_changes` is the CTE over the new
    events: its last_batch_id (the highest new batch of the key) moves the model's cursor.
    `keep_least` columns keep the alphabetically first of the stored and the new value
    (product names: an additive run can keep that without history). With
    `every_stored_row` every stored row is returned, changed or not (a model that re-ranks
    all its rows). In a full build nothing is stored: the rows are the changes themselves,
    which then hold totals.

    greatest() and least() skip nulls in PostgreSQL: a row changed only by moves (a session
    or user-day that a late event moved away, no new event) keeps its stored last_batch_id,
    and a row new to the table keeps its new values. -#}
{% macro stored_plus_changes(
    keys, changes, batch_changes, keep_least=[], every_stored_row=false
) -%}
    {%- if batch_changes not in changes -%}
        {{- exceptions.raise_compiler_error(
            "stored_plus_changes: batch_changes '" ~ batch_changes
            ~ "' is not one of the changes " ~ (changes | list | join(', '))) -}}
    {%- endif -%}
    {%- set stored = is_incremental() -%}
    {#- The changed keys: those of the one CTE of changes when there is one (it drives the
        joins), else the union of all (and of the stored rows with every_stored_row). -#}
    {%- set single = changes | length == 1 and not (stored and every_stored_row) -%}
    {%- set changed = (changes | list | first) if single else 'changed_keys' -%}
    select
        {%- for key in keys %}
        {{ changed }}.{{ key }},
        {%- endfor %}
        {%- for column in keep_least %}
        {%- if stored %}
        least(previous.{{ column }}, {{ batch_changes }}.{{ column }}) as {{ column }},
        {%- else %}
        {{ batch_changes }}.{{ column }},
        {%- endif %}
        {%- endfor %}
        {%- for relation, columns in changes.items() %}
        {%- for column in columns %}
        {%- if stored %}
        coalesce(previous.{{ column }}, 0) + coalesce({{ relation }}.{{ column }}, 0)
            as {{ column }},
        {%- else %}
        coalesce({{ relation }}.{{ column }}, 0) as {{ column }},
        {%- endif %}
        {%- endfor %}
        {%- endfor %}
        {%- if stored %}
        greatest(previous.last_batch_id, {{ batch_changes }}.last_batch_id) as last_batch_id
        {%- else %}
        {{ batch_changes }}.last_batch_id
        {%- endif %}

    {% if single -%}
    from {{ changed }}
    {%- else -%}
    from (
        {%- if stored and every_stored_row %}
        select {{ keys | join(', ') }} from {{ this }}
        union
        {%- endif %}
        {%- for relation in changes %}
        select {{ keys | join(', ') }} from {{ relation }}
        {%- if not loop.last %}
        union
        {%- endif %}
        {%- endfor %}
    ) as changed_keys
    {%- endif %}
    {%- if stored %}
    left join {{ this }} as previous
        on {{ keys_match(changed, 'previous', keys) }}
    {%- endif %}
    {%- for relation in changes if relation != changed %}
    left join {{ relation }}
        on {{ keys_match(changed, relation, keys) }}
    {%- endfor %}
{%- endmacro %}

{#- `left.key = right.key and ...` over the key columns. -#}
{% macro keys_match(left, right, keys) -%}
    {%- for key in keys -%}
        {{ left }}.{{ key }} = {{ right }}.{{ key }}
        {%- if not loop.last %}
            and {% endif -%}
    {%- endfor -%}
{%- endmacro %}
