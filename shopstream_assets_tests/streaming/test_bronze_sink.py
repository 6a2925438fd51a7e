"""streaming.bronze_sink: one transaction per batch, offsets never applied twice, all counted."""

from __future__ import annotations

import threading

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shopstream_assets_tests.streaming.conftest import good_event, kafka_frame, without
from shopstream_assets_tests.waiting import wait_until
from streaming.bronze_batch import write_batch
from streaming.bronze_sink import BronzeHoleError, BronzeSink, PoisonBatchError, never_succeeds, retrying
from streaming.events import RejectReason, encode_event
from streaming.ledger import PlannedOffsets, committed_offsets
from streaming.transforms import parse_and_validate

TOPIC = "clicks"  # the topic kafka_frame writes into the rows


def validated(spark, values, *, first_offset: int = 0) -> pa.Table:
    table = parse_and_validate(kafka_frame(spark, values)).toArrow()
    offsets = pa.array([offset + first_offset for offset in table["kafka_offset"].to_pylist()], pa.int64())
    return table.set_column(table.schema.get_field_index("kafka_offset"), "kafka_offset", offsets)


def events(count: int, start: int = 0) -> list[bytes]:
    return [encode_event(good_event(event_id=f"EVT_{index:012d}")) for index in range(start, start + count)]


def fetch(database_url: str, query: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def ledger(database_url: str) -> list[tuple]:
    return fetch(
        database_url,
        "select batch_id, messages_consumed, rows_written, rejects, duplicates, repaired, source"
        " from bronze.ingest_batches order by batch_id",
    )


def test_good_and_bad_messages_land_in_their_tables_with_one_ledger_row(spark, database_url: str) -> None:
    bad = [
        (b"{oops", RejectReason.MALFORMED_JSON),
        (encode_event(good_event(event_id="EVT_neg", product_price=-5)), RejectReason.NEGATIVE_PRICE),
        (without("user_id"), RejectReason.MISSING_FIELD),
    ]
    purchase_without_quantity = encode_event(good_event(event_id="EVT_repair", quantity=None))
    values = events(7) + [value for value, _ in bad] + [purchase_without_quantity]
    with psycopg.connect(database_url, autocommit=True) as conn:
        result = write_batch(conn, validated(spark, values), topic=TOPIC, spark_batch_id=0)

    assert (result.messages_consumed, result.rows_written, result.rejects, result.duplicates) == (11, 8, 3, 0)
    assert result.repaired == 1
    assert ledger(database_url) == [(result.batch_id, 11, 8, 3, 0, 1, "stream")]
    assert fetch(database_url, "select count(*), count(distinct batch_id) from bronze.clickstream_events") == [(8, 1)]
    rejects = fetch(database_url, "select reason, raw_value from bronze.clickstream_rejects order by kafka_offset")
    assert [(reason, bytes(raw_value)) for reason, raw_value in rejects] == [
        (reason.value, value) for value, reason in bad
    ]
    (repaired,) = fetch(
        database_url,
        "select quantity, repaired, repair_reason from bronze.clickstream_events where event_id = 'EVT_repair'",
    )
    assert repaired == (1, True, "purchase_null_quantity_set_to_1")
    (offsets,) = fetch(database_url, "select start_offsets, end_offsets from bronze.ingest_batches")
    assert offsets == ({"0": 0, "1": 1, "2": 2}, {"0": 10, "1": 11, "2": 9})


def test_typed_values_and_kafka_position_survive_the_copy(spark, database_url: str) -> None:
    tricky = good_event(
        event_id="EVT_tricky", product_name='Ẹ̀wà "quoted", comma\nnewline nul\u0000', product_price=19.99
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_batch(conn, validated(spark, [encode_event(tricky)]), topic=TOPIC)
    (row,) = fetch(
        database_url,
        "select product_name, product_price::text, event_timestamp = '2026-01-03T14:23:45.123Z',"
        " kafka_topic, kafka_partition, kafka_offset, sent_at = to_timestamp(1767450225.5), schema_version"
        " from bronze.clickstream_events",
    )
    # PostgreSQL text cannot hold U+0000: it is stored as U+FFFD.
    assert row == ('Ẹ̀wà "quoted", comma\nnewline nul\ufffd', "19.99", True, TOPIC, 0, 0, True, 1)


def test_duplicates_within_and_across_batches_are_counted_not_inserted(spark, database_url: str) -> None:
    first = events(5)
    # EVT_3 twice inside the batch, EVT_0 and EVT_1 already in Bronze from the first batch.
    second = events(3, start=3) + events(2) + events(1, start=3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_batch(conn, validated(spark, first), topic=TOPIC)
        result = write_batch(conn, validated(spark, second, first_offset=100), topic=TOPIC)
    assert (result.messages_consumed, result.rows_written, result.duplicates) == (6, 1, 5)
    assert fetch(database_url, "select count(*) from bronze.clickstream_events") == [(6,)]
    # The copy kept is the first one written (lowest partition, then offset).
    assert fetch(
        database_url, "select kafka_offset from bronze.clickstream_events where event_id = 'EVT_000000000003'"
    ) == [(3,)]


def test_a_replayed_batch_is_not_applied_twice(spark, database_url: str, caplog) -> None:
    batch = validated(spark, events(6) + [b"not json"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        first = write_batch(conn, batch, topic=TOPIC, spark_batch_id=4)
        with caplog.at_level("INFO", logger="shopstream.stream"):
            again = write_batch(conn, batch, topic=TOPIC, spark_batch_id=4)
    assert first.batch_id is not None and again.batch_id is None
    assert (again.messages_consumed, again.already_committed) == (0, 7)
    assert "already committed" in caplog.text
    assert len(ledger(database_url)) == 1
    assert fetch(database_url, "select count(*) from bronze.clickstream_events") == [(6,)]
    assert fetch(database_url, "select count(*) from bronze.clickstream_rejects") == [(1,)]


def test_an_overlapping_batch_writes_only_the_new_offsets(spark, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_batch(conn, validated(spark, events(9)), topic=TOPIC)  # offsets 0-8
        result = write_batch(conn, validated(spark, events(9, start=6), first_offset=6), topic=TOPIC)  # 6-14
        assert committed_offsets(conn, TOPIC) == {0: 13, 1: 14, 2: 15}
    assert (result.already_committed, result.messages_consumed, result.rows_written) == (3, 6, 6)
    assert fetch(database_url, "select count(*), count(distinct kafka_offset) from bronze.clickstream_events") == [
        (15, 15)
    ]


def test_the_offsets_table_always_equals_the_ledgers_maxima(spark, database_url: str) -> None:
    """bronze.ingest_offsets is what the sink, the sensor and the dashboard read for "where is Bronze"."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_batch(conn, validated(spark, events(9)), topic=TOPIC)  # offsets 0-8
        write_batch(conn, validated(spark, events(3)), topic=TOPIC)  # already committed: no ledger row
        write_batch(conn, validated(spark, events(9, start=6), first_offset=6), topic=TOPIC)  # 6-14
        write_batch(conn, validated(spark, events(2), first_offset=100), topic="another-topic")
        assert committed_offsets(conn, TOPIC) == {0: 13, 1: 14, 2: 15}
        assert committed_offsets(conn, "another-topic") == {0: 101, 1: 102}
    ledger_maxima = fetch(
        database_url,
        "select kafka_topic, (offsets.key)::int, max((offsets.value)::bigint)"
        " from bronze.ingest_batches, jsonb_each_text(end_offsets) as offsets group by 1, 2 order by 1, 2",
    )
    offsets = fetch(
        database_url, "select kafka_topic, kafka_partition, next_offset from bronze.ingest_offsets order by 1, 2"
    )
    assert offsets == ledger_maxima


def test_every_ledger_row_accounts_for_every_message(spark, database_url: str) -> None:
    from streaming.simulator import Simulator

    values = Simulator(seed=5, bad_ratio=0.2).take(2_000).values
    with BronzeSink(database_url, TOPIC) as sink:
        for start in range(0, len(values), 500):
            sink.write(validated(spark, values[start : start + 500], first_offset=start))
    rows = ledger(database_url)
    assert len(rows) == 4
    assert all(consumed == written + rejects + duplicates for _, consumed, written, rejects, duplicates, _, _ in rows)
    assert sum(row[1] for row in rows) == 2_000
    (totals,) = fetch(
        database_url,
        "select (select count(*) from bronze.clickstream_events), (select count(*) from bronze.clickstream_rejects)",
    )
    assert totals == (sum(row[2] for row in rows), sum(row[3] for row in rows))


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


def test_an_id_the_probe_misses_falls_back_to_the_staging_path(spark, database_url: str, caplog) -> None:
    # The existing-id probe sends newline-joined ids, so an id holding a newline is not found:
    # its COPY collides and the batch goes through the staging table, still exactly once.
    odd = [encode_event(good_event(event_id="EVT_line\nbreak"))]
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_batch(conn, validated(spark, odd), topic=TOPIC)
        with caplog.at_level("WARNING", logger="shopstream.stream"):
            again = write_batch(conn, validated(spark, odd + events(2), first_offset=10), topic=TOPIC)
    assert "staging table" in caplog.text
    assert (again.messages_consumed, again.rows_written, again.duplicates) == (3, 2, 1)
    assert fetch(database_url, "select count(*) from bronze.clickstream_events") == [(3,)]


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


def test_chunks_in_any_order_keep_the_first_copy_in_kafka_order(spark, database_url: str) -> None:
    """The stream hands over each Spark task's rows as it finishes, in no fixed order: the
    batch must keep the same copy of a duplicated event_id (lowest partition, then offset),
    and count the same, whichever chunk comes first."""
    purchase_without_quantity = encode_event(good_event(event_id="EVT_repair", quantity=None))
    values = events(6) + [purchase_without_quantity] + events(2, start=1) + [purchase_without_quantity, b"{oops"]
    batch = validated(spark, values)  # kafka_frame spreads the rows over 3 partitions
    chunks = [batch.slice(start, 3) for start in range(0, batch.num_rows, 3)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        result = write_batch(conn, reversed(chunks), topic=TOPIC)
    assert (result.messages_consumed, result.rows_written, result.rejects, result.duplicates) == (11, 7, 1, 3)
    assert result.repaired == 1
    kept = fetch(
        database_url,
        "select event_id, kafka_partition, kafka_offset, repaired from bronze.clickstream_events"
        " where event_id in ('EVT_000000000001', 'EVT_000000000002', 'EVT_repair') order by event_id",
    )
    first_copies = {}
    for row in batch.filter(pc.is_null(batch["reject_reason"])).to_pylist():
        position = (row["kafka_partition"], row["kafka_offset"])
        first_copies[row["event_id"]] = min(position, first_copies.get(row["event_id"], position))
    assert [(event_id, (partition, offset)) for event_id, partition, offset, _ in kept] == [
        (event_id, first_copies[event_id]) for event_id in ("EVT_000000000001", "EVT_000000000002", "EVT_repair")
    ]
    assert ledger(database_url) == [(result.batch_id, 11, 7, 1, 3, 1, "stream")]
    assert fetch(database_url, "select count(*) from bronze.clickstream_events where repaired") == [(1,)]


@pytest.mark.parametrize(
    ("price", "stored"),
    [
        (19.99, "19.99"),
        (1.005, "1.01"),
        (2.675, "2.68"),
        (0.125, "0.13"),
        (5e-324, "0.00"),
        (999999999.995, "1000000000.00"),
    ],
)
def test_a_price_is_stored_as_postgresql_reads_its_shortest_text(spark, database_url: str, price, stored) -> None:
    """Binary COPY sends numeric(14,2) made in Arrow; it must round as PostgreSQL rounds '1.005'."""
    value = encode_event(good_event(event_id="EVT_price", product_price=price))
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_batch(conn, validated(spark, [value]), topic=TOPIC)
        assert conn.execute("select %s::text::numeric(14,2)::text", (repr(price),)).fetchone() == (stored,)
    assert fetch(database_url, "select product_price::text from bronze.clickstream_events") == [(stored,)]


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


def test_a_batch_records_the_range_it_was_planned_for_and_one_starting_beyond_bronze_is_refused(
    spark, database_url: str
) -> None:
    """The ledger ends where Spark planned, not at the last message (a transaction's marker takes an
    offset); a plan holding no message still moves Bronze; a plan starting beyond Bronze is a hole."""
    with BronzeSink(database_url, TOPIC) as sink:
        # kafka_frame puts offsets p and p + 3 in partition p; the plan runs past them.
        first = sink.write(validated(spark, events(6)), planned=PlannedOffsets({0: 0, 1: 0, 2: 0}, {0: 7, 1: 5, 2: 6}))
        assert (first.messages_consumed, first.start_offsets, first.end_offsets) == (
            6,
            {0: 0, 1: 0, 2: 0},
            {0: 7, 1: 5, 2: 6},
        )
        # Only markers, or an aborted transaction's records: no message, one ledger row counting none.
        markers = sink.write(validated(spark, []), planned=PlannedOffsets({0: 7, 1: 5, 2: 6}, {0: 9, 1: 5, 2: 6}))
        assert markers.batch_id is not None and markers.messages_consumed == 0
        assert (markers.start_offsets, markers.end_offsets) == ({0: 7}, {0: 9})
        # Nothing new at all: no row.
        again = sink.write(validated(spark, []), planned=PlannedOffsets({0: 9, 1: 5, 2: 6}, {0: 9, 1: 5, 2: 6}))
        assert again.batch_id is None
        with pytest.raises(
            BronzeHoleError,
            match=r"Bronze lacks messages of topic 'clicks' before Spark batch 5: partition 0 offsets 9-11 \(.*"
            r"--restart-from-bronze",
        ):
            sink.write(
                validated(spark, events(1, 100), first_offset=12),
                planned=PlannedOffsets({0: 12, 1: 5, 2: 6}, {0: 13, 1: 5, 2: 6}),
                spark_batch_id=5,
            )
        with psycopg.connect(database_url) as conn:
            assert committed_offsets(conn, TOPIC) == {0: 9, 1: 5, 2: 6}
    assert ledger(database_url) == [
        (first.batch_id, 6, 6, 0, 0, 0, "stream"),
        (markers.batch_id, 0, 0, 0, 0, 0, "stream"),
    ]
    assert fetch(database_url, "select count(*) from bronze.clickstream_events") == [(6,)]
