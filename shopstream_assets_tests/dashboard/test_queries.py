"""Queries, KPI formulas and charts against the seeded shop (no Streamlit runtime)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from dashboard import charts, overview_data, queries
from dashboard.metrics import KPIS, PeriodCounts, kpi_values
from dashboard.periods import Filters
from shopstream import database
from shopstream_assets_tests.dashboard.conftest import Shop, point_dashboard_at
from shopstream_assets_tests.dashboard.expected import kpis_from_silver, scalar, top_products_from_silver


def close(actual: float | None, expected: float | None) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-9)


def test_kpi_formulas_equal_the_gold_daily_mart(shop: Shop) -> None:
    """dashboard.metrics and dbt's mart_daily_metrics are two definitions of one formula set."""
    with database.connect(shop.admin_url) as conn, conn.cursor() as cursor:
        cursor.execute("select *, unique_users as user_days from gold.mart_daily_metrics order by metric_date")
        names = [column.name for column in cursor.description]
        days = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    assert len(days) >= 10
    for day in days:
        mine = kpi_values(PeriodCounts.from_mapping(day))
        for kpi in KPIS:
            assert close(mine[kpi.key], day[kpi.key]), (day["metric_date"], kpi.key, mine[kpi.key], day[kpi.key])


def test_selecting_every_filter_value_gives_the_daily_marts(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """The segment marts summed over every cell are the daily marts, users included."""
    point_dashboard_at(monkeypatch, shop.reader_url)
    _, last_day = overview_data.data_bounds()
    period = Filters(last_day - timedelta(days=6), last_day)
    options = overview_data.filter_options()
    assert options["countries"] and options["devices"] and options["categories"]
    everything = Filters(
        period.start, period.end, tuple(options["countries"]), tuple(options["devices"]), tuple(options["categories"])
    )
    assert overview_data.period_counts(everything) == overview_data.period_counts(period)
    assert overview_data.funnel(everything) == overview_data.funnel(period)

    with database.connect(shop.admin_url) as conn:
        daily = conn.execute(
            "select coalesce(sum(events), 0), coalesce(sum(revenue), 0), coalesce(sum(unique_users), 0),"
            " coalesce(sum(sessions), 0), coalesce(sum(abandoned_cart_sessions), 0)"
            " from gold.mart_daily_metrics where metric_date between %s and %s",
            (period.start, period.end),
        ).fetchone()
        funnel = conn.execute(
            "select coalesce(sum(viewed_sessions), 0), coalesce(sum(carted_sessions), 0),"
            " coalesce(sum(purchased_sessions), 0)"
            " from gold.mart_conversion_funnel where metric_date between %s and %s",
            (period.start, period.end),
        ).fetchone()
    counts = overview_data.period_counts(period)
    mine = (counts.events, counts.revenue, counts.user_days, counts.sessions, counts.abandoned_cart_sessions)
    assert mine == (daily[0], float(daily[1]), daily[2], daily[3], daily[4])
    assert tuple(overview_data.funnel(period).values()) == funnel


# (countries, devices, categories): single and combined filters. The simulator's users
# switch devices and browse several categories a day, so user-days span cells.
FILTER_CASES = (
    ((), (), ()),
    (("Ghana",), (), ()),
    ((), ("Desktop",), ()),
    ((), (), ("Electronics",)),
    ((), (), ("Electronics", "Fashion")),
    (("Nigeria",), ("Mobile", "Tablet"), ("Fashion",)),
)


@pytest.mark.parametrize(("countries", "devices", "categories"), FILTER_CASES)
def test_filtered_overview_equals_an_independent_silver_computation(
    shop: Shop,
    monkeypatch: pytest.MonkeyPatch,
    countries: tuple[str, ...],
    devices: tuple[str, ...],
    categories: tuple[str, ...],
) -> None:
    """KPIs, funnel and top products of a filtered period: Gold queries = Silver, recomputed."""
    point_dashboard_at(monkeypatch, shop.reader_url)
    _, last_day = overview_data.data_bounds()
    start = last_day - timedelta(days=6)
    filters = Filters(start, last_day, countries, devices, categories)
    counts = overview_data.period_counts(filters)
    assert not counts.is_empty
    mine = kpi_values(counts)
    assert len(countries) <= 1
    country = countries[0] if countries else None
    expected = kpis_from_silver(shop.admin_url, start, last_day, country, devices=devices, categories=categories)
    for kpi in KPIS:
        assert close(mine[kpi.key], expected[kpi.key]), (kpi.key, mine[kpi.key], expected[kpi.key])
    steps = overview_data.funnel(filters)
    for step in ("viewed_sessions", "carted_sessions", "purchased_sessions"):
        assert steps[step] == expected[step], step

    products = overview_data.top_products(filters)
    want = top_products_from_silver(
        shop.admin_url, start, last_day, countries=countries, devices=devices, categories=categories
    )
    assert list(products["product_id"]) == list(want["product_id"])
    assert [float(value) for value in products["revenue"]] == [float(value) for value in want["revenue"]]
    assert list(products["purchases"]) == list(want["purchases"])
    if categories:
        assert set(products["product_category"]) <= set(categories)


def test_top_products_follow_the_period(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    first_day, last_day = overview_data.data_bounds()
    whole = overview_data.top_products(Filters(first_day, last_day), limit=100)
    one_day = overview_data.top_products(Filters(last_day, last_day), limit=100)
    assert float(one_day["revenue"].sum()) < float(whole["revenue"].sum())
    # Over all days the product-day mart adds up to the all-time product mart.
    all_time = scalar(shop.admin_url, "select sum(revenue) from gold.mart_product_performance")
    assert float(whole["revenue"].sum()) == float(all_time)


INJECTIONS = (
    "Nigeria'); drop table gold.mart_daily_metrics; --",
    "x' or '1'='1",
    'Electronics"; delete from silver.stg_clickstream_events; --',
)


def test_filter_values_reach_postgresql_only_as_parameters(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with the owner role (which could drop tables), an injected filter is just a value."""
    point_dashboard_at(monkeypatch, shop.admin_url)
    _, last_day = overview_data.data_bounds()
    before = scalar(shop.admin_url, "select count(*) from silver.stg_clickstream_events")
    for attack in INJECTIONS:
        filters = Filters(last_day - timedelta(days=6), last_day, (attack,), (attack,), (attack,))
        assert overview_data.period_counts(filters).is_empty
        assert overview_data.funnel(filters) == {"viewed_sessions": 0, "carted_sessions": 0, "purchased_sessions": 0}
        assert overview_data.top_products(filters).empty
    assert scalar(shop.admin_url, "select count(*) from gold.mart_daily_metrics") > 0
    assert scalar(shop.admin_url, "select count(*) from silver.stg_clickstream_events") == before


def test_the_reader_role_cannot_write(shop: Shop) -> None:
    with pytest.raises(Exception, match="read-only|permission denied"), database.connect(shop.reader_url) as conn:
        conn.execute("delete from gold.mart_hot_leads")


def test_every_chart_builds_from_real_query_results(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    _, last_day = overview_data.data_bounds()
    filters = Filters(last_day - timedelta(days=6), last_day)
    daily = charts.daily_kpis(overview_data.daily_counts(filters))
    figures = [
        charts.revenue_trend(daily),
        charts.conversion_trend(daily),
        charts.funnel(overview_data.funnel(filters)),
        charts.top_products(overview_data.top_products(filters)),
        charts.rfm_tiers(queries.rfm_tiers()),
        charts.rfm_scores(queries.rfm_scores()),
        charts.rfm_scatter(queries.rfm_users()),
        charts.lifecycle(queries.lifecycle_stages()),
        charts.events_per_second(queries.events_per_second(24 * 60)),
        charts.rejects_by_reason(queries.rejects_by_reason(shop.topic)),
    ]
    for figure in figures:
        assert figure.data, figure.layout.title.text
    tiers = queries.rfm_tiers()
    assert set(tiers["rfm_tier"]) <= set(charts.TIER_ORDER)
    assert int(tiers["users"].sum()) == scalar(shop.admin_url, "select count(*) from gold.mart_user_behavior")


def test_the_newest_events_are_the_last_batches_read_through_the_batch_id_index(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live Stream's newest rows: arrival order is batch_id order (no ingested_at index to keep)."""
    point_dashboard_at(monkeypatch, shop.reader_url)
    latest = queries.latest_events(limit=20)
    twentieth_newest = scalar(
        shop.admin_url, "select ingested_at from bronze.clickstream_events order by ingested_at desc offset 19 limit 1"
    )
    assert len(latest) == 20
    assert (latest["ingested_at"] >= twentieth_newest).all()
    with database.connect(shop.reader_url) as conn:
        plan = "\n".join(row[0] for row in conn.execute("explain " + queries.LATEST_EVENTS, {"limit": 20}))
    assert "clickstream_events_batch_id_idx" in plan and "Sort" not in plan, plan
