"""The Overview's intraday grain and its drill-down against the seeded shop (no Streamlit runtime):
an hourly period sums to the daily one, and the events behind a number are exactly the events
that number counts, newest first, a bounded page at a time."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from dashboard import charts, overview_data, periods
from dashboard.drill import STEP_EVENT_TYPES
from dashboard.metrics import kpi_values
from dashboard.periods import Filters
from shopstream_assets_tests.dashboard.conftest import Shop, point_dashboard_at
from shopstream_assets_tests.dashboard.expected import kpis_from_silver


def all_pages(filters: Filters, **which: str) -> pd.DataFrame:
    pages = []
    for page in range(overview_data.DRILL_MAX_PAGES):
        rows = overview_data.drill_events(filters, page=page, **which)
        assert len(rows) <= overview_data.DRILL_PAGE_ROWS
        pages.append(rows)
        if len(rows) < overview_data.DRILL_PAGE_ROWS:
            return pd.concat(pages, ignore_index=True)
    raise AssertionError("more events than the drill-down pages through: narrow the test's period")


def test_a_day_by_the_hour_sums_to_the_day(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    _, last_day = overview_data.data_bounds()
    for countries in ((), ("Ghana",)):
        daily = Filters(last_day - timedelta(days=1), last_day, countries)
        hourly = Filters.of(periods.days(daily.start, daily.end), countries)
        assert (daily.grain, hourly.grain) == ("day", "hour")
        by_day, by_hour = overview_data.period_counts(daily), overview_data.period_counts(hourly)
        # Every count but users: a user-day can hold several user-hours.
        for name in ("events", "page_views", "add_to_carts", "purchases", "units_sold", "sessions"):
            assert getattr(by_hour, name) == getattr(by_day, name), (countries, name)
        assert by_hour.revenue == pytest.approx(by_day.revenue, abs=1e-6)
        assert by_hour.user_days >= by_day.user_days
        assert overview_data.funnel(hourly) == overview_data.funnel(daily)
        assert by_day.events > 0
    # The same definitions as Silver, straight from the events (expected.py), for one day.
    one_day = Filters.of(periods.days(last_day, last_day))
    expected = kpis_from_silver(shop.admin_url, last_day, last_day)
    shown = kpi_values(overview_data.period_counts(one_day))
    for key in ("conversion_rate", "cart_rate", "checkout_rate", "cart_abandonment_rate", "average_order_value"):
        assert shown[key] == pytest.approx(expected[key], rel=1e-9), key


def test_an_hourly_trend_draws_each_hour_once_with_one_label(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    _, last_day = overview_data.data_bounds()
    hours = overview_data.trend_counts(Filters.of(periods.days(last_day, last_day)))
    trend = charts.daily_kpis(hours)
    figure = charts.revenue_trend(trend, "hour")
    labels = list(figure.data[0].x)
    assert len(labels) == len(set(labels)) == len(hours) >= 1
    assert figure.layout.xaxis.type == "category"
    single = charts.revenue_trend(trend.head(1), "hour")
    assert list(single.data[0].x) == labels[:1] and len(single.data[1].x) == 1


def test_the_events_behind_a_number_are_the_events_it_counts(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    _, last_day = overview_data.data_bounds()
    day = Filters.of(periods.days(last_day, last_day))
    counts = overview_data.period_counts(day)
    for event_type, count in (("purchase", counts.purchases), ("add_to_cart", counts.add_to_carts)):
        rows = all_pages(day, event_type=event_type)
        assert len(rows) == count, event_type
        assert set(rows["event_type"]) <= {event_type}
        ordered = rows.sort_values(["event_timestamp", "event_id"], ascending=False, ignore_index=True)
        assert rows["event_id"].tolist() == ordered["event_id"].tolist()  # newest first
    assert set(STEP_EVENT_TYPES.values()) == {"page_view", "add_to_cart", "purchase"}

    # A product bar: the product's purchases and views in the period's days.
    products = overview_data.top_products(day, limit=1)
    product = products.iloc[0]
    rows = all_pages(day, product_id=product["product_id"])
    assert (rows["event_type"] == "purchase").sum() == product["purchases"]
    assert (rows["event_type"] == "page_view").sum() == product["views"]

    # One hour of a trend: that hour's events under a country filter.
    hours = overview_data.trend_counts(Filters.of(periods.days(last_day, last_day), ("Ghana",)))
    busiest = hours.sort_values("events").iloc[-1]
    hour_start = pd.Timestamp(busiest["period_start"]).to_pydatetime()
    that_hour = periods.Period(hour_start.date(), hour_start.date(), hour_start, hour_start)
    one_hour = Filters.of(that_hour, ("Ghana",))
    rows = all_pages(one_hour)
    assert len(rows) == busiest["events"] and set(rows["country"]) == {"Ghana"}

    # Bounded: a page is at most DRILL_PAGE_ROWS rows, and a page past the last is the last allowed.
    assert len(overview_data.drill_events(day, page=10_000)) <= overview_data.DRILL_PAGE_ROWS
