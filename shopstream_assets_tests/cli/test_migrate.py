"""`shopstream migrate` on a given, empty database: the layers and Bronze's tables, then nothing more."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from shopstream import database
from shopstream.database import READER_ROLE
from shopstream_assets_tests.conftest import make_test_home
from shopstream_assets_tests.ground.own_servers import CLI, env_for
from streaming.migrations import migration_scripts

BRONZE_TABLES = [
    "clickstream_events",
    "clickstream_rejects",
    "ingest_batches",
    "ingest_batches_hourly",
    "ingest_offsets",
    "ingest_totals",
    "reject_totals",
]


def _catalog(url: str) -> list[tuple[str, ...]]:
    with database.connect(url) as conn:
        return conn.execute(
            "select table_schema, table_name, column_name, data_type from information_schema.columns"
            " where table_schema in ('bronze', 'silver', 'gold') order by 1, 2, ordinal_position"
        ).fetchall()


def test_migrate_creates_the_layers_once_and_then_says_up_to_date(admin_database_url: str, tmp_path: Path) -> None:
    """Only the database is given (no Kafka): migrating needs PostgreSQL alone.

    Broken on purpose (the command resolving Kafka too, as it did), this test fails: the
    command stops with "the embedded Kafka broker is not running".
    """
    name = f"t_migrate_{uuid.uuid4().hex[:8]}"
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    env = env_for(make_test_home(tmp_path / "home")) | {"SHOPSTREAM_DATABASE_URL": url}
    try:
        first = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr[-3000:]
        assert first.stdout.strip() == "applied: " + ", ".join(script for script, _ in migration_scripts())
        created = _catalog(url)
        assert sorted({table for schema, table, *_ in created if schema == "bronze"}) == BRONZE_TABLES
        with database.connect(url) as conn:
            schemas = {row[0] for row in conn.execute("select nspname from pg_namespace")}
            reader = conn.execute("select 1 from pg_roles where rolname = %s", (READER_ROLE,)).fetchone()
            readable = (
                conn.execute(
                    "select has_table_privilege(%s, 'bronze.clickstream_events', 'select')", (READER_ROLE,)
                ).fetchone()[0]
                if reader
                else True
            )
        assert {"bronze", "silver", "gold"} <= schemas
        assert readable, "the dashboard's read-only role cannot read Bronze"

        again = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout.strip() == "database already up to date"
        assert _catalog(url) == created
    finally:
        database.drop_database(admin_database_url, name)
