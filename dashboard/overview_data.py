"""The Overview's data: its cached calls of the statements in ``dashboard.queries``.

The page, its drill-down and the benchmark call these; results are cached per argument set for
a few seconds (``st.cache_data``), so several open tabs and widget clicks share one query per
refresh. Every count is additive, so a period's totals are its periods' sums.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboard.db import fetch
from dashboard.metrics import PeriodCounts
from dashboard.periods import Filters
from dashboard.queries import (
    DATA_BOUNDS,
    DRILL_EVENTS,
    FILTER_CATEGORIES,
    FILTER_COUNTRIES_DEVICES,
    FUNNEL,
    LIVE_TTL_SECONDS,
    OPTIONS_TTL_SECONDS,
    TOP_PRODUCTS,
    TREND_COUNTS,
)


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def data_bounds() -> tuple[date | None, date | None]:
    row = fetch(DATA_BOUNDS).iloc[0]
    first, last = row["first_day"], row["last_day"]
    return (None if pd.isna(first) else first, None if pd.isna(last) else last)


@st.cache_data(ttl=OPTIONS_TTL_SECONDS, show_spinner=False)
def filter_options() -> dict[str, list[str]]:
    pairs = fetch(FILTER_COUNTRIES_DEVICES)
    categories = fetch(FILTER_CATEGORIES)
    return {
        "countries": sorted(pairs["country"].unique().tolist()) if not pairs.empty else [],
        "devices": sorted(pairs["device_type"].unique().tolist()) if not pairs.empty else [],
        "categories": categories["product_category"].tolist() if not categories.empty else [],
    }


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def trend_counts(filters: Filters) -> pd.DataFrame:
    """One row per day or hour (the filters' grain) with ``period_start`` and :class:`PeriodCounts` columns."""
    return fetch(TREND_COUNTS[filters.grain], filters.params())


def daily_counts(filters: Filters) -> pd.DataFrame:
    """One row per day of the period (``metric_date``) with :class:`PeriodCounts` columns."""
    daily = Filters(filters.start, filters.end, filters.countries, filters.devices, filters.categories)
    return trend_counts(daily).rename(columns={"period_start": "metric_date"})


def period_counts(filters: Filters) -> PeriodCounts:
    """The period's totals: the periods' counts summed (every count is additive)."""
    periods = trend_counts(filters)
    if periods.empty:
        return PeriodCounts()
    return PeriodCounts.from_mapping(periods.drop(columns="period_start").sum().to_dict())


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def funnel(filters: Filters) -> dict[str, int]:
    row = fetch(FUNNEL[filters.grain], filters.params()).iloc[0]
    return {name: int(row[name] or 0) for name in ("viewed_sessions", "carted_sessions", "purchased_sessions")}


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def top_products(filters: Filters, limit: int = 10) -> pd.DataFrame:
    return fetch(TOP_PRODUCTS, {**filters.params(), "limit": limit})


# ---------------------------------------------------------------------------------------
# Drill-down: the events behind a number, a page at a time (queries.DRILL_EVENTS)

DRILL_PAGE_ROWS = 50
# Paging stops here: deeper than this an analyst narrows the period or the filters instead.
DRILL_MAX_PAGES = 200


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def drill_events(
    filters: Filters, *, event_type: str | None = None, product_id: str | None = None, page: int = 0
) -> pd.DataFrame:
    """One page (newest first) of the events behind a number: the filters' period and segments,
    optionally one event type and one product. At most :data:`DRILL_PAGE_ROWS` rows."""
    page = min(max(page, 0), DRILL_MAX_PAGES - 1)
    params = {
        **filters.params(),
        "event_type": event_type,
        "product_id": product_id,
        "limit": DRILL_PAGE_ROWS,
        "offset": page * DRILL_PAGE_ROWS,
    }
    return fetch(DRILL_EVENTS, params)
