"""streaming.bronze_sink when things go wrong: transient errors retried, a batch PostgreSQL refuses
for its data failed at once, a connection lost mid-batch, writers racing for the same or another topic."""

from __future__ import annotations

import threading

import psycopg
import pyarrow as pa
import pytest

from shopstream_assets_tests.streaming.bronze_batches import TOPIC, events, fetch, ledger, validated
from shopstream_assets_tests.waiting import wait_until
from streaming.bronze_batch import write_batch
from streaming.bronze_sink import BronzeSink, PoisonBatchError, never_succeeds, retrying


def test_two_writers_of_the_same_batch_apply_it_once(spark, database_url: str) -> None:
    batch = validated(spark, events(200))
    results = []

    def write() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            results.append(write_batch(conn, batch, topic=TOPIC))

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result.rows_written for result in results) == [0, 0, 200]
    assert len(ledger(database_url)) == 1


def test_retrying_logs_and_goes_on_after_transient_errors(caplog) -> None:
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise psycopg.OperationalError("connection refused")
        return "done"

    with caplog.at_level("WARNING", logger="shopstream.stream"):
        assert retrying(flaky, what="writing", first_delay=0.01) == "done"
    assert len(attempts) == 3
    assert caplog.text.count("connection refused") == 2
    with pytest.raises(psycopg.OperationalError):
        retrying(lambda: (_ for _ in ()).throw(psycopg.OperationalError("down")), what="x", attempts=2, first_delay=0)


def test_writers_of_different_topics_share_one_lock(spark, database_url: str) -> None:
    """batch_id must grow in commit order across topics: a writer waits for any other.

    Shown, not inferred from a quiet second: PostgreSQL reports the other writer's backend
    waiting on an advisory lock that the holder's backend blocks; released, it commits after.
    A lock per topic (or none) fails this: the other writer commits at once, never waiting
    (tried with no lock)."""
    finished = threading.Event()
    other_backend: list[int] = []
    first, other = validated(spark, events(3, start=10)), validated(spark, events(3), first_offset=100)

    def write_other_topic() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            other_backend.append(conn.info.backend_pid)
            write_batch(conn, other, topic="another-topic")
        finished.set()

    with (
        psycopg.connect(database_url, autocommit=True) as observer,
        psycopg.connect(database_url, autocommit=True) as holder,
    ):

        def blocked_by_the_holder() -> bool:
            assert not finished.is_set(), "a writer of another topic went past the Bronze lock"
            if not other_backend:
                return False
            waiting = observer.execute(
                "select wait_event_type, wait_event, pg_blocking_pids(pid) from pg_stat_activity where pid = %s",
                (other_backend[0],),
            ).fetchone()
            return waiting == ("Lock", "advisory", [holder.info.backend_pid])

        with holder.transaction():
            write_batch(holder, first, topic=TOPIC)
            writer = threading.Thread(target=write_other_topic)
            writer.start()
            wait_until(blocked_by_the_holder, what="the other topic's writer waiting on the holder's Bronze lock")
            assert not finished.is_set()
        writer.join(60)
    assert finished.is_set(), "the other topic's writer did not commit once the lock was released"
    rows = fetch(database_url, "select kafka_topic from bronze.ingest_batches order by batch_id")
    assert rows == [(TOPIC,), ("another-topic",)]


def test_a_batch_postgresql_refuses_for_its_data_fails_at_once_naming_the_batch(
    spark, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An index row too big (SQLSTATE 54000) fails the same way every time: no retry loop.

    "At once" is counted in attempts, not seconds: a retry would log its warning. A sink that
    retried this error (``never_succeeds`` ignored by ``retrying``) fails here after one
    retry's second, the writer's wrapper still calling the last error a poison batch (tried)."""
    batch = validated(spark, events(3), first_offset=40)
    # Bypasses the rules (they reject an id this long) to reach PostgreSQL's own limit.
    too_long_for_the_btree = "".join(chr(0x4E00 + (index * 7919) % 20_000) for index in range(3_000))
    batch = batch.set_column(
        batch.schema.get_field_index("event_id"),
        "event_id",
        pa.array([too_long_for_the_btree, "EVT_a", "EVT_b"], pa.string()),
    )
    with (
        caplog.at_level("WARNING", logger="shopstream.stream"),
        BronzeSink(database_url, TOPIC, attempts=2) as sink,
        pytest.raises(PoisonBatchError) as refused,
    ):
        sink.write(batch, spark_batch_id=7)
    retries = [record.getMessage() for record in caplog.records if "retry" in record.getMessage()]
    assert retries == [], "retried an error that can never succeed"
    message = str(refused.value)
    assert "Spark batch 7" in message and "partition 0 offsets 40-40" in message and "SQLSTATE 54000" in message
    assert isinstance(refused.value.__cause__, psycopg.errors.ProgramLimitExceeded)
    assert ledger(database_url) == []  # the transaction rolled back as a whole


def test_only_errors_of_the_data_itself_count_as_never_succeeding(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn, pytest.raises(psycopg.DataError) as data_error:
        conn.execute("select 1 / 0")
    assert never_succeeds(data_error.value)  # SQLSTATE 22012
    with pytest.raises(psycopg.OperationalError) as unreachable:
        psycopg.connect("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    assert not never_succeeds(unreachable.value)
    assert not never_succeeds(ValueError("not a database error"))


def test_a_connection_lost_between_chunks_rewrites_the_batch_once(spark, database_url: str, caplog) -> None:
    batch = validated(spark, events(30) + [b"not json"])
    chunks = [batch.slice(start, 10) for start in range(0, batch.num_rows, 10)]
    with BronzeSink(database_url, TOPIC) as sink:

        def arriving():
            yield chunks[0]
            # The sink's backend dies between two chunks, as when PostgreSQL restarts.
            with psycopg.connect(database_url, autocommit=True) as killer:
                killer.execute("select pg_terminate_backend(%s)", (sink._connection().info.backend_pid,))
            yield from chunks[1:]

        with caplog.at_level("WARNING", logger="shopstream.stream"):
            result = sink.write(arriving())
    assert "retry 1/" in caplog.text
    assert (result.messages_consumed, result.rows_written, result.rejects) == (31, 30, 1)
    assert len(ledger(database_url)) == 1
    assert fetch(database_url, "select count(*) from bronze.clickstream_events") == [(30,)]
