"""Each page through Streamlit's AppTest against real PostgreSQL: values, filters, failures."""

from __future__ import annotations

import re
import time
import zlib
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import overview_data, periods
from dashboard.db import POOL_MAX_SIZE, get_pool
from dashboard.metrics import KPIS, format_value
from shopstream import database
from shopstream.embedded import free_port
from shopstream.services import Endpoints
from shopstream_assets_tests.conftest import TEST_PARTITIONS
from shopstream_assets_tests.dashboard.conftest import PAGES_DIR, Shop, fresh_database, point_dashboard_at
from shopstream_assets_tests.dashboard.expected import kpis_from_silver, scalar
from shopstream_assets_tests.streaming.conftest import produce_messages
from streaming.bronze_load import KafkaPositions, write_messages
from streaming.migrations import migrate
from streaming.simulator import Simulator

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
    _, last_day = overview_data.data_bounds()
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
    app.selectbox(key="overview_preset").set_value(periods.CUSTOM).run()
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


# How the Live page writes a span: (unit, seconds per unit, half the last digit shown, in seconds).
SPAN_UNITS = {"s": (1, 0.5), "min": (60, 30), "h": (3_600, 180), "d": (86_400, 4_320)}


def assert_span_shown(shown: str, moment: datetime, before: datetime, after: datetime, what: str) -> None:
    """``shown`` ("12 s ago", "3 min", ...) is the age of ``moment`` at some instant the page ran in."""
    found = re.fullmatch(r"([\d.]+) (s|min|h|d)(?: ago)?", shown)
    assert found, f"{what}: {shown!r} is not a span"
    per_unit, rounding = SPAN_UNITS[found[2]]
    seconds = float(found[1]) * per_unit
    youngest, oldest = (before - moment).total_seconds(), (after - moment).total_seconds()
    assert youngest - rounding <= seconds <= oldest + rounding, (
        f"{what}: shown {shown!r}, while the page ran it was {youngest:.1f}-{oldest:.1f} s"
    )


def database_now(url: str) -> datetime:
    return scalar(url, "select now()")


def test_live_stream_shows_bronze_batches_rejects_and_gold_freshness(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The health figures against the database's own facts, read apart from the page's queries:
    the newest ledger commit of the topic, the newest gold.refresh_log row, and the newest event
    time among the Bronze rows of the batches that refresh included. Each shown age must be what
    the database clock gave while the page ran, to the digit shown. A page dating the last
    batch by the topic's first batch fails here while ages are shown to the second (under
    90 s); one measuring freshness from the Gold refresh rather than from the newest event
    Gold holds fails too (both tried)."""
    point_dashboard_at(monkeypatch, shop.reader_url)
    before = database_now(shop.admin_url)
    app = run_page("live_stream")
    after = database_now(shop.admin_url)
    shown = metrics(app)
    assert shown["Ingest lag"] == "unknown"  # no broker configured in this test
    last_commit = scalar(
        shop.admin_url, "select max(committed_at) from bronze.ingest_batches where kafka_topic = %s", (shop.topic,)
    )
    assert_span_shown(shown["Last Bronze batch"], last_commit, before, after, "Last Bronze batch")
    # The last Gold refresh is the dbt run's start in gold.refresh_log.
    assert scalar(shop.admin_url, "select count(*) from gold.refresh_log") >= 1
    refreshed_at = scalar(shop.admin_url, "select max(refreshed_at) from gold.refresh_log")
    assert_span_shown(shown["Last Gold refresh"], refreshed_at, before, after, "Last Gold refresh")
    newest_in_gold = scalar(
        shop.admin_url,
        "select max(event_timestamp) from bronze.clickstream_events where batch_id <= ("
        " select gold_batch_id from gold.refresh_log order by refreshed_at desc limit 1)",
    )
    assert_span_shown(shown["Event-to-Gold freshness"], newest_in_gold, before, after, "Event-to-Gold freshness")
    assert len(app.get("plotly_chart")) == 2  # events per second, rejects by reason
    latest = app.dataframe[0].value
    newest = scalar(shop.admin_url, "select max(ingested_at) from bronze.clickstream_events")
    assert latest["ingested_at"].iloc[0] == newest


def test_live_stream_lag_is_what_the_broker_holds_beyond_bronze(
    admin_database_url: str, servers: Endpoints, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 messages on a real topic, the first 200 of them in Bronze: the lag is 100, known by
    construction, not by the page's formula; its help names the partition furthest behind. A lag
    counted from the broker's low watermarks (300), or treating Bronze's next offsets as the last
    ones written (100 plus one per partition, tried), fails here; so does a last batch dated wrongly."""
    name, admin_url = fresh_database(admin_database_url, "t_dashboard_lag")
    try:
        sent = Simulator(seed=29, bad_ratio=0.1).take(300)
        in_bronze = 200
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for key, value in zip(sent.keys, sent.values, strict=True):
            # Where the Bronze loader below places each message, so broker and Bronze offsets agree.
            by_partition[zlib.crc32(key) % TEST_PARTITIONS].append((key, value))
        for partition, messages in by_partition.items():
            keys, values = zip(*messages, strict=True)
            produce_messages(kafka_bootstrap, topic, values, keys=keys, partition=partition)
        with database.connect(admin_url, autocommit=True) as conn:
            positions = KafkaPositions(topic, TEST_PARTITIONS)
            write_messages(conn, sent.keys[:in_bronze], sent.values[:in_bronze], positions)
        behind = Counter(zlib.crc32(key) % TEST_PARTITIONS for key in sent.keys[in_bronze:])
        worst = max(sorted(behind), key=lambda partition: behind[partition])

        point_dashboard_at(monkeypatch, database.with_database(servers.dashboard_database_url, name), topic)
        monkeypatch.setenv("SHOPSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
        before = database_now(admin_url)
        app = run_page("live_stream")
        after = database_now(admin_url)
        lag = next(metric for metric in app.metric if metric.label == "Ingest lag")
        assert lag.value == f"{len(sent.values) - in_bronze} msgs"
        assert f"most behind: partition {worst} ({behind[worst]:,})" in lag.proto.help
        last_commit = scalar(admin_url, "select max(committed_at) from bronze.ingest_batches")
        assert_span_shown(metrics(app)["Last Bronze batch"], last_commit, before, after, "Last Bronze batch")
    finally:
        get_pool.clear()  # closes the pool before its database goes
        database.drop_database(admin_database_url, name)


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
