"""Roles by duty on the embedded PostgreSQL: what `services start` exports may do only its own job.

One server of the test's own (a fresh SHOPSTREAM_HOME), driven as a user does; each check is a
statement the role must be refused, with the privilege error PostgreSQL gives for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from shopstream import database
from shopstream.database import DAGSTER_DATABASE_NAME, OWNER_ROLE, READER_ROLE
from shopstream.postgres_roles import DAGSTER_ROLE
from shopstream_assets_tests.ground.own_servers import cli, exports

REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


def _refused(url: str, statement: str, *, read_write: bool = False) -> None:
    with database.connect(url, autocommit=True) as conn:
        if read_write:  # the reader's read-only default is a default: a session may drop it
            conn.execute("set default_transaction_read_only = off")
        with pytest.raises(REFUSED):
            conn.execute(statement)


@pytest.mark.servers
def test_each_exported_role_may_do_its_duty_and_nothing_more(own_home: Path) -> None:
    exported = exports(cli(own_home, "services", "start").stdout)
    owner, reader = exported["SHOPSTREAM_DATABASE_URL"], exported["SHOPSTREAM_DASHBOARD_DATABASE_URL"]
    assert database.url_parts(owner).user == OWNER_ROLE and database.url_parts(reader).user == READER_ROLE
    assert exported["SHOPSTREAM_DAGSTER_DB_USER"] == DAGSTER_ROLE
    admin_password = json.loads((own_home / "credentials.json").read_text())["admin_password"]
    assert admin_password not in "".join(exported.values())  # the admin is never handed out

    with database.connect(owner, autocommit=True) as conn:
        attributes = conn.execute(
            "select rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
            " pg_has_role(current_user, 'pg_execute_server_program', 'member')"
            " from pg_roles where rolname = current_user"
        ).fetchone()
        assert attributes == (False,) * 6
        owners = dict(
            conn.execute(
                "select nspname, pg_get_userbyid(nspowner) from pg_namespace"
                " where nspname in ('bronze', 'silver', 'gold')"
            ).fetchall()
        )
        assert owners == {"bronze": OWNER_ROLE, "silver": OWNER_ROLE, "gold": OWNER_ROLE}
        (foreign,) = conn.execute(
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname in ('bronze', 'silver', 'gold') and pg_get_userbyid(c.relowner) <> current_user"
        ).fetchone()
        assert foreign == 0
        # Its duties: write Bronze, build Silver and Gold.
        conn.execute("create table gold.owner_probe (value int)")
        conn.execute("insert into gold.owner_probe values (1)")
        conn.execute("create table silver.owner_probe (value int)")
        (batches,) = conn.execute("select count(*) from bronze.ingest_batches").fetchone()
        assert batches == 0
    _refused(owner, "create role shopstream_intruder")
    _refused(owner, "create database shopstream_intruder")
    _refused(owner, "copy (select 1) to program 'true'")
    _refused(owner, "create schema intruder")
    _refused(owner, "alter role shopstream_owner superuser")
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        database.connect(database.with_database(owner, DAGSTER_DATABASE_NAME)).close()

    # The reader: Gold, and what the Live page shows of Bronze.
    with database.connect(reader, autocommit=True) as conn:
        assert conn.execute("select value from gold.owner_probe").fetchall() == [(1,)]  # a table made later
        conn.execute("select reason, kafka_partition, kafka_offset, ingested_at from bronze.clickstream_rejects")
        conn.execute("select count(*) from bronze.clickstream_events")
        conn.execute("select count(*) from bronze.ingest_batches")
    _refused(reader, "select raw_value from bronze.clickstream_rejects")
    _refused(reader, "select raw_text from bronze.clickstream_rejects")
    _refused(reader, "select * from bronze.clickstream_rejects")
    _refused(reader, "select * from silver.owner_probe")
    _refused(reader, "insert into gold.owner_probe values (2)", read_write=True)
    _refused(reader, "delete from bronze.ingest_batches", read_write=True)
    _refused(reader, "create table gold.reader_probe (value int)", read_write=True)
    _refused(reader, "create table public.reader_probe (value int)", read_write=True)
    _refused(reader, "copy (select 1) to program 'true'", read_write=True)
    _refused(reader, "create role shopstream_intruder", read_write=True)
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        database.connect(database.with_database(reader, DAGSTER_DATABASE_NAME)).close()

    # Dagster's role: its own database, nothing of the pipeline's.
    dagster = database.make_url(
        exported["SHOPSTREAM_DB_HOST"],
        int(exported["SHOPSTREAM_DB_PORT"]),
        exported["SHOPSTREAM_DAGSTER_DB_USER"],
        exported["SHOPSTREAM_DAGSTER_DB_PASSWORD"],
        DAGSTER_DATABASE_NAME,
    )
    with database.connect(dagster, autocommit=True) as conn:
        conn.execute("create table dagster_probe (value int)")
    _refused(database.with_database(dagster, "shopstream"), "select count(*) from bronze.ingest_batches")
    _refused(dagster, "copy (select 1) to program 'true'")
