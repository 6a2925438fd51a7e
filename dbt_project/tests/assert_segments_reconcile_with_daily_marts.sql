-- The segment and product-day marts are splits of the daily marts: summed over a day's
-- cells they give the day's row of mart_daily_metrics and mart_conversion_funnel (users
-- included, since each user-day sits in exactly one cell), and summed over days a
-- product's row of mart_product_performance. Returns a row per disagreeing key.

with segment_days as (

    select
        metric_date,
        sum(events) as events,
        sum(page_views) as page_views,
        sum(add_to_carts) as add_to_carts,
        sum(purchases) as purchases,
        sum(units_sold) as units_sold,
        sum(revenue) as revenue,
        sum(user_days) as unique_users
    from {{ ref('mart_daily_segment_metrics') }}
    group by metric_date

),

session_days as (

    select
        metric_date,
        sum(sessions) as sessions,
        sum(abandoned_cart_sessions) as abandoned_cart_sessions,
        sum(viewed_sessions) as viewed_sessions,
        sum(carted_sessions) as carted_sessions,
        sum(purchased_sessions) as purchased_sessions
    from {{ ref('mart_daily_segment_sessions') }}
    group by metric_date

),

product_totals as (

    select
        product_id,
        sum(views) as views,
        sum(carts) as carts,
        sum(purchases) as purchases,
        sum(units_sold) as units_sold,
        sum(revenue) as revenue
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
    where (daily.events, daily.page_views, daily.add_to_carts, daily.purchases,
            daily.units_sold, daily.revenue, daily.unique_users)
        is distinct from (segment_days.events, segment_days.page_views,
            segment_days.add_to_carts, segment_days.purchases, segment_days.units_sold,
            segment_days.revenue, segment_days.unique_users)
        or (daily.sessions, daily.abandoned_cart_sessions, funnel.viewed_sessions,
            funnel.carted_sessions, funnel.purchased_sessions)
        is distinct from (session_days.sessions, session_days.abandoned_cart_sessions,
            session_days.viewed_sessions, session_days.carted_sessions,
            session_days.purchased_sessions)

),

product_mismatches as (

    select 'mart_product_performance' as mart, products.product_id as row_key
    from {{ ref('mart_product_performance') }} as products
    full outer join product_totals on product_totals.product_id = products.product_id
    where (products.views, products.carts, products.purchases, products.units_sold,
            products.revenue)
        is distinct from (product_totals.views, product_totals.carts,
            product_totals.purchases, product_totals.units_sold, product_totals.revenue)

)

select * from day_mismatches
union all
select * from product_mismatches
