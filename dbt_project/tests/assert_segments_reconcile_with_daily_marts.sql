-- The segment and product-day marts are splits of the daily marts: summed over a day's
-- cells they give the day's row of mart_daily_metrics and mart_conversion_funnel (users
-- included, since each user-day sits in exactly one cell), and summed over days a
-- product's row of mart_product_performance. Returns a row per disagreeing key.
{%- set day_columns = (event_measures() | list) + ['unique_users'] %}
{%- set session_columns = session_measure_columns() %}
{%- set product_columns = event_measures('product') | list %}

with segment_days as (

    select
        metric_date,
        {%- for column in event_measures() %}
        sum({{ column }}) as {{ column }},
        {%- endfor %}
        sum(user_days) as unique_users
    from {{ ref('mart_daily_segment_metrics') }}
    group by metric_date

),

session_days as (

    select
        metric_date,
        {%- for column in session_columns %}
        sum({{ column }}) as {{ column }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    from {{ ref('mart_daily_segment_sessions') }}
    group by metric_date

),

product_totals as (

    select
        product_id,
        {%- for column in product_columns %}
        sum({{ column }}) as {{ column }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    from {{ ref('mart_product_daily') }}
    group by product_id

),

day_mismatches as (

    select 'mart_daily_metrics' as mart, daily.metric_date::text as row_key
    from {{ ref('mart_daily_metrics') }} as daily
    left join segment_days on segment_days.metric_date = daily.metric_date
    left join session_days on session_days.metric_date = daily.metric_date
    left join {{ ref('mart_conversion_funnel') }} as funnel
        on funnel.metric_date = daily.metric_date
    where (daily.{{ day_columns | join(', daily.') }})
        is distinct from (segment_days.{{ day_columns | join(', segment_days.') }})
        or (daily.sessions, daily.abandoned_cart_sessions, funnel.viewed_sessions,
            funnel.carted_sessions, funnel.purchased_sessions)
        is distinct from (session_days.{{ session_columns | join(', session_days.') }})

),

product_mismatches as (

    select 'mart_product_performance' as mart, products.product_id as row_key
    from {{ ref('mart_product_performance') }} as products
    full outer join product_totals on product_totals.product_id = products.product_id
    where (products.{{ product_columns | join(', products.') }})
        is distinct from (product_totals.{{ product_columns | join(', product_totals.') }})

)

select * from day_mismatches
union all
select * from product_mismatches
