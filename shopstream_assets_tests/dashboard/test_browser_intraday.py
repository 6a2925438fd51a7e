"""The Overview's presets, drill-down and CSV downloads in a real browser (Chromium via Playwright).

On the seeded shop: each preset is picked from the period control and the page re-runs without an
exception; a click on the funnel's last step and on the best product's bar shows the events behind
them, and the downloaded CSV is exactly what the drill-down query returns, with auto-refresh on; a
table that every re-run replaces is still downloaded whole, each time. On a shop of its own
(one hour of events now and a year of daily events ending three days ago): a period with no data,
one hour of data and a whole year render every page without an exception.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from dashboard import overview_data, periods
from dashboard.periods import Filters
from shopstream import database
from shopstream.embedded import free_port
from shopstream.processes import spawn, stop_group
from shopstream.services import Endpoints
from shopstream_assets_tests.conftest import REPO_ROOT
from shopstream_assets_tests.dashboard.browser import ARTIFACTS, DEADLINE_MS, Dashboard, serve, wait_for_http
from shopstream_assets_tests.dashboard.conftest import Shop, fresh_database, point_dashboard_at
from shopstream_assets_tests.streaming.conftest import good_event
from shopstream_cli.bench.dashboard import build_silver_and_gold
from streaming.bronze_load import KafkaPositions, bulk_load_valid_messages
from streaming.events import encode_event

# The script run is over: Streamlit marks its root element with the script's state.
SCRIPT_DONE = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app !== null && app.dataset.testScriptState === "notRunning";
}"""


def wait_done(page: object) -> None:
    page.wait_for_timeout(300)  # let a click's re-run start before waiting for it to end
    page.wait_for_function(SCRIPT_DONE, timeout=DEADLINE_MS)


def no_exception(page: object, what: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, what
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0, what


def pick_preset(page: object, preset: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text="Period").click()
    page.get_by_role("option", name=preset, exact=True).click()
    wait_done(page)


def download_table(page: object, key: str, tmp_path: Path) -> pd.DataFrame:
    button = page.locator(f".st-key-{key}_csv button")
    button.wait_for(timeout=DEADLINE_MS)
    with page.expect_download(timeout=DEADLINE_MS) as started:
        button.click()
    path = tmp_path / started.value.suggested_filename
    started.value.save_as(path)
    return pd.read_csv(io.BytesIO(path.read_bytes()), dtype=str, keep_default_na=False)


def click_bar(page: object, chart: int, bar: int) -> None:
    """Click one bar (or funnel step) of the page's ``chart``-th Plotly chart, in drawing order."""
    plot = page.locator('[data-testid="stPlotlyChart"]').nth(chart)
    plot.scroll_into_view_if_needed()
    bars = plot.locator("g.trace.bars g.point > path")
    bars.nth(bar).click(force=True)
    wait_done(page)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A query's rows as the CSV writes them (pandas' to_csv), read back as text."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)), dtype=str, keep_default_na=False)


def test_every_preset_renders_by_its_grain(dashboard: Dashboard) -> None:
    page = dashboard.browser.new_page(viewport={"width": 1600, "height": 2200})
    try:
        page.goto(dashboard.base)
        page.wait_for_function(SCRIPT_DONE, timeout=DEADLINE_MS)
        for preset in periods.PRESETS:
            pick_preset(page, preset)
            grain = "hour" if preset in (periods.LAST_15_MINUTES, periods.LAST_HOUR, periods.TODAY) else None
            if preset in (periods.LAST_7_DAYS, periods.LAST_30_DAYS):
                grain = "day"
            # Waited for, not read once: on a busy machine the caption of the preset before can
            # still be on the page when the script state says the run is over.
            caption = page.get_by_text(re.compile(rf"^Showing .+, by {grain or '(hour|day)'}\.$"))
            caption.wait_for(timeout=DEADLINE_MS)
            no_exception(page, preset)
            if preset == periods.TODAY:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard-overview-today.png"), full_page=True)
    finally:
        page.close()


def test_funnel_and_product_selections_show_their_events_and_the_csv_is_the_query(
    dashboard: Dashboard, shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_dashboard_at(monkeypatch, shop.reader_url)
    page = dashboard.browser.new_page(viewport={"width": 1600, "height": 2200}, accept_downloads=True)
    try:
        page.goto(dashboard.base)
        page.wait_for_function(SCRIPT_DONE, timeout=DEADLINE_MS)
        # Auto-refresh on, at its fastest (the sidebar's "Every", one step down: 5 s -> 2 s): the
        # selections, the drill-down's page and its downloads hold while the page re-runs.
        slider = page.get_by_role("slider")
        slider.focus()
        slider.press("ArrowLeft")
        wait_done(page)
        pick_preset(page, periods.LAST_7_DAYS)
        week = Filters.of(periods.resolve(periods.LAST_7_DAYS, datetime.now(UTC)))

        # The funnel's third step: the period's purchase events, newest first.
        click_bar(page, chart=2, bar=2)
        page.get_by_role("heading", name=re.compile(r"^Purchased: purchase events")).wait_for(timeout=DEADLINE_MS)
        no_exception(page, "funnel drill-down")
        shown = download_table(page, "overview_drill_events", tmp_path)
        expected = as_text(overview_data.drill_events(week, event_type="purchase"))
        assert len(shown) == len(expected) > 0
        pd.testing.assert_frame_equal(shown, expected)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview-drill-down.png"), full_page=True)

        # The best product (the top bar, drawn last): its events in the period's days.
        click_bar(page, chart=3, bar=-1)
        heading = page.get_by_role("heading", name=re.compile(r"^Events of product "))
        heading.wait_for(timeout=DEADLINE_MS)
        no_exception(page, "product drill-down")
        product_id = re.search(r"product (\S+),", heading.inner_text()).group(1)
        assert product_id == overview_data.top_products(week, limit=1).iloc[0]["product_id"]
        shown = download_table(page, "overview_drill_events", tmp_path)
        days = Filters(week.start, week.end)
        expected = as_text(overview_data.drill_events(days, product_id=product_id))
        assert len(shown) == len(expected) > 0
        pd.testing.assert_frame_equal(shown, expected)
    finally:
        page.close()


# A table that the auto-refresh replaces with other rows on every re-run, twice a second (the
# dashboard's tables change as Bronze and Gold move; the sidebar's fastest refresh is 2 s).
CHURNING_TABLE = """
import time

import pandas as pd
import streamlit as st

from dashboard import ui


def churning_table() -> None:
    version = str(time.time_ns())
    ui.table(pd.DataFrame({"version": [version] * 2000, "row": range(2000)}), key="churning", file_name="churning.csv")


st.fragment(churning_table, run_every=0.5)()
"""


def test_a_download_survives_the_auto_refresh_replacing_its_table(dashboard: Dashboard, tmp_path: Path) -> None:
    """Twenty downloads while the table changes under them: each is served whole, a version the page showed.

    Streamlit deletes a download's file once re-runs have shown other rows; a browser a run behind
    then requests a file that is gone and Chromium cancels the download. Without the kept copies of
    a table's earlier versions (``dashboard.ui.table``), this test saw cancelled downloads.
    """
    script = tmp_path / "churning_table.py"
    script.write_text(CHURNING_TABLE)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true"]
    command += ["--server.port", str(port), "--browser.gatherUsageStats", "false"]
    process = spawn(command, env=env, log_path=tmp_path / "streamlit.log", cwd=tmp_path)
    page = dashboard.browser.new_page(accept_downloads=True)
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_for_http(base)
        page.goto(base)
        versions = set()
        for attempt in range(20):
            with page.expect_download(timeout=DEADLINE_MS) as started:
                page.locator(".st-key-churning_csv button").click()
            assert started.value.failure() is None, f"download {attempt + 1}: {started.value.failure()}"
            path = tmp_path / f"churning_{attempt}.csv"
            started.value.save_as(path)
            rows = pd.read_csv(path, dtype=str)
            assert rows["row"].tolist() == [str(row) for row in range(2000)]
            assert rows["version"].nunique() == 1
            versions.add(rows["version"].iloc[0])
            page.wait_for_timeout(130 * (attempt % 5))  # clicks at every phase of the re-runs
        assert len(versions) > 1, "the table never changed: nothing was tested"
    finally:
        page.close()
        stop_group(process, timeout=20)


def _sparse_shop_events(now: datetime) -> list[bytes]:
    """Twelve events in the current hour and one a day for a year ending three days ago."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    moments = [hour + timedelta(minutes=minute) for minute in range(0, min(now.minute + 1, 60), 5)]
    moments += [hour - timedelta(days=days) for days in range(3, 3 + 365)]
    return [
        encode_event(
            good_event(
                event_id=f"EVT_sparse_{index}",
                session_id=f"SESSION_sparse_{index}",
                user_id=f"USER_sparse_{index % 7}",
                event_type=("page_view", "add_to_cart", "purchase")[index % 3],
                event_timestamp=moment.isoformat().replace("+00:00", "Z"),
            )
        )
        for index, moment in enumerate(moments)
    ]


@pytest.fixture(scope="module")
def sparse_dashboard(
    dashboard: Dashboard, servers: Endpoints, admin_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """A second `shopstream dashboard` on a sparse shop, driven by the same Chromium."""
    name, url = fresh_database(admin_database_url, "t_dashboard_sparse")
    try:
        events = _sparse_shop_events(datetime.now(UTC))
        with database.connect(url, autocommit=True) as conn:
            bulk_load_valid_messages(conn, [b"sparse"] * len(events), events, KafkaPositions("sparse"))
        build_silver_and_gold(url, progress=lambda message: None)
        reader_url = database.with_database(servers.dashboard_database_url, name)
        with serve(reader_url, "sparse-topic", tmp_path_factory.mktemp("sparse")) as base:
            yield Dashboard(base, dashboard.browser)
    finally:
        database.drop_database(admin_database_url, name)


def test_no_data_one_hour_and_a_year_render_every_page(sparse_dashboard: Dashboard) -> None:
    page = sparse_dashboard.browser.new_page(viewport={"width": 1600, "height": 2200})
    try:
        page.goto(sparse_dashboard.base)
        page.wait_for_function(SCRIPT_DONE, timeout=DEADLINE_MS)
        # Yesterday: no events at all; the last hour: one hour of data; a custom year.
        for preset in (periods.YESTERDAY, periods.LAST_HOUR, periods.CUSTOM):
            pick_preset(page, preset)
            no_exception(page, preset)
        # The range's start, typed into its year, month and day fields (a react-aria date field).
        today = datetime.now(UTC).date()
        start = today - timedelta(days=366)
        page.get_by_role("spinbutton", name="year, Days (UTC) start date").click()
        page.keyboard.type(f"{start:%Y%m%d}")
        # The field commits its value when it loses focus.
        page.get_by_role("heading", name="Overview").click()
        wait_done(page)
        no_exception(page, "a year")
        year = periods.Period(today - timedelta(days=366), today)
        page.get_by_text(f"Showing {year.label()}, by day.", exact=True).wait_for(timeout=DEADLINE_MS)
        assert page.locator('[data-testid="stPlotlyChart"]').count() == 4
        for path in ("user_behavior", "live_stream"):
            page.goto(sparse_dashboard.base + path)
            page.wait_for_function(SCRIPT_DONE, timeout=DEADLINE_MS)
            no_exception(page, path)
    finally:
        page.close()
