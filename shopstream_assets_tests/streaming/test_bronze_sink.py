"""streaming.bronze_sink: one transaction per batch, offsets never applied twice, all counted.

Its failures (retries, refused batches, lost connections) and concurrent writers: test_bronze_sink_failures.py.
"""

from __future__ import annotations

import psycopg
import pyarrow.compute as pc
import pytest

from shopstream_assets_tests.streaming.bronze_batches import TOPIC, events, fetch, ledger, validated
from shopstream_assets_tests.streaming.conftest import good_event, without
from streaming.bronze_batch import write_batch
from streaming.bronze_sink import BronzeHoleError, BronzeSink
from streaming.events import RejectReason, encode_event
from streaming.ledger import PlannedOffsets, committed_offsets


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
