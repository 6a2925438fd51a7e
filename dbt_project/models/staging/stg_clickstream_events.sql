{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[
            {'columns': ['event_id'], 'unique': True},
            {'columns': ['batch_id']},
            {'columns': ['session_id']},
            {'columns': ['user_id', 'event_date', 'event_timestamp']},
        ],
    )
}}

{#- Append is exact here: the cursor is Bronze's batch_id, Bronze holds each event_id once,
    and the unique index on event_id turns any double append into a loud failure instead of
    double counting. -#}
{%- set cursor = ingestion_cursor('batch_id') %}

with bronze_events as (

    select * from {{ source('bronze', 'clickstream_events') }}
    {% if is_incremental() -%}
    where batch_id > {{ cursor }}
    {%- endif %}

),

final as (

    select
        event_id,
        event_timestamp,
        -- A day is a UTC day whatever the session's TimeZone setting.
        (event_timestamp at time zone 'UTC')::date as event_date,
        extract(hour from event_timestamp at time zone 'UTC')::smallint as event_hour,
        user_id,
        session_id,
        event_type,
        product_id,
        product_name,
        product_category,
        product_price,
        quantity,
        case
            when event_type = 'purchase' then product_price * quantity
            else 0
        end::numeric(18, 2) as line_revenue,
        event_type = 'page_view' as is_page_view,
        event_type = 'add_to_cart' as is_add_to_cart,
        event_type = 'purchase' as is_purchase,
        device_type,
        country,
        repaired,
        ingested_at,
        batch_id

    from bronze_events

)

select * from final
