"""Every SQL statement the dashboard runs, parameterized, in one place (its reads of Bronze's ledger
excepted: those are ``streaming.ledger``'s, the ledger's one home, called from here).

Pages call functions and never write SQL: the Overview's calls are in ``dashboard.overview_data``
(its drill-down's too), User Behavior's and Live Stream's below their statements. Values always
travel as query parameters (``%(name)s``); the only choice made in Python is *which* constant
statement to run, never text spliced into one. Results are cached per argument set for a few
seconds (``st.cache_data``), so several open tabs and widget clicks share one query per refresh.
The Dagster lineage (``shopstream_assets/defs/dashboard.py``) reads the relations named here.

Sources: everything the Overview shows comes from Gold, filtered or not, in a few hundred
rows per day. Event measures and users come from ``gold.mart_daily_segment_metrics`` (per
day, country, device and product category), session measures and the funnel from
``gold.mart_daily_segment_sessions`` (per day, country and device: a session has no
category, so the category filter leaves them over all categories), top products from
``gold.mart_product_daily``; periods of up to two days read the hourly segment marts instead.
Their columns are additive: a query sums the cells the filters select, and ``dashboard.metrics``
applies the KPI formulas to the sums (see its docstring for what "unique users" means under a
filter). The drill-down reads Bronze up to Gold's cursor. User Behavior reads
``gold.mart_user_behavior`` and ``gold.mart_hot_leads``; Live Stream reads Bronze and
``gold.refresh_log``, and the Bronze ledger through ``streaming.ledger``, where every ledger
query lives.
"""

from __future__ import annotations

from dataclasses import asdict, astuple, fields

import pandas as pd
import psycopg
import streamlit as st

from dashboard.db import fetch, read
from streaming import ledger

# Short enough that a 5 s auto-refresh sees new data, long enough that tabs share results.
LIVE_TTL_SECONDS = 2
# Lists of countries and categories change only when the shop does.
OPTIONS_TTL_SECONDS = 600


# ---------------------------------------------------------------------------------------
# Overview

DATA_BOUNDS = """
select min(metric_date) as first_day, max(metric_date) as last_day
from gold.mart_daily_metrics
"""

# The segments that have ever had events: a few rows per day of a small Gold mart.
FILTER_COUNTRIES_DEVICES = """
select distinct country, device_type
from gold.mart_daily_segment_sessions
order by country, device_type
"""

FILTER_CATEGORIES = """
select distinct product_category
from gold.mart_product_performance
order by product_category
"""

# Each grain's Gold tables and the period bounds its statements select with (constants: the
# statements below are built from them once, at import).
# Relations are named whole, so the Dagster lineage (shopstream_assets/defs/dashboard.py) reads them here.
_GRAINS = {
    "day": (
        "metric_date", "gold.mart_daily_segment_metrics", "gold.mart_daily_segment_sessions", "%(start)s", "%(end)s"
    ),
    "hour": (
        "metric_hour", "gold.mart_hourly_segment_metrics", "gold.mart_hourly_segment_sessions",
        "%(first_hour)s", "%(last_hour)s",
    ),
}  # fmt: skip
# An empty array selects everything: `cardinality(x) = 0 or column = any(x)`.
_SEGMENT_FILTER = """
        and (cardinality(%(countries)s::text[]) = 0 or country = any(%(countries)s::text[]))
        and (cardinality(%(devices)s::text[]) = 0 or device_type = any(%(devices)s::text[]))"""
_CATEGORY_FILTER = """
        and (cardinality(%(categories)s::text[]) = 0 or product_category = any(%(categories)s::text[]))"""


def _cells(period: str, first: str, last: str, *, categories: bool) -> str:
    # Sessions have no category (the segment sessions marts): only country and device apply.
    return f"""
    where {period} between {first} and {last}{_SEGMENT_FILTER}{_CATEGORY_FILTER if categories else ""}"""


def _trend_counts(grain: str) -> str:
    """One row per period with :class:`PeriodCounts` columns: the selected cells' sums; the
    period's start in ``period_start``. User-hours at the hourly grain (dashboard.metrics)."""
    period, event_cells, session_cells, first, last = _GRAINS[grain]
    users = "user_days" if grain == "day" else "user_hours"
    return f"""
with event_periods as (
    select
        {period} as period_start,
        sum(events) as events,
        sum(page_views) as page_views,
        sum(add_to_carts) as add_to_carts,
        sum(purchases) as purchases,
        sum(units_sold) as units_sold,
        sum(revenue) as revenue,
        sum({users}) as user_days
    from {event_cells}{_cells(period, first, last, categories=True)}
    group by {period}
),
session_periods as (
    select
        {period} as period_start,
        sum(sessions) as sessions,
        sum(abandoned_cart_sessions) as abandoned_cart_sessions
    from {session_cells}{_cells(period, first, last, categories=False)}
    group by {period}
)
select
    coalesce(event_periods.period_start, session_periods.period_start) as period_start,
    coalesce(event_periods.events, 0) as events,
    coalesce(event_periods.page_views, 0) as page_views,
    coalesce(event_periods.add_to_carts, 0) as add_to_carts,
    coalesce(event_periods.purchases, 0) as purchases,
    coalesce(event_periods.units_sold, 0) as units_sold,
    coalesce(event_periods.revenue, 0) as revenue,
    coalesce(event_periods.user_days, 0) as user_days,
    coalesce(session_periods.sessions, 0) as sessions,
    coalesce(session_periods.abandoned_cart_sessions, 0) as abandoned_cart_sessions
from event_periods
full outer join session_periods
    on event_periods.period_start = session_periods.period_start
order by period_start
"""


def _funnel(grain: str) -> str:
    # The funnel's rule (gold.mart_conversion_funnel): a step counts sessions that reached it
    # and every step before it.
    period, _, session_cells, first, last = _GRAINS[grain]
    return f"""
select
    coalesce(sum(viewed_sessions), 0) as viewed_sessions,
    coalesce(sum(carted_sessions), 0) as carted_sessions,
    coalesce(sum(purchased_sessions), 0) as purchased_sessions
from {session_cells}{_cells(period, first, last, categories=False)}
"""


TREND_COUNTS = {grain: _trend_counts(grain) for grain in _GRAINS}
FUNNEL = {grain: _funnel(grain) for grain in _GRAINS}

# The period's products by revenue, every filter applied (the product's category for the
# category filter); ranks are taken over the selected cells, ties sharing a rank. Products are
# kept per day: an hourly period shows its days' products (the page says so).
TOP_PRODUCTS = f"""
select
    rank() over (order by sum(revenue) desc) as revenue_rank,
    product_id,
    min(product_name) as product_name,
    min(product_category) as product_category,
    sum(revenue) as revenue,
    sum(units_sold) as units_sold,
    sum(purchases) as purchases,
    sum(views) as views
from gold.mart_product_daily{_cells("metric_date", "%(start)s", "%(end)s", categories=True)}
group by product_id
order by revenue desc, product_id
limit %(limit)s
"""


# ---------------------------------------------------------------------------------------
# Drill-down: the events behind a number, from Bronze (the reader's grant), newest first

# Gold's cursor: the events a number counts are those of the batches Gold has folded in.
# Every filter is the event's own country, device and category, and the period a window of
# event times (Bronze's event_timestamp index, read backwards: newest first, a page at a time).
DRILL_EVENTS = """
select
    event_timestamp,
    event_type,
    session_id,
    user_id,
    product_id,
    product_name,
    product_category,
    product_price,
    quantity,
    device_type,
    country,
    event_id
from bronze.clickstream_events
where event_timestamp >= %(window_start)s
    and event_timestamp < %(window_last)s + %(window_step)s::interval
    and batch_id <= (select coalesce(max(last_batch_id), 0) from gold.mart_daily_metrics)
    and (%(event_type)s::text is null or event_type = %(event_type)s::text)
    and (%(product_id)s::text is null or product_id = %(product_id)s::text)
    and (cardinality(%(countries)s::text[]) = 0 or country = any(%(countries)s::text[]))
    and (cardinality(%(devices)s::text[]) = 0 or device_type = any(%(devices)s::text[]))
    and (cardinality(%(categories)s::text[]) = 0 or product_category = any(%(categories)s::text[]))
order by event_timestamp desc, event_id desc
limit %(limit)s offset %(offset)s
"""


# ---------------------------------------------------------------------------------------
# User Behavior

RFM_TIERS = """
select
    rfm_tier,
    count(*) as users,
    coalesce(sum(monetary), 0) as revenue,
    round(avg(recency_days), 1)::float8 as avg_recency_days,
    round(avg(frequency), 1)::float8 as avg_frequency,
    round(avg(monetary))::float8 as avg_monetary,
    max(as_of_date) as as_of_date
from gold.mart_user_behavior
group by rfm_tier
"""

RFM_SCORES = """
select 'Recency' as dimension, r_score as score, count(*) as users
from gold.mart_user_behavior group by r_score
union all
select 'Frequency', f_score, count(*) from gold.mart_user_behavior group by f_score
union all
select 'Monetary', m_score, count(*) from gold.mart_user_behavior group by m_score
order by dimension, score
"""

# Every user is one point; the cap keeps the scatter light if the population grows.
RFM_USERS = """
select user_id, recency_days, frequency, monetary, rfm_score, rfm_tier
from gold.mart_user_behavior
order by rfm_score desc, monetary desc, user_id
limit %(limit)s
"""

LIFECYCLE_STAGES = """
select lifecycle_stage, count(*) as users, coalesce(sum(monetary), 0) as revenue
from gold.mart_user_behavior
group by lifecycle_stage
"""

HOT_LEADS = """
select
    lead_rank,
    user_id,
    propensity_score,
    abandoned_cart_value,
    days_since_abandoned,
    abandoned_at,
    abandoned_session_page_views,
    purchase_sessions,
    monetary,
    rfm_tier
from gold.mart_hot_leads
order by lead_rank
limit %(limit)s
"""


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def rfm_tiers() -> pd.DataFrame:
    return fetch(RFM_TIERS)


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def rfm_scores() -> pd.DataFrame:
    return fetch(RFM_SCORES)


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def rfm_users(limit: int = 20_000) -> pd.DataFrame:
    return fetch(RFM_USERS, {"limit": limit})


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def lifecycle_stages() -> pd.DataFrame:
    return fetch(LIFECYCLE_STAGES)


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def hot_leads(limit: int = 1_000) -> pd.DataFrame:
    return fetch(HOT_LEADS, {"limit": limit})


# ---------------------------------------------------------------------------------------
# Live Stream (Bronze)

# By event time, through the event_timestamp index: the producer's rate as shoppers act.
EVENTS_PER_SECOND = """
select date_trunc('second', event_timestamp) as second, count(*) as events
from bronze.clickstream_events
where event_timestamp >= now() - make_interval(mins => %(minutes)s)
    and event_timestamp < now() + interval '1 minute'
group by 1
order by 1
"""

# Newest batches first, through the batch_id index (batch_id grows in commit order).
LATEST_EVENTS = """
select
    event_timestamp,
    event_type,
    user_id,
    product_name,
    product_category,
    product_price,
    quantity,
    device_type,
    country,
    repaired,
    ingested_at
from bronze.clickstream_events
order by batch_id desc
limit %(limit)s
"""

# gold.refresh_log's newest row is the last complete dbt refresh of Gold: its start time and
# the newest Bronze batch Gold then held. The log is indexed on refreshed_at, so this reads
# one row; the ledger then gives that batch's newest event time, whose age is the
# event-to-Gold freshness.
LAST_GOLD_REFRESH = """
with last_refresh as (
    select refreshed_at, gold_batch_id
    from gold.refresh_log
    order by refreshed_at desc
    limit 1
)
select
    last_refresh.gold_batch_id,
    last_refresh.refreshed_at as gold_refreshed_at,
    now() as database_now
from (select) as always_one_row
left join last_refresh on true
"""


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def events_per_second(minutes: int = 5) -> pd.DataFrame:
    return fetch(EVENTS_PER_SECOND, {"minutes": minutes})


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def latest_events(limit: int = 20) -> pd.DataFrame:
    return fetch(LATEST_EVENTS, {"limit": limit})


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def rejects_by_reason(topic: str, minutes: int = 60) -> pd.DataFrame:
    """Rejects of ``topic`` by reason, all time (from the ledger's running sums) and in the last ``minutes``."""
    counts = read(lambda conn: ledger.rejects_by_reason_recent(conn, topic, minutes))
    return pd.DataFrame([astuple(count) for count in counts], columns=[f.name for f in fields(ledger.RejectCount)])


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def ingest_summary(topic: str) -> dict[str, object]:
    """The topic's ledger totals and newest batch (``streaming.ledger.ingest_totals``)."""
    totals = read(lambda conn: ledger.ingest_totals(conn, topic))
    return pd.DataFrame([asdict(totals)]).iloc[0].to_dict()


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def last_batches(topic: str, limit: int = 10) -> pd.DataFrame:
    batches = read(lambda conn: ledger.last_batches(conn, topic, limit))
    return pd.DataFrame([astuple(batch) for batch in batches], columns=[f.name for f in fields(ledger.LedgerBatch)])


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def committed_offsets(topic: str) -> dict[int, int]:
    """Next offset to write per partition: the Bronze sink's own definition (``streaming.ledger``)."""
    return read(lambda conn: ledger.committed_offsets(conn, topic))


def _gold_status(conn: psycopg.Connection) -> dict[str, object]:
    gold_batch_id, gold_refreshed_at, database_now = conn.execute(LAST_GOLD_REFRESH).fetchone()
    newest = None if gold_batch_id is None else ledger.newest_event_time_through(conn, gold_batch_id)
    return {
        "gold_batch_id": gold_batch_id,
        "gold_refreshed_at": gold_refreshed_at,
        "gold_newest_event_time": newest,
        "database_now": database_now,
    }


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def gold_status() -> dict[str, object]:
    return pd.DataFrame([read(_gold_status)]).iloc[0].to_dict()
