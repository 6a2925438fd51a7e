"""The embedded PostgreSQL runs with planner costs for an SSD and a cache of half the machine's memory."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from shopstream import database
from shopstream.postgres_planner import effective_cache_mb, planner_options
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.settings import load_settings


def test_the_session_server_runs_with_the_planner_costs(admin_database_url: str) -> None:
    """Without them an incremental dbt run over a Silver larger than 4GB reads all of Silver
    instead of probing its indexes."""
    if os.environ.get("SHOPSTREAM_TEST_DATABASE_URL"):
        pytest.skip("the session's PostgreSQL is a given one, not the embedded server")
    with database.connect(admin_database_url) as conn:
        random_page_cost = conn.execute("select current_setting('random_page_cost')::float8").fetchone()[0]
        cache_mb = conn.execute(
            "select setting::bigint * 8 / 1024 from pg_settings where name = 'effective_cache_size'"
        ).fetchone()[0]
    assert random_page_cost == 1.1
    assert cache_mb == effective_cache_mb() == psutil.virtual_memory().total // 2 // (1024 * 1024)


def test_the_cache_share_is_half_the_memory_and_at_least_a_gigabyte(tmp_path: Path) -> None:
    options = EmbeddedPostgres(load_settings({"SHOPSTREAM_HOME": str(tmp_path)})).server_options()
    assert f"-c random_page_cost=1.1 -c effective_cache_size={effective_cache_mb()}MB" in options
    assert planner_options(24 * 1024**3) == {"random_page_cost": "1.1", "effective_cache_size": "12288MB"}
    assert planner_options(512 * 1024**2)["effective_cache_size"] == "1024MB"
