"""The KPIs computed straight from Silver in SQL: the tests' independent expected values."""

from __future__ import annotations

from datetime import date

from shopstream_assets.lib import database

# The reference's formulas written out again on purpose: this is the check, not the code.
KPIS_FROM_SILVER = """
with events as (
    select * from silver.stg_clickstream_events
    where event_date between %(start)s and %(end)s
        and (%(country)s::text is null or country = %(country)s)
),
sessions as (
    select * from silver.int_user_sessions
    where session_date between %(start)s and %(end)s
        and (%(country)s::text is null or country = %(country)s)
),
totals as (
    select
        sum(line_revenue)::float8 as revenue,
        count(*) filter (where is_purchase)::float8 as purchases,
        count(*) filter (where is_page_view)::float8 as page_views,
        count(*) filter (where is_add_to_cart)::float8 as add_to_carts,
        (select count(*) from (select distinct event_date, user_id from events) as days)::float8 as user_days,
        (select count(*) from sessions)::float8 as sessions,
        (select count(*) from sessions where abandoned_cart)::float8 as abandoned
    from events
)
select
    revenue,
    100 * purchases / nullif(page_views, 0) as conversion_rate,
    100 * add_to_carts / nullif(page_views, 0) as cart_rate,
    100 * purchases / nullif(add_to_carts, 0) as checkout_rate,
    100 * abandoned / nullif(sessions, 0) as cart_abandonment_rate,
    revenue / nullif(purchases, 0) as average_order_value,
    revenue / nullif(user_days, 0) as revenue_per_user
from totals
"""


def kpis_from_silver(url: str, start: date, end: date, country: str | None = None) -> dict[str, float | None]:
    with database.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(KPIS_FROM_SILVER, {"start": start, "end": end, "country": country})
        row = cursor.fetchone()
        return {column.name: value for column, value in zip(cursor.description, row, strict=True)}


def scalar(url: str, query: str, params: object = None) -> object:
    with database.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]
