"""Each page through Streamlit's AppTest against real PostgreSQL: values, filters, failures."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import queries
from dashboard.db import POOL_MAX_SIZE, get_pool
from dashboard.metrics import KPIS, format_value
from shopstream import database
from shopstream.embedded import free_port
from shopstream.services import Endpoints
from shopstream_assets_tests.dashboard.conftest import PAGES_DIR, Shop, fresh_database, point_dashboard_at
from shopstream_assets_tests.dashboard.expected import kpis_from_silver, scalar
from streaming.migrations import migrate

PAGES = ("overview", "user_behavior", "live_stream")
RUN_TIMEOUT = 60


def run_page(page: str) -> AppTest:
    app = AppTest.from_file(str(PAGES_DIR / f"{page}.py"), default_timeout=RUN_TIMEOUT)
    app.run()
    assert not app.exception, [exception.message for exception in app.exception]
    return app


def metrics(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def messages(app: AppTest) -> str:
    return " ".join(str(element.value) for element in [*app.error, *app.info, *app.warning])


def test_overview_shows_the_database_kpis_and_filters_change_them(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    app = run_page("overview")
    _, last_day = queries.data_bounds()
    start = last_day - timedelta(days=6)
    expected = kpis_from_silver(shop.admin_url, start, last_day)
    shown = metrics(app)
    for kpi in KPIS:
        assert shown[kpi.label] == format_value(kpi, expected[kpi.key]), kpi.key
    assert len(app.get("plotly_chart")) == 4  # revenue, conversion, funnel, top products

    app.multiselect(key="overview_countries").set_value(["Ghana"]).run()
    assert not app.exception
    ghana = kpis_from_silver(shop.admin_url, start, last_day, "Ghana")
    filtered = metrics(app)
    for kpi in KPIS:
        assert filtered[kpi.label] == format_value(kpi, ghana[kpi.key]), kpi.key
    assert filtered["Revenue"] != shown["Revenue"]

    # Country, device and category together; the funnel says sessions ignore the category.
    app.multiselect(key="overview_devices").set_value(["Mobile"])
    app.multiselect(key="overview_categories").set_value(["Fashion"]).run()
    assert not app.exception
    combined = kpis_from_silver(shop.admin_url, start, last_day, "Ghana", devices=["Mobile"], categories=["Fashion"])
    shown_combined = metrics(app)
    for kpi in KPIS:
        assert shown_combined[kpi.label] == format_value(kpi, combined[kpi.key]), kpi.key
    assert "the category filter does not apply to sessions" in " ".join(str(c.value) for c in app.caption)

    # A one-day period: the KPIs are that day's row of the Gold mart.
    app.multiselect(key="overview_devices").set_value([])
    app.multiselect(key="overview_categories").set_value([])
    app.multiselect(key="overview_countries").set_value([]).run()
    app.date_input(key="overview_period").set_value((last_day, last_day)).run()
    one_day = kpis_from_silver(shop.admin_url, last_day, last_day)
    assert metrics(app)["Conversion rate"] == format_value(KPIS[1], one_day["conversion_rate"])


def test_user_behavior_shows_tiers_and_ranked_hot_leads(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    app = run_page("user_behavior")
    users = scalar(shop.admin_url, "select count(*) from gold.mart_user_behavior")
    leads = scalar(shop.admin_url, "select count(*) from gold.mart_hot_leads")
    shown = metrics(app)
    assert shown["Customers"] == f"{users:,}"
    assert shown["Hot leads"] == f"{leads:,}"
    assert len(app.get("plotly_chart")) == 4
    tables = app.dataframe
    hot_leads = tables[-1].value
    assert list(hot_leads["lead_rank"][:3]) == [1, 2, 3]
    best = scalar(shop.admin_url, "select user_id from gold.mart_hot_leads where lead_rank = 1")
    assert hot_leads["user_id"].iloc[0] == best
    assert any("Download" in str(button.proto.label) for button in app.get("download_button"))


def test_live_stream_shows_bronze_batches_rejects_and_gold_freshness(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    app = run_page("live_stream")
    shown = metrics(app)
    assert shown["Last Bronze batch"].endswith("ago")
    assert shown["Ingest lag"] == "unknown"  # no broker configured in this test
    assert shown["Event-to-Gold freshness"] != "–"
    # The last Gold refresh is the dbt run's start in gold.refresh_log, seconds to minutes ago.
    assert shown["Last Gold refresh"].endswith("ago")
    assert scalar(shop.admin_url, "select count(*) from gold.refresh_log") >= 1
    assert len(app.get("plotly_chart")) == 2  # events per second, rejects by reason
    latest = app.dataframe[0].value
    newest = scalar(shop.admin_url, "select max(ingested_at) from bronze.clickstream_events")
    assert latest["ingested_at"].iloc[0] == newest


def test_an_empty_database_says_so_on_every_page(admin_database_url: str, servers: Endpoints, monkeypatch) -> None:
    name, url = fresh_database(admin_database_url, "t_dashboard_empty")
    try:
        point_dashboard_at(monkeypatch, database.with_database(servers.dashboard_database_url, name))
        for page in ("overview", "user_behavior"):
            app = run_page(page)
            assert "No data yet" in messages(app) and "not built" in messages(app), page
            assert not app.error
        live = run_page("live_stream")
        assert "Bronze has no events yet" in messages(live)
        assert metrics(live)["Last Bronze batch"] == "none yet"
    finally:
        database.drop_database(admin_database_url, name)


def test_an_unreachable_database_says_so_and_a_database_that_appears_is_picked_up(
    admin_database_url: str, servers: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = database.url_parts(servers.dashboard_database_url)
    closed_port = database.make_url("127.0.0.1", free_port(), parts.user, parts.password, "shopstream")
    point_dashboard_at(monkeypatch, closed_port)
    for page in PAGES:
        app = run_page(page)
        assert app.error and "Database unavailable" in app.error[0].value, page
        assert "tries again every 5 s" in app.error[0].value

    # A database that does not exist yet, then does: the same pool recovers without a restart.
    name = f"t_dashboard_late_{int(time.time())}"
    point_dashboard_at(monkeypatch, database.with_database(servers.dashboard_database_url, name))
    app = run_page("overview")
    assert app.error and "Database unavailable" in app.error[0].value
    try:
        database.ensure_database(admin_database_url, name)
        migrate(database.with_database(admin_database_url, name))
        deadline = time.monotonic() + 30
        while True:
            app.run()
            if not app.error or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not app.error, app.error[0].value
        assert "No data yet" in messages(app)
    finally:
        get_pool.clear()  # closes the pool before its database goes
        database.drop_database(admin_database_url, name)


def test_500_auto_refreshes_keep_the_pool_bounded(
    admin_database_url: str, servers: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 runs of the auto-refreshing fragment with cold caches, so every run queries PostgreSQL.

    A migrated database without Gold: Bronze queries succeed and the Gold one fails with
    "relation does not exist" on every refresh, so connections must come back from both.
    """
    name, admin_url = fresh_database(admin_database_url, "t_dashboard_refresh")
    reader_url = database.with_database(servers.dashboard_database_url, name)
    count_connections = (
        "select count(*) from pg_stat_activity where application_name = 'shopstream-dashboard' and datname = %s"
    )
    try:
        point_dashboard_at(monkeypatch, reader_url)
        app = run_page("live_stream")
        requests_before = get_pool(reader_url).get_stats().get("requests_num", 0)
        peak = 0
        for refresh in range(500):
            st.cache_data.clear()
            app.run()
            if refresh % 50 == 0:
                assert not app.exception and not app.error
                peak = max(peak, scalar(admin_url, count_connections, (name,)))
        stats = get_pool(reader_url).get_stats()
        assert stats["requests_num"] - requests_before >= 500 * 6  # the queries really ran
        assert stats["pool_size"] <= POOL_MAX_SIZE
        assert peak <= POOL_MAX_SIZE
        assert scalar(admin_url, count_connections, (name,)) <= POOL_MAX_SIZE
    finally:
        get_pool.clear()
        database.drop_database(admin_database_url, name)
