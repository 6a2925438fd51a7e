"""The Overview's numbers computed straight from Silver in SQL: the tests' independent values.

Written from the definitions (gold.mart_daily_segment_* YAML, dashboard.metrics), not from
the dashboard's queries: event measures filter events by their own country, device and
category; a user-day counts when its first event of the day (event time, then event_id)
passes the filters; sessions filter by the session's country and device (no category).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd

from shopstream import database

# An empty array selects everything.
_EVENT_FILTER = """
    (cardinality(%(countries)s::text[]) = 0 or country = any(%(countries)s::text[]))
    and (cardinality(%(devices)s::text[]) = 0 or device_type = any(%(devices)s::text[]))
    and (cardinality(%(categories)s::text[]) = 0 or product_category = any(%(categories)s::text[]))"""

# The reference's formulas written out again on purpose: this is the check, not the code.
KPIS_FROM_SILVER = f"""
with events as (
    select * from silver.stg_clickstream_events
    where event_date between %(start)s and %(end)s
),
filtered_events as (
    select * from events where {_EVENT_FILTER}
),
first_events as (
    select *, row_number() over (
        partition by user_id, event_date order by event_timestamp, event_id
    ) as position_in_day
    from events
),
user_days as (
    select count(*)::float8 as user_days
    from first_events
    where position_in_day = 1 and {_EVENT_FILTER}
),
sessions as (
    select * from silver.int_user_sessions
    where session_date between %(start)s and %(end)s
        and (cardinality(%(countries)s::text[]) = 0 or country = any(%(countries)s::text[]))
        and (cardinality(%(devices)s::text[]) = 0 or device_type = any(%(devices)s::text[]))
),
totals as (
    select
        coalesce(sum(line_revenue), 0)::float8 as revenue,
        count(*) filter (where is_purchase)::float8 as purchases,
        count(*) filter (where is_page_view)::float8 as page_views,
        count(*) filter (where is_add_to_cart)::float8 as add_to_carts,
        (select user_days from user_days) as user_days,
        (select count(*) from sessions)::float8 as sessions,
        (select count(*) from sessions where abandoned_cart)::float8 as abandoned,
        (select count(*) from sessions where page_views > 0)::float8 as viewed_sessions,
        (select count(*) from sessions where page_views > 0 and add_to_carts > 0)::float8 as carted_sessions,
        (select count(*) from sessions where page_views > 0 and add_to_carts > 0 and purchases > 0)::float8
            as purchased_sessions
    from filtered_events
)
select
    revenue,
    100 * purchases / nullif(page_views, 0) as conversion_rate,
    100 * add_to_carts / nullif(page_views, 0) as cart_rate,
    100 * purchases / nullif(add_to_carts, 0) as checkout_rate,
    100 * abandoned / nullif(sessions, 0) as cart_abandonment_rate,
    revenue / nullif(purchases, 0) as average_order_value,
    revenue / nullif(user_days, 0) as revenue_per_user,
    viewed_sessions,
    carted_sessions,
    purchased_sessions
from totals
"""

TOP_PRODUCTS_FROM_SILVER = f"""
select product_id, sum(line_revenue) as revenue, count(*) filter (where is_purchase) as purchases
from silver.stg_clickstream_events
where event_date between %(start)s and %(end)s and {_EVENT_FILTER}
group by product_id
order by revenue desc, product_id
limit %(limit)s
"""


def _params(
    start: date, end: date, countries: Sequence[str], devices: Sequence[str], categories: Sequence[str]
) -> dict[str, object]:
    return {
        "start": start,
        "end": end,
        "countries": list(countries),
        "devices": list(devices),
        "categories": list(categories),
    }


def kpis_from_silver(
    url: str,
    start: date,
    end: date,
    country: str | None = None,
    *,
    devices: Sequence[str] = (),
    categories: Sequence[str] = (),
) -> dict[str, float | None]:
    """The KPIs (and funnel steps) of a period and filters, from Silver."""
    params = _params(start, end, [country] if country else [], devices, categories)
    with database.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(KPIS_FROM_SILVER, params)
        row = cursor.fetchone()
        return {column.name: value for column, value in zip(cursor.description, row, strict=True)}


def top_products_from_silver(
    url: str,
    start: date,
    end: date,
    *,
    countries: Sequence[str] = (),
    devices: Sequence[str] = (),
    categories: Sequence[str] = (),
    limit: int = 10,
) -> pd.DataFrame:
    params = {**_params(start, end, countries, devices, categories), "limit": limit}
    with database.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(TOP_PRODUCTS_FROM_SILVER, params)
        return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


def scalar(url: str, query: str, params: object = None) -> object:
    with database.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]
