"""The Overview's drill-down: a selection on a chart (``st.plotly_chart(on_select="rerun")``)
becomes the events behind the number selected, newest first, a page at a time.

A trend's point (a day or an hour) lists that period's events; a funnel step, the events of
that step's type in the period (the funnel counts sessions, each row names its session); a
product bar, the product's events in the period's days. Rows come from
``overview_data.drill_events`` (Bronze up to Gold's cursor, so exactly the events Gold has counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import streamlit as st

from dashboard import ui
from dashboard.charts import FUNNEL_STEPS
from dashboard.overview_data import DRILL_MAX_PAGES, DRILL_PAGE_ROWS, drill_events
from dashboard.periods import Filters, Period

# The event type whose events make each funnel step (the segment sessions marts' steps).
STEP_EVENT_TYPES: dict[str, str] = {
    "viewed_sessions": "page_view",
    "carted_sessions": "add_to_cart",
    "purchased_sessions": "purchase",
}
CHOSEN_KEY = "overview_drill"
PAGE_KEY = "overview_drill_page"
TRENDS = ("revenue_trend", "conversion_trend")


@dataclass(frozen=True)
class DrillTarget:
    title: str
    note: str
    filters: Filters
    event_type: str | None = None
    product_id: str | None = None


def _points(event: Any) -> list[dict[str, Any]]:
    try:
        return list(event["selection"]["points"])
    except (KeyError, TypeError):
        return []


def _chosen(selections: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The newest selection: the chart whose selected points changed since the last run."""
    chosen = st.session_state.get(CHOSEN_KEY)
    for chart, event in selections.items():
        points = _points(event)
        signature = repr(points)
        seen_key = f"{CHOSEN_KEY}_seen_{chart}"
        if st.session_state.get(seen_key) == signature:
            continue
        st.session_state[seen_key] = signature
        if points:
            chosen = (chart, points[0])
        elif chosen is not None and chosen[0] == chart:
            chosen = None  # the selection was cleared
        st.session_state[CHOSEN_KEY] = chosen
        st.session_state[PAGE_KEY] = 1
    return chosen


def _custom(point: Mapping[str, Any]) -> Any:
    custom = point.get("customdata")
    return custom[0] if isinstance(custom, list | tuple) and len(custom) == 1 else custom


def target_for(chart: str, point: Mapping[str, Any], filters: Filters) -> DrillTarget | None:
    """What a selected point stands for under these filters (None: a point that is no number)."""
    segments = (filters.countries, filters.devices, filters.categories)
    if chart in TRENDS:
        key = _custom(point)
        if not isinstance(key, str):
            return None
        if filters.grain == "hour":
            hour = datetime.fromisoformat(key)
            period = Period(hour.date(), hour.date(), hour, hour)
        else:
            day = date.fromisoformat(key[:10])
            period = Period(day, day)
        return DrillTarget(
            f"Events of {period.label()}", "Every event of the period and filters.", Filters.of(period, *segments)
        )
    if chart == "funnel":
        steps = list(FUNNEL_STEPS)
        index = point.get("point_index", point.get("point_number"))
        step = _custom(point) if _custom(point) in STEP_EVENT_TYPES else None
        if step is None and isinstance(index, int) and 0 <= index < len(steps):
            step = steps[index]
        if step is None:
            return None
        no_category = Filters.of(filters.period, filters.countries, filters.devices)
        return DrillTarget(
            f"{FUNNEL_STEPS[step]}: {STEP_EVENT_TYPES[step]} events of {filters.period.label()}",
            "The funnel counts sessions; these are their events of this step (each row names its session). "
            "Sessions have no category: the category filter does not apply.",
            no_category,
            event_type=STEP_EVENT_TYPES[step],
        )
    if chart == "top_products":
        custom = point.get("customdata")
        if not isinstance(custom, list | tuple) or len(custom) < 3:
            return None
        product_id = str(custom[2])
        # Top products are per day (gold.mart_product_daily): the events of the period's whole days.
        days = Filters(filters.start, filters.end, *segments)
        return DrillTarget(
            f"Events of product {product_id}, {days.period.label()}",
            "Views, carts and purchases of the product in the period's days and filters.",
            days,
            product_id=product_id,
        )
    return None


def drill_target(filters: Filters, selections: Mapping[str, Any]) -> DrillTarget | None:
    chosen = _chosen(selections)
    return None if chosen is None else target_for(chosen[0], chosen[1], filters)


def drill_panel(target: DrillTarget) -> None:
    st.subheader(target.title)
    st.caption(f"{target.note} Newest first, {DRILL_PAGE_ROWS} a page.")
    page = st.number_input("Page", min_value=1, max_value=DRILL_MAX_PAGES, step=1, key=PAGE_KEY)
    events = drill_events(
        target.filters, event_type=target.event_type, product_id=target.product_id, page=int(page) - 1
    )
    if events.empty:
        st.info("No events on this page.")
        return
    ui.table(events, key="overview_drill_events", file_name="shopstream_events.csv")
