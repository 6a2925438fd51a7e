"""The dbt tests' databases: each test still gets a fresh, migrated database of its own, but under
one name per test process, so dbt's parse of the project (keyed on the database it connects to:
``dbt_runs``) is made once per process instead of once per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from shopstream import database
from streaming.migrations import migrate


def dbt_database_name() -> str:
    """pytest-xdist workers are processes: two never share it."""
    return f"t_dbt_{os.getpid()}"


@pytest.fixture
def database_url(admin_database_url: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own (the root fixture's, under a per-process name)."""
    name = dbt_database_name()
    database.drop_database(admin_database_url, name)  # what an interrupted test left
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    migrate(url)
    yield url
    database.drop_database(admin_database_url, name)
