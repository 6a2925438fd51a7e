"""The ledger's running sums (migration 0007) against a scan of Bronze's tables, and its roll-up.

Bronze is written by the stream's own transactional writer (``streaming.bronze_batch``; the
messages validated by the reference rules, no JVM), into the real PostgreSQL. Every expected
figure is a scan of ``bronze.ingest_batches`` (plus its hourly roll-up) and of Bronze's tables,
never the sums under test.
"""

from __future__ import annotations

from dataclasses import astuple
from datetime import timedelta

import psycopg

from shopstream.database import connect
from streaming import ledger
from streaming.bronze_batch import SOURCE_STREAM, write_batch
from streaming.bronze_load import KafkaPositions, validated_table, write_messages
from streaming.producer import UNPACED_CLOCK_RATE
from streaming.simulator import Simulator

TOPIC = "clicks"
OTHER_TOPIC = "orders"

# Sums over the per-batch rows and the rolled-up hours: what the totals must equal.
_SCAN_SQL = """
select coalesce(sum(batches), 0), coalesce(sum(rows_written), 0), coalesce(sum(rejects), 0),
       coalesce(sum(duplicates), 0), coalesce(sum(messages_consumed), 0), max(last_batch_id),
       max(last_committed_at), max(max_event_time)
from (
    select count(*) as batches, sum(rows_written) as rows_written, sum(rejects) as rejects,
           sum(duplicates) as duplicates, sum(messages_consumed) as messages_consumed,
           max(batch_id) as last_batch_id, max(committed_at) as last_committed_at,
           max(max_event_time) as max_event_time
    from bronze.ingest_batches where kafka_topic = %(topic)s
    union all
    select sum(batches), sum(rows_written), sum(rejects), sum(duplicates), sum(messages_consumed),
           max(last_batch_id), max(last_committed_at), max(max_event_time)
    from bronze.ingest_batches_hourly where kafka_topic = %(topic)s
) as both_forms
"""


def _scanned(conn: psycopg.Connection, topic: str) -> tuple:
    return tuple(conn.execute(_SCAN_SQL, {"topic": topic}).fetchone())


def _summed(conn: psycopg.Connection, topic: str) -> tuple:
    return astuple(ledger.ingest_totals(conn, topic))[:-1]  # all but the database's clock


def _reasons_scanned(conn: psycopg.Connection, topic: str) -> dict[str, int]:
    return dict(
        conn.execute(
            "select reason, count(*) from bronze.clickstream_rejects where kafka_topic = %s group by reason", (topic,)
        ).fetchall()
    )


def _offset_bounds(conn: psycopg.Connection, table: str, leaving_out: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """{partition: (smallest start, largest end)} over ``table``'s rows but the batches ``leaving_out``."""
    column = "batch_id" if table == "bronze.ingest_batches" else "last_batch_id"
    rows = conn.execute(
        f"select starts.key::int, min(starts.value::bigint), max((end_offsets ->> starts.key)::bigint)"  # noqa: S608
        f" from {table}, jsonb_each_text(start_offsets) as starts"
        f" where not {column} = any(%s) group by 1",
        (list(leaving_out),),
    ).fetchall()
    return {partition: (start, end) for partition, start, end in rows}


def _stream_batch(conn: psycopg.Connection, seed: int, count: int, positions: KafkaPositions, **options) -> int:
    batch = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE, **options).take(count)
    table = validated_table(batch.keys, batch.values, positions)
    return write_batch(conn, table, topic=positions.topic, source=SOURCE_STREAM, spark_batch_id=seed).batch_id


def _replay_batch(conn: psycopg.Connection, seed: int, count: int, positions: KafkaPositions, **options) -> int:
    batch = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE, **options).take(count)
    return write_messages(conn, batch.keys, batch.values, positions)


def _assert_sums_equal_a_scan(conn: psycopg.Connection, topic: str) -> None:
    assert _summed(conn, topic) == _scanned(conn, topic)
    assert ledger.rejects_by_reason(conn, topic) == _reasons_scanned(conn, topic)
    (events,) = conn.execute(
        "select count(*) from bronze.clickstream_events where kafka_topic = %s", (topic,)
    ).fetchone()
    assert ledger.rows_written(conn, topic) == events


def test_the_running_sums_equal_a_scan_after_a_mixed_workload(database_url: str) -> None:
    with connect(database_url) as conn:
        empty = ledger.ingest_totals(conn, TOPIC)
        assert (empty.batches, empty.rows_written, empty.last_batch_id) == (0, 0, None)
        assert ledger.rejects_by_reason(conn, TOPIC) == {}
        assert ledger.latest_batch_id(conn, TOPIC) == 0

        positions = KafkaPositions(TOPIC, partitions=3)
        other = KafkaPositions(OTHER_TOPIC, partitions=2)
        _stream_batch(conn, 1, 300, positions)
        _replay_batch(conn, 2, 300, positions, bad_ratio=0.3)  # rejects of several reasons
        _replay_batch(conn, 3, 200, other, bad_ratio=0.5)  # another topic: its own sums
        _stream_batch(conn, 1, 300, positions)  # the same seed again at new offsets: duplicates among them
        replayed = KafkaPositions(TOPIC, partitions=3)  # offsets Bronze holds: the replay writes nothing
        assert _replay_batch(conn, 1, 300, replayed) is None
        newest = _stream_batch(conn, 4, 150, positions, bad_ratio=0.2)
        # The sink's planned range set on the batch after its insert (an update of the offsets only).
        with conn.transaction():
            ledger.set_batch_offsets(conn, newest, {0: 0}, {0: positions.next_offsets[0] + 2})

        totals = ledger.ingest_totals(conn, TOPIC)
        assert (totals.batches, totals.messages_consumed, totals.last_batch_id) == (4, 1_050, newest)
        assert totals.duplicates > 0 and totals.rejects > 0 and len(ledger.rejects_by_reason(conn, TOPIC)) > 1
        assert ledger.latest_batch_id(conn, TOPIC) == newest
        for topic in (TOPIC, OTHER_TOPIC):
            _assert_sums_equal_a_scan(conn, topic)

        # The Live page's reasons: all of them from the sums, the last hour's over the rejects' arrival.
        conn.execute(
            "update bronze.clickstream_rejects set ingested_at = ingested_at - interval '2 hours'"
            " where batch_id = (select min(batch_id) from bronze.clickstream_rejects where kafka_topic = %s)",
            (TOPIC,),
        )
        recent = dict(
            conn.execute(
                "select reason, count(*) from bronze.clickstream_rejects"
                " where kafka_topic = %s and ingested_at >= now() - interval '60 minutes' group by reason",
                (TOPIC,),
            ).fetchall()
        )
        assert sum(recent.values()) < totals.rejects
        assert {
            count.reason: (count.rejects, count.recent_rejects)
            for count in ledger.rejects_by_reason_recent(conn, TOPIC, 60)
        } == {reason: (rejects, recent.get(reason, 0)) for reason, rejects in _reasons_scanned(conn, TOPIC).items()}

        # A change to a batch's counts by hand moves the sums by the difference.
        conn.execute(
            "update bronze.ingest_batches set rows_written = rows_written - 1, duplicates = duplicates + 1"
            " where batch_id = %s",
            (newest,),
        )
        assert _summed(conn, TOPIC) == _scanned(conn, TOPIC)

        # A lost commit simulated as the hole tests do: the newest batch and its rows deleted.
        conn.execute("delete from bronze.clickstream_rejects where batch_id = %s", (newest,))
        conn.execute("delete from bronze.clickstream_events where batch_id = %s", (newest,))
        conn.execute("delete from bronze.ingest_offsets where kafka_topic = %s", (TOPIC,))
        conn.execute("delete from bronze.ingest_batches where batch_id = %s", (newest,))
        assert ledger.latest_batch_id(conn, TOPIC) < newest
        _assert_sums_equal_a_scan(conn, TOPIC)


def test_the_row_check_counts_recent_batches_and_sees_a_row_lost_there(database_url: str) -> None:
    with connect(database_url) as conn:
        assert astuple(ledger.row_counts(conn, TOPIC)) == (0, 0, 0, None, 0)
        positions = KafkaPositions(TOPIC, partitions=3)
        old = _stream_batch(conn, 1, 200, positions)
        recent = [_stream_batch(conn, seed, 100, positions, bad_ratio=0.1) for seed in (2, 3)]
        conn.execute(
            "update bronze.ingest_batches set committed_at = committed_at - interval '3 hours' where batch_id = %s",
            (old,),
        )
        (recent_rows,) = conn.execute(
            "select count(*) from bronze.clickstream_events where batch_id = any(%s)", (recent,)
        ).fetchone()
        (all_rows,) = conn.execute("select count(*) from bronze.clickstream_events").fetchone()
        counts = ledger.row_counts(conn, TOPIC)
        assert astuple(counts) == (recent_rows, recent_rows, 2, recent[0], all_rows)

        # A row lost from a batch in the window: the two sides disagree.
        conn.execute(
            "delete from bronze.clickstream_events where event_id ="
            " (select min(event_id) from bronze.clickstream_events where batch_id = %s)",
            (recent[1],),
        )
        lost = ledger.row_counts(conn, TOPIC)
        assert (lost.table_rows, lost.ledger_rows) == (recent_rows - 1, recent_rows)
        # One lost from a batch before the window is not seen: that count would read all of Bronze.
        conn.execute(
            "delete from bronze.clickstream_events where event_id ="
            " (select min(event_id) from bronze.clickstream_events where batch_id = %s)",
            (old,),
        )
        assert ledger.row_counts(conn, TOPIC) == lost
        # A wider window takes the old batch in.
        assert ledger.row_counts(conn, TOPIC, window="1 day").table_rows == all_rows - 2


def test_a_roll_up_keeps_totals_offsets_and_the_sensors_cursor(database_url: str) -> None:
    with connect(database_url) as conn:
        # Partitions 2 and 3 get messages in the first batch only: Bronze's offsets there stay
        # that batch's, so it keeps its row however old it is.
        wide = KafkaPositions(TOPIC, partitions=4)
        first = _stream_batch(conn, 1, 200, wide)
        positions = KafkaPositions(TOPIC, partitions=2, next_offsets={p: wide.next_offsets[p] for p in (0, 1)})
        batches = [first] + [
            _stream_batch(conn, seed, 80, positions, bad_ratio=0.2)
            if seed % 2
            else _replay_batch(conn, seed, 80, positions)
            for seed in range(2, 10)
        ]
        newest = batches[-1]
        # Ten days old, twenty minutes apart: several clock hours, the newest batch among them.
        conn.execute(
            "update bronze.ingest_batches set committed_at = now() - interval '10 days'"
            " + (batch_id - %s) * interval '20 minutes', started_at = now() - interval '11 days'",
            (first,),
        )
        before = {
            "totals": _scanned(conn, TOPIC),
            "offsets": ledger.committed_offsets(conn, TOPIC),
            "latest": ledger.latest_batch_id(conn, TOPIC),
            "reasons": ledger.rejects_by_reason(conn, TOPIC),
            "folded_offsets": _offset_bounds(conn, "bronze.ingest_batches", (first, newest)),
        }
        assert _summed(conn, TOPIC)[:6] == before["totals"][:6]  # the backdating moved no count
        assert ledger.batches_after(conn, TOPIC, newest) is None

        rolled = ledger.roll_up_ledger(conn, timedelta(days=7))
        kept = [row[0] for row in conn.execute("select batch_id from bronze.ingest_batches order by 1").fetchall()]
        assert kept == [first, newest]
        assert rolled.batches == len(batches) - 2 and rolled.hours > 1
        hourly = conn.execute(
            "select sum(batches), min(first_batch_id), max(last_batch_id) from bronze.ingest_batches_hourly"
        ).fetchone()
        assert tuple(hourly) == (rolled.batches, batches[1], batches[-2])

        # Totals, offsets, the newest batch and the sensor's view are those of before.
        assert _scanned(conn, TOPIC) == before["totals"]
        assert _summed(conn, TOPIC)[:6] == before["totals"][:6]
        assert ledger.committed_offsets(conn, TOPIC) == before["offsets"]
        assert ledger.latest_batch_id(conn, TOPIC) == before["latest"] == newest
        assert ledger.rejects_by_reason(conn, TOPIC) == before["reasons"]
        assert ledger.batches_after(conn, TOPIC, newest) is None
        # Each partition's offsets in the hours: the smallest start, the largest end of the rows folded.
        assert _offset_bounds(conn, "bronze.ingest_batches_hourly", ()) == before["folded_offsets"]

        # The stream goes on from where Bronze stood: no hole, the sensor sees exactly the new batch.
        after = _stream_batch(conn, 20, 50, positions)
        assert after > newest
        seen = ledger.batches_after(conn, TOPIC, newest)
        assert seen is not None and (seen.first_batch_id, seen.last_batch_id, seen.batches) == (after, after, 1)
        _assert_sums_equal_a_scan(conn, TOPIC)

        # The batch that was the newest is no longer named by Bronze's offsets: the next roll-up takes it,
        # then there is nothing left to take.
        assert ledger.roll_up_ledger(conn, timedelta(days=7)) == ledger.RollUp(1, 1)
        assert ledger.roll_up_ledger(conn, timedelta(days=7)) == ledger.RollUp(0, 0)
        _assert_sums_equal_a_scan(conn, TOPIC)

        # A batch that joins an hour already rolled up is merged into that hour's row.
        later = _stream_batch(conn, 21, 50, positions)
        (hour_count,) = conn.execute("select count(*) from bronze.ingest_batches_hourly").fetchone()
        conn.execute(
            "update bronze.ingest_batches set committed_at = (select max(last_committed_at)"
            " from bronze.ingest_batches_hourly) where batch_id = %s",
            (after,),
        )
        assert ledger.roll_up_ledger(conn, timedelta(days=7)) == ledger.RollUp(1, 1)
        assert conn.execute("select count(*) from bronze.ingest_batches_hourly").fetchone() == (hour_count,)
        assert ledger.latest_batch_id(conn, TOPIC) == later
        assert ledger.batches_after(conn, TOPIC, later) is None
        # (a commit time moved back by hand is no write: the running newest commit time keeps the real one)
        assert _summed(conn, TOPIC)[:6] == _scanned(conn, TOPIC)[:6]
        assert ledger.committed_offsets(conn, TOPIC) == {**before["offsets"], **positions.next_offsets}
