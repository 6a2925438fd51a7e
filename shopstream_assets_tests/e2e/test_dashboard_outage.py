"""Fault: the dashboard's PostgreSQL stopped mid-session, then started again (the fault tests' own server)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.logger import set_log_level
from streamlit.testing.v1 import AppTest

from shopstream_assets_tests.e2e.fault_stack import FaultCase, FaultStack, quiet
from shopstream_assets_tests.e2e.helpers import Report, wait_for
from shopstream_cli.bench.dashboard import seed_shop

pytestmark = [pytest.mark.slow, pytest.mark.same_worker("fault_stack"), pytest.mark.timeout(900)]


DASHBOARD_PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "app_pages"


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    set_log_level(logging.ERROR)
    for name in list(os.environ):
        if name.startswith("SHOPSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOPSTREAM_HOME", str(tmp_path / "home"))
    st.cache_data.clear()
    yield
    st.cache_data.clear()
    from dashboard.db import get_pool

    get_pool.clear()  # closes the pools before their database goes


LIVE_FIGURES_INDEPENDENT_OF_THE_CLOCK = frozenset({"Ingest lag"})


def test_dashboard_database_stopped_mid_session_then_back(
    fault_stack: FaultStack, fault_case: FaultCase, dashboard_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both pages survive the outage and come back with every figure; the figures that do not move with the
    clock are as before. (Without the broker's address the Live page's lag read "unknown": checked to fail.)"""
    report = Report("fault: the dashboard's PostgreSQL stopped mid-session, then started again")
    case = fault_case
    seed_shop(case.database_url, topic=case.topic, history_rows=3_000, history_days=3, live_messages=300,
              live_rate=10.0, progress=quiet)  # fmt: skip
    monkeypatch.setenv("SHOPSTREAM_DASHBOARD_DATABASE_URL", case.reader_url)
    monkeypatch.setenv("SHOPSTREAM_TOPIC", case.topic)
    monkeypatch.setenv("SHOPSTREAM_KAFKA_BOOTSTRAP", fault_stack.bootstrap)  # the Live page's lag is a real figure
    apps = {
        page: AppTest.from_file(str(DASHBOARD_PAGES / f"{page}.py"), default_timeout=90)
        for page in ("overview", "live_stream")
    }
    healthy: dict[str, dict[str, str]] = {}
    for page, app in apps.items():
        app.run()
        report.held(f"{page}: renders with data", not app.exception and not app.error, str(app.exception or app.error))
        healthy[page] = {metric.label: metric.value for metric in app.metric}
    report.tried("opened the Overview and Live Stream pages (one session each, pooled connections)")

    fault_stack.postgres.stop(progress=quiet)
    report.tried("stopped PostgreSQL (pg_ctl stop -m fast) with the sessions open")
    st.cache_data.clear()  # as when the cached results' TTL runs out
    for page, app in apps.items():
        app.run()
        error = app.error[0].value if app.error else ""
        report.held(f"{page}: no exception while the database is down", not app.exception, str(app.exception))
        report.held(f"{page}: says 'Database unavailable'", "Database unavailable" in error, error or "no error shown")

    fault_stack.postgres.start(progress=quiet)
    report.tried("started PostgreSQL again")
    for page, app in apps.items():

        def recovered(app: AppTest = app) -> bool:
            st.cache_data.clear()
            app.run()
            return not app.error and not app.exception

        wait_for(recovered, timeout=90, interval=1, what=f"{page} to recover")
        now = {metric.label: metric.value for metric in app.metric}
        report.held(
            f"{page}: the same session recovered without a restart, every figure back",
            set(now) == set(healthy[page]) and all(value not in ("", "unknown") for value in now.values()),
            f"{now}",
        )
        # Nothing was ingested meanwhile: the Overview's figures, and the Live page's lag, are as before
        # (the Live page's rate and ages move with the clock). A page with no figure to compare fails.
        stable = {
            label: value
            for label, value in healthy[page].items()
            if page == "overview" or label in LIVE_FIGURES_INDEPENDENT_OF_THE_CLOCK
        }
        report.held(
            f"{page}: shows the same figures as before",
            bool(stable) and all(now.get(label) == value for label, value in stable.items()),
            f"{now} vs {healthy[page]}",
        )
    report.finish()
