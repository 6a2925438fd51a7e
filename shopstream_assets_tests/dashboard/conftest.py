"""A shop database seeded once for the dashboard tests, the way the pipeline fills it.

History by COPY and recent traffic (with broken, duplicate and repaired messages) through
the stream's own writer, then the real dbt project: see
``shopstream_cli.bench.dashboard.seed_shop``, which the benchmark uses too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from streamlit.logger import set_log_level

from shopstream import database
from shopstream.services import Endpoints
from shopstream_assets_tests.dashboard.browser import Dashboard, chromium, serve
from shopstream_cli.bench.dashboard import seed_shop
from streaming.migrations import migrate

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES_DIR = REPO_ROOT / "dashboard" / "app_pages"
SHOP_TOPIC = "dashboard-test-clickstream"


@dataclass(frozen=True)
class Shop:
    admin_url: str  # the owner role: for the tests' own expected values
    reader_url: str  # the dashboard's read-only role
    topic: str


def fresh_database(admin_database_url: str, prefix: str) -> tuple[str, str]:
    """(name, url) of a new, migrated database."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    migrate(url)
    return name, url


@pytest.fixture(scope="session")
def shop(servers: Endpoints, admin_database_url: str) -> Iterator[Shop]:
    name, url = fresh_database(admin_database_url, "t_dashboard_shop")
    try:
        seed_shop(
            url,
            topic=SHOP_TOPIC,
            history_rows=20_000,
            history_days=10,
            live_messages=1_500,
            live_rate=10.0,
            bad_ratio=0.05,
            progress=lambda message: None,
        )
        yield Shop(url, database.with_database(servers.dashboard_database_url, name), SHOP_TOPIC)
    finally:
        database.drop_database(admin_database_url, name)


@pytest.fixture(scope="session")
def dashboard(shop: Shop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """`shopstream dashboard` on the shop's read-only URL, and a Chromium to drive it: one of each for
    every browser test (a Streamlit server and a browser cost seconds of CPU each to start)."""
    with serve(shop.reader_url, shop.topic, tmp_path_factory.mktemp("dashboard")) as base, chromium() as browser:
        yield Dashboard(base, browser)


@pytest.fixture(autouse=True)
def quiet_streamlit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Streamlit chatter, no inherited SHOPSTREAM_* settings, cold caches per test."""
    set_log_level(logging.ERROR)
    for name in list(__import__("os").environ):
        if name.startswith("SHOPSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOPSTREAM_HOME", str(tmp_path / "home"))
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def point_dashboard_at(monkeypatch: pytest.MonkeyPatch, url: str, topic: str = SHOP_TOPIC) -> None:
    monkeypatch.setenv("SHOPSTREAM_DASHBOARD_DATABASE_URL", url)
    monkeypatch.setenv("SHOPSTREAM_TOPIC", topic)
