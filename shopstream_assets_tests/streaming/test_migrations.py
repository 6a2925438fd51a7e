"""Bronze's schema (streaming/migrations): applied once each, idempotent, the ledger's rules held by the database."""

import uuid

import psycopg
import pytest

from shopstream import database
from streaming.migrations import migrate, migration_scripts


def _bronze_catalog(url: str) -> list[tuple]:
    with database.connect(url) as conn:
        return conn.execute(
            "select table_schema, table_name, column_name, data_type from information_schema.columns"
            " where table_schema = 'bronze' order by 1, 2, ordinal_position"
        ).fetchall()


def test_migration_creates_the_layers_and_is_idempotent(database_url: str) -> None:
    before = _bronze_catalog(database_url)
    assert {row[1] for row in before} == {
        "clickstream_events",
        "clickstream_rejects",
        "ingest_batches",
        "ingest_batches_hourly",
        "ingest_offsets",
        "ingest_totals",
        "reject_totals",
    }
    with database.connect(database_url) as conn:
        schemas = {row[0] for row in conn.execute("select schema_name from information_schema.schemata")}
        conn.execute(
            "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets, messages_consumed,"
            " rows_written, rejects, duplicates, started_at) values ('t', 'stream', '{}', '{}', 0, 0, 0, 0, now())"
        )
    assert {"bronze", "silver", "gold"} <= schemas

    assert migrate(database_url) == []  # nothing left to apply
    assert _bronze_catalog(database_url) == before
    with database.connect(database_url) as conn:
        assert conn.execute("select count(*) from bronze.ingest_batches").fetchone()[0] == 1


def test_the_ledger_refuses_a_batch_that_does_not_add_up(database_url: str) -> None:
    with database.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets, messages_consumed,"
            " rows_written, rejects, duplicates, started_at) values ('t', 'stream', '{}', '{}', 10, 5, 1, 1, now())"
        )


def test_the_offsets_table_starts_from_an_older_databases_ledger(admin_database_url: str) -> None:
    """Migration 0003 fills bronze.ingest_offsets with the ledger's maxima, so a stream
    upgraded mid-topic resumes where it stood instead of at offset 0."""
    name = f"t_offsets_backfill_{uuid.uuid4().hex[:8]}"
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    try:
        with database.connect(url) as conn:
            conn.execute("create table public.shopstream_migrations (name text primary key, applied_at timestamptz)")
            for script_name, script in migration_scripts():
                if script_name.startswith("0003"):
                    break
                conn.execute(script)
                conn.execute("insert into public.shopstream_migrations values (%s, now())", (script_name,))
            for topic, end_offsets in (("t", '{"0": 5, "1": 7}'), ("t", '{"0": 9}'), ("u", '{"0": 3}')):
                conn.execute(
                    "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets,"
                    " messages_consumed, rows_written, rejects, duplicates, started_at)"
                    " values (%s, 'stream', '{}', %s, 0, 0, 0, 0, now())",
                    (topic, end_offsets),
                )
        assert migrate(url) == [name for name, _ in migration_scripts() if name >= "0003"]
        with database.connect(url) as conn:
            rows = conn.execute(
                "select kafka_topic, kafka_partition, next_offset, batch_id from bronze.ingest_offsets order by 1, 2"
            ).fetchall()
        assert rows == [("t", 0, 9, 2), ("t", 1, 7, 1), ("u", 0, 3, 3)]
        # From now on each new ledger row advances them itself (its trigger), whoever writes it.
        with database.connect(url) as conn:
            conn.execute(
                "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets,"
                " messages_consumed, rows_written, rejects, duplicates, started_at)"
                " values ('t', 'replay', '{}', '{\"0\": 4, \"1\": 12, \"2\": 1}', 0, 0, 0, 0, now())"
            )
            rows = conn.execute(
                "select kafka_topic, kafka_partition, next_offset from bronze.ingest_offsets order by 1, 2"
            ).fetchall()
        assert rows == [("t", 0, 9), ("t", 1, 12), ("t", 2, 1), ("u", 0, 3)]  # never moved backwards
    finally:
        database.drop_database(admin_database_url, name)


def test_a_ledger_rows_planned_range_set_after_its_insert_advances_the_offsets(database_url: str) -> None:
    """Migration 0005: the sink writes a batch's row from its messages, then sets the range Spark
    planned (past a transaction's marker); that update moves bronze.ingest_offsets, never backwards."""
    with database.connect(database_url) as conn:
        (batch_id,) = conn.execute(
            "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets, messages_consumed,"
            " rows_written, rejects, duplicates, started_at)"
            " values ('t', 'stream', '{\"0\": 0}', '{\"0\": 5, \"1\": 3}', 0, 0, 0, 0, now()) returning batch_id"
        ).fetchone()
        conn.execute(
            'update bronze.ingest_batches set end_offsets = \'{"0": 6, "1": 2, "2": 4}\' where batch_id = %s',
            (batch_id,),
        )
        rows = conn.execute(
            "select kafka_partition, next_offset, batch_id from bronze.ingest_offsets where kafka_topic = 't'"
            " order by 1"
        ).fetchall()
    assert rows == [(0, 6, batch_id), (1, 3, batch_id), (2, 4, batch_id)]


def test_the_running_newest_event_time_starts_from_an_older_databases_ledger(admin_database_url: str) -> None:
    """Migration 0008 fills each ledger row's newest event time so far (all topics, in batch_id order);
    from then on the insert trigger keeps it, whoever writes the row."""
    name = f"t_newest_backfill_{uuid.uuid4().hex[:8]}"
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    insert = (
        "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets, messages_consumed,"
        " rows_written, rejects, duplicates, max_event_time, started_at)"
        " values (%s, 'stream', '{}', %s, 0, 0, 0, 0, %s::timestamptz, now())"
    )
    try:
        with database.connect(url) as conn:
            conn.execute("create table public.shopstream_migrations (name text primary key, applied_at timestamptz)")
            for script_name, script in migration_scripts():
                if script_name.startswith("0008"):
                    break
                conn.execute(script)
                conn.execute("insert into public.shopstream_migrations values (%s, now())", (script_name,))
            for topic, end, newest in (
                ("t", '{"0": 1}', "2026-01-01 10:00Z"),
                ("u", '{"0": 1}', "2026-01-01 12:00Z"),
                ("t", '{"0": 2}', None),
                ("t", '{"0": 3}', "2026-01-01 11:00Z"),
            ):
                conn.execute(insert, (topic, end, newest))
        assert migrate(url) == [name for name, _ in migration_scripts() if name >= "0008"]
        with database.connect(url) as conn:
            conn.execute(insert, ("u", '{"0": 2}', "2026-01-01 09:00Z"))
            rows = conn.execute(
                "select batch_id, to_char(newest_event_time_so_far at time zone 'UTC', 'DD HH24')"
                " from bronze.ingest_batches order by 1"
            ).fetchall()
        assert rows == [(1, "01 10"), (2, "01 12"), (3, "01 12"), (4, "01 12"), (5, "01 12")]
    finally:
        database.drop_database(admin_database_url, name)
