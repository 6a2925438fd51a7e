"""What each role by duty may and may not do, checked on a real server: shared by the embedded
server's test (test_roles.py) and the external server's (test_external_roles.py), so both hold the
roles to the same statements. Each refusal is a statement the role must be refused, with the
privilege error PostgreSQL gives for it.
"""

from __future__ import annotations

import psycopg
import pytest

from shopstream import database

REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


def refused(url: str, statement: str, *, read_write: bool = False) -> None:
    with database.connect(url, autocommit=True) as conn:
        if read_write:  # the reader's read-only default is a default: a session may drop it
            conn.execute("set default_transaction_read_only = off")
        with pytest.raises(REFUSED):
            conn.execute(statement)


def cannot_connect(url: str, database_name: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        database.connect(database.with_database(url, database_name)).close()


def assert_unprivileged_login(url: str) -> None:
    """The role logs in, and is no superuser, cannot create roles or databases, replicate, bypass
    row security, nor run server programs."""
    with database.connect(url, autocommit=True) as conn:
        attributes = conn.execute(
            "select rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
            " pg_has_role(current_user, 'pg_execute_server_program', 'member')"
            " from pg_roles where rolname = current_user"
        ).fetchone()
    assert attributes == (False,) * 6


def assert_owner_confined(owner: str, dagster_database: str) -> None:
    """The owner owns bronze, silver, gold and all in them, does its duties there and nothing beyond.

    Leaves ``gold.owner_probe`` (one row) and ``silver.owner_probe`` for the reader's checks.
    """
    assert_unprivileged_login(owner)
    with database.connect(owner, autocommit=True) as conn:
        (me,) = conn.execute("select current_user").fetchone()
        owners = dict(
            conn.execute(
                "select nspname, pg_get_userbyid(nspowner) from pg_namespace"
                " where nspname in ('bronze', 'silver', 'gold')"
            ).fetchall()
        )
        assert owners == {"bronze": me, "silver": me, "gold": me}
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
    refused(owner, "create role shopstream_intruder")
    refused(owner, "create database shopstream_intruder")
    refused(owner, "copy (select 1) to program 'true'")
    refused(owner, "create schema intruder")
    refused(owner, "alter role current_user superuser")
    cannot_connect(owner, dagster_database)


def assert_reader_confined(reader: str, dagster_database: str) -> None:
    """The reader reads Gold (a table the owner made later too) and what the Live page shows of
    Bronze; nothing else, not even with its read-only default switched off. After assert_owner_confined."""
    assert_unprivileged_login(reader)
    with database.connect(reader, autocommit=True) as conn:
        assert conn.execute("select value from gold.owner_probe").fetchall() == [(1,)]
        conn.execute("select reason, kafka_partition, kafka_offset, ingested_at from bronze.clickstream_rejects")
        conn.execute("select count(*) from bronze.clickstream_events")
        conn.execute("select count(*) from bronze.ingest_batches")
    refused(reader, "select raw_value from bronze.clickstream_rejects")
    refused(reader, "select raw_text from bronze.clickstream_rejects")
    refused(reader, "select * from bronze.clickstream_rejects")
    refused(reader, "select * from silver.owner_probe")
    refused(reader, "insert into gold.owner_probe values (2)", read_write=True)
    refused(reader, "delete from bronze.ingest_batches", read_write=True)
    refused(reader, "create table gold.reader_probe (value int)", read_write=True)
    refused(reader, "create table public.reader_probe (value int)", read_write=True)
    refused(reader, "copy (select 1) to program 'true'", read_write=True)
    refused(reader, "create role shopstream_intruder", read_write=True)
    cannot_connect(reader, dagster_database)


def assert_dagster_confined(dagster: str, pipeline_database: str) -> None:
    """Dagster's role: its own database (``dagster``'s URL names it), nothing of the pipeline's."""
    assert_unprivileged_login(dagster)
    with database.connect(dagster, autocommit=True) as conn:
        conn.execute("create table dagster_probe (value int)")
    refused(database.with_database(dagster, pipeline_database), "select count(*) from bronze.ingest_batches")
    refused(dagster, "copy (select 1) to program 'true'")
