{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        full_refresh=false,
        indexes=[{'columns': ['refreshed_at']}],
        post_hook=[
            "delete from {{ this }}
             where refreshed_at < (select max(refreshed_at) from {{ this }}) - interval '30 days'",
        ],
    )
}}

{#- One row per dbt invocation that built every Gold mart: the run's start time and the
    Bronze batch Gold has folded in. It depends on all marts, so dbt writes it last and
    skips it when a mart (or, under `dbt build`, a mart's test) fails: its newest row is the
    last complete Gold refresh, which the Live Stream page shows. full_refresh=false keeps
    the history through `--full-refresh`; rows older than 30 days before the newest go. -#}
-- depends_on: {{ ref('mart_daily_segment_metrics') }}
-- depends_on: {{ ref('mart_daily_segment_sessions') }}
-- depends_on: {{ ref('mart_product_daily') }}
-- depends_on: {{ ref('mart_conversion_funnel') }}
-- depends_on: {{ ref('mart_product_performance') }}
-- depends_on: {{ ref('mart_hot_leads') }}

with final as (

    select
        '{{ invocation_id }}'::text as invocation_id,
        -- dbt's run_started_at (UTC): when the run began, not when this row was written.
        '{{ run_started_at.isoformat() }}'::timestamptz as refreshed_at,
        (select max(last_batch_id) from {{ ref('mart_daily_metrics') }}) as gold_batch_id

)

select * from final
