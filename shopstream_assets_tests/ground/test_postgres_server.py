"""The embedded PostgreSQL's credentials and the dashboard's read-only role."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg
import pytest

from shopstream import database
from shopstream.postgres_server import Credentials


def test_credentials_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    credentials = Credentials(tmp_path)
    first = credentials.create()
    assert {"admin_password", "reader_password"} <= set(first)
    assert len(set(first.values())) == len(first)  # one password per role
    assert stat.S_IMODE(credentials.path.stat().st_mode) == 0o600
    assert Credentials(tmp_path).load() == first  # stable passwords: the URLs survive a restart


def test_the_dashboard_role_can_read_but_not_write(dashboard_database_url: str, database_url: str) -> None:
    with database.connect(database_url) as conn:
        conn.execute("create table gold.reader_probe (value int)")
        conn.execute("insert into gold.reader_probe values (1)")
    with database.connect(dashboard_database_url) as conn:
        assert conn.execute("select value from gold.reader_probe").fetchone() == (1,)
        assert conn.execute("select count(*) from bronze.clickstream_events").fetchone() == (0,)
    with (
        database.connect(dashboard_database_url) as conn,
        pytest.raises((psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)),
    ):
        conn.execute("insert into gold.reader_probe values (2)")
