"""A ledger rolled up while the stream runs on: the stream, the freshness read and dbt's test of the
events' batch ids against the real broker, Spark, PostgreSQL and dbt; and a writer that never waits
for a roll-up in progress.

The expected figures are scans of the per-batch ledger taken before the roll-up and of Bronze's
tables, never the reads under test.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from shopstream.database import connect
from shopstream.settings import load_settings
from shopstream_assets_tests.e2e.dbt_build import DbtOutcome, dbt_outcome_in_process
from shopstream_assets_tests.streaming.conftest import (
    assert_every_batch_accounted,
    expected_bronze,
    fetch,
    produce_simulated,
)
from streaming import ledger
from streaming.bronze_batch import SOURCE_STREAM, write_batch
from streaming.bronze_load import KafkaPositions, validated_table
from streaming.job import run_stream
from streaming.producer import UNPACED_CLOCK_RATE
from streaming.simulator import Simulator

pytestmark = pytest.mark.timeout(600)

DBT_BATCH_ID_TEST = ["test", "--select", "source:bronze.clickstream_events,test_name:relationships"]

# Per batch, the newest event time of it and every batch before it: what a reader of Bronze up to it holds.
_RUNNING_NEWEST_SQL = """
select batch_id, max(max_event_time) over (order by batch_id) from bronze.ingest_batches order by batch_id
"""

# Events whose batch has no ledger row: dbt's plain relationships test fails on each.
_EVENTS_WITHOUT_BATCH_ROW_SQL = """
select count(*) from bronze.clickstream_events as events
where not exists (select 1 from bronze.ingest_batches as batches where batches.batch_id = events.batch_id)
"""


def assert_passed(run: DbtOutcome) -> None:
    assert run.success, f"dbt failed:\n{run.errors}"


def _stream_until_idle(spark, settings, database_url: str, kafka_bootstrap: str, **options: object) -> None:
    give_up = threading.Event()
    timer = threading.Timer(180, give_up.set)
    timer.start()
    try:
        run_stream(
            spark, settings, database_url=database_url, kafka_bootstrap=kafka_bootstrap, until_idle=1.5, **options
        )
    finally:
        timer.cancel()
    assert not give_up.is_set(), "the stream did not exit when idle"


def test_the_stream_the_freshness_read_and_dbts_batch_test_hold_across_a_roll_up(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    settings = load_settings(shopstream_env)
    first = produce_simulated(kafka_bootstrap, topic, 600, seed=71, bad_ratio=0.1)
    _stream_until_idle(spark, settings, database_url, kafka_bootstrap, max_offsets_per_trigger=100)

    with psycopg.connect(database_url, autocommit=True) as conn:
        running = dict(conn.execute(_RUNNING_NEWEST_SQL).fetchall())
        assert len(running) >= 6
        # As the writer left it: every row's own running value is the scan's.
        for batch_id, newest in running.items():
            assert ledger.newest_event_time_through(conn, batch_id) == newest
        # Ten days old, twenty minutes apart: several clock hours past the keep age.
        conn.execute(
            "update bronze.ingest_batches set committed_at = now() - interval '10 days'"
            " + (batch_id - %s) * interval '20 minutes', started_at = now() - interval '11 days'",
            (min(running),),
        )
        totals = ledger.ingest_totals(conn, topic)
        offsets = ledger.committed_offsets(conn, topic)

        # Two rows a transaction: hours are merged across chunks.
        rolled = ledger.roll_up_ledger(conn, timedelta(days=7), chunk_batches=2)
        assert rolled.batches >= len(running) - 1 - len(offsets) and rolled.hours >= 2
        kept = [row[0] for row in conn.execute("select batch_id from bronze.ingest_batches order by 1").fetchall()]
        assert max(running) in kept
        (folded,) = conn.execute("select sum(batches) from bronze.ingest_batches_hourly").fetchone()
        assert folded == rolled.batches == len(running) - len(kept)
        # dbt's plain relationships test would now fail on every event of a rolled-up batch.
        (orphans,) = conn.execute(_EVENTS_WITHOUT_BATCH_ROW_SQL).fetchone()
        assert orphans > 0

        assert astuple_without_clock(ledger.ingest_totals(conn, topic)) == astuple_without_clock(totals)
        assert ledger.committed_offsets(conn, topic) == offsets
        # The freshness read: exact at every kept batch and at the end of every rolled-up hour.
        hour_ends = [row[0] for row in conn.execute("select last_batch_id from bronze.ingest_batches_hourly")]
        for batch_id in kept + hour_ends:
            assert ledger.newest_event_time_through(conn, batch_id) == running[batch_id], batch_id
        assert ledger.newest_event_time_through(conn, max(running) + 1_000) == running[max(running)]
        assert ledger.newest_event_time_through(conn, min(running) - 1) is None

    target = tmp_path / "target"
    assert_passed(dbt_outcome_in_process(DBT_BATCH_ID_TEST, database_url, target))

    # The stream goes on from Bronze's offsets: no hole is seen, every message lands once.
    second = produce_simulated(kafka_bootstrap, topic, 300, seed=72, bad_ratio=0.1)
    _stream_until_idle(spark, settings, database_url, kafka_bootstrap, max_offsets_per_trigger=100)
    event_ids, rejects, duplicates = expected_bronze(first.values + second.values)
    assert sorted(row[0] for row in fetch(database_url, "select event_id from bronze.clickstream_events")) == sorted(
        event_ids
    )
    kept_sums = assert_every_batch_accounted(database_url)
    (hourly_sums,) = fetch(
        database_url,
        "select sum(messages_consumed), sum(rows_written), sum(rejects), sum(duplicates)"
        " from bronze.ingest_batches_hourly",
    )
    assert tuple(a + b for a, b in zip(kept_sums, hourly_sums, strict=True)) == (
        900,
        len(event_ids),
        rejects.total(),
        duplicates,
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        newest_batch = ledger.latest_batch_id(conn, topic)
        (expected_newest,) = conn.execute(
            "select greatest((select max(max_event_time) from bronze.ingest_batches),"
            " (select max(max_event_time) from bronze.ingest_batches_hourly))"
        ).fetchone()
        assert ledger.newest_event_time_through(conn, newest_batch) == expected_newest
    assert_passed(dbt_outcome_in_process(DBT_BATCH_ID_TEST, database_url, target))

    # An hour lost from the roll-up leaves its events with neither a row nor a range: the test fails.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "delete from bronze.ingest_batches_hourly where hour = (select min(hour) from bronze.ingest_batches_hourly)"
        )
    failed = dbt_outcome_in_process(DBT_BATCH_ID_TEST, database_url, target)
    assert not failed.success
    assert "relationships" in failed.messages and "FAIL" in failed.messages


def astuple_without_clock(totals: ledger.IngestTotals) -> tuple:
    return (
        totals.batches,
        totals.rows_written,
        totals.rejects,
        totals.duplicates,
        totals.messages_consumed,
        totals.last_batch_id,
        totals.last_batch_committed_at,
        totals.newest_event_time,
    )


def test_a_micro_batch_never_waits_for_a_roll_up_in_progress(database_url: str) -> None:
    """The roll-up's transaction is held open (rows deleted, hours written, not committed) while the
    writer commits batches with a lock timeout of one second: nothing either touches is locked by
    the other. Then both commit and the sums equal a scan of both forms of the ledger."""
    positions = KafkaPositions("clicks", partitions=3)

    def write(conn: psycopg.Connection, seed: int) -> int:
        sample = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE, bad_ratio=0.1).take(40)
        table = validated_table(sample.keys, sample.values, positions)
        return write_batch(conn, table, topic=positions.topic, source=SOURCE_STREAM).batch_id

    with connect(database_url) as writer:
        writer.autocommit = True
        old = [write(writer, seed) for seed in range(10)]
        writer.execute(
            "update bronze.ingest_batches"
            " set committed_at = now() - interval '9 days' + batch_id * interval '7 minutes'"
        )
        writer.execute("set lock_timeout = '1s'")
        with connect(database_url) as rolling:  # one transaction until commit()
            # A batch stays while bronze.ingest_offsets names it (the last to touch a partition), as does the
            # newest: which batches those are follows the keys, and the ids in them carry the clock.
            named = {row[0] for row in writer.execute("select batch_id from bronze.ingest_offsets")}
            staying = sorted(named | {old[-1]})
            rolled = ledger.roll_up_ledger(rolling, timedelta(days=7), chunk_batches=4)
            assert rolled.batches == len(old) - len(staying) and len(staying) <= 3
            offsets = ledger.committed_offsets(writer, positions.topic)
            new = [write(writer, seed) for seed in range(20, 23)]  # a LockNotAvailable here fails the test
            assert ledger.committed_offsets(writer, positions.topic) != offsets
            assert ledger.batches_after(writer, positions.topic, old[-1]).batches == len(new)
            rolling.commit()
        kept = [row[0] for row in writer.execute("select batch_id from bronze.ingest_batches order by 1")]
        assert kept == [*staying, *new]
        scan = writer.execute(
            "select sum(batches), sum(messages), sum(rows_written), sum(rejects) from ("
            " select count(*) as batches, sum(messages_consumed) as messages, sum(rows_written) as rows_written,"
            "  sum(rejects) as rejects from bronze.ingest_batches"
            " union all select sum(batches), sum(messages_consumed), sum(rows_written), sum(rejects)"
            "  from bronze.ingest_batches_hourly) as both_forms"
        ).fetchone()
        totals = ledger.ingest_totals(writer, positions.topic)
        assert (totals.batches, totals.messages_consumed, totals.rows_written, totals.rejects) == tuple(scan)
        assert totals.messages_consumed == 40 * (len(old) + len(new))
