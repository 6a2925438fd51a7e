"""The Bronze ledger: ``bronze.ingest_batches`` and ``bronze.ingest_offsets``, without Spark or pyarrow.

The stream's sink, the Dagster sensor and checks, the live dashboard, `shopstream up` and
the benchmarks all ask the ledger the same questions -- up to which Kafka offset is Bronze
complete, which batches are new, how many rows were written -- and every Bronze writer
must take the same lock, so that SQL lives here once: every read and write of the two
tables is a function below, parameterized, named for what it returns. ``bronze.ingest_offsets``
is advanced by a trigger on each new ledger row (migration 0003), so no writer can forget it.
Importing this module costs only psycopg.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Writing: the lock, the batch id, the ledger row

# One lock for every Bronze writer (all topics, the stream, a Dagster replay, the benchmarks'
# bulk load): writers never interleave, so batch_id -- the cursor dbt and the sensor
# follow -- grows in commit order, and a probe for already-written ids is exact.
_BRONZE_LOCK_SQL = "select pg_advisory_xact_lock(hashtext('shopstream.bronze')::bigint)"

# Drawn under the Bronze lock; a rolled-back batch leaves a gap, as an identity always did.
_NEXT_BATCH_ID_SQL = (
    "select nextval(pg_get_serial_sequence('bronze.ingest_batches', 'batch_id')), statement_timestamp()"
)

_INSERT_BATCH_SQL = (
    "insert into bronze.ingest_batches (batch_id, kafka_topic, source, spark_query_id, spark_batch_id,"
    " start_offsets, end_offsets, messages_consumed, rows_written, rejects, duplicates, repaired,"
    " min_event_time, max_event_time, started_at)"
    " overriding system value values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " returning committed_at"
)


_TRY_BRONZE_LOCK_SQL = "select pg_try_advisory_xact_lock(hashtext('shopstream.bronze')::bigint)"

# The backend holding the Bronze lock: a bigint advisory key is split into classid (high
# 32 bits) and objid (low 32 bits), objsubid 1.
_BRONZE_LOCK_HOLDER_SQL = """
    select activity.pid, activity.application_name, host(activity.client_addr), activity.xact_start,
           activity.state
    from pg_locks as held
    join pg_stat_activity as activity on activity.pid = held.pid
    where held.locktype = 'advisory' and held.granted and held.objsubid = 1
      and held.database = (select oid from pg_database where datname = current_database())
      and ((held.classid::bigint << 32) | held.objid::bigint) = hashtext('shopstream.bronze')::bigint
"""

# How long one wait for the lock lasts before the waiter says again who holds it.
LOCK_REPORT_SECONDS = 10.0


@dataclass(frozen=True)
class LockHolder:
    pid: int
    application_name: str
    client_addr: str | None
    transaction_started: datetime | None
    state: str | None

    def __str__(self) -> str:
        since = self.transaction_started.isoformat(timespec="seconds") if self.transaction_started else "?"
        where = f" from {self.client_addr}" if self.client_addr else ""
        return (
            f"backend pid {self.pid} ({self.application_name or 'no application name'}{where}), "
            f"in its transaction since {since}, {self.state or 'state unknown'}"
        )


def bronze_lock_holder(conn: psycopg.Connection) -> LockHolder | None:
    """Who holds the Bronze lock now (None: nobody, or a role that may not see other sessions)."""
    row = conn.execute(_BRONZE_LOCK_HOLDER_SQL).fetchone()
    return LockHolder(*row) if row else None


def lock_bronze(conn: psycopg.Connection, report_every: float = LOCK_REPORT_SECONDS) -> None:
    """Take the Bronze writers' lock until the end of the current transaction.

    While another writer holds it, say every ``report_every`` seconds which backend that is:
    a writer whose host died keeps the lock until the server notices, and a wait with no
    log line looks like a hang.
    """
    if conn.execute(_TRY_BRONZE_LOCK_SQL).fetchone()[0]:
        return
    waited = 0.0
    previous_timeout = conn.execute("select current_setting('lock_timeout')").fetchone()[0]
    while True:
        log.warning(
            "waiting for the Bronze lock (%.0f s so far): held by %s",
            waited,
            bronze_lock_holder(conn) or "a backend this role cannot see",
        )
        try:
            with conn.transaction():  # a savepoint: a timed-out wait undoes only itself
                conn.execute("select set_config('lock_timeout', %s, true)", (f"{int(report_every * 1000)}ms",))
                conn.execute(_BRONZE_LOCK_SQL)
        except psycopg.errors.LockNotAvailable:
            waited += report_every
            continue
        conn.execute("select set_config('lock_timeout', %s, true)", (previous_timeout,))
        log.info("took the Bronze lock after %.0f s or more", waited)
        return


def next_batch_id(conn: psycopg.Connection) -> tuple[int, datetime]:
    """(a new batch_id, the statement's time: the batch's ingested_at); call under :func:`lock_bronze`."""
    batch_id, ingested_at = conn.execute(_NEXT_BATCH_ID_SQL).fetchone()
    return batch_id, ingested_at


def json_offsets(offsets: Mapping[int, int]) -> str:
    """{partition: offset} as the ledger's jsonb text, partitions in order."""
    return json.dumps({str(partition): offset for partition, offset in sorted(offsets.items())})


@dataclass(frozen=True)
class LedgerRow:
    """One batch's ledger row: what it consumed and wrote, and which offsets it covers."""

    batch_id: int
    kafka_topic: str
    source: str
    start_offsets: Mapping[int, int]
    end_offsets: Mapping[int, int]  # next offset to read per partition
    messages_consumed: int
    rows_written: int
    rejects: int
    duplicates: int
    repaired: int
    min_event_time: datetime | None
    max_event_time: datetime | None
    started_at: datetime
    spark_query_id: str | None = None
    spark_batch_id: int | None = None


def record_batch(conn: psycopg.Connection, row: LedgerRow) -> datetime:
    """Insert the ledger row (its trigger advances ``bronze.ingest_offsets``); returns committed_at."""
    (committed_at,) = conn.execute(
        _INSERT_BATCH_SQL,
        (
            row.batch_id,
            row.kafka_topic,
            row.source,
            row.spark_query_id,
            row.spark_batch_id,
            json_offsets(row.start_offsets),
            json_offsets(row.end_offsets),
            row.messages_consumed,
            row.rows_written,
            row.rejects,
            row.duplicates,
            row.repaired,
            row.min_event_time,
            row.max_event_time,
            row.started_at,
        ),
    ).fetchone()
    return committed_at


_SET_BATCH_OFFSETS_SQL = "update bronze.ingest_batches set start_offsets = %s, end_offsets = %s where batch_id = %s"


def set_batch_offsets(
    conn: psycopg.Connection, batch_id: int, start: Mapping[int, int], end: Mapping[int, int]
) -> None:
    """Replace a batch's offsets with the range it was planned to cover (its update trigger,
    migration 0005, advances ``bronze.ingest_offsets`` as the insert's does)."""
    conn.execute(_SET_BATCH_OFFSETS_SQL, (json_offsets(start), json_offsets(end), batch_id))


# ---------------------------------------------------------------------------------------
# Planned offsets: what a batch covers, and the hole before it


@dataclass(frozen=True)
class PlannedOffsets:
    """The offsets a batch was planned to read per partition, ``start`` inclusive, ``end`` exclusive.

    Spark's offset log holds them for a micro-batch (:func:`streaming.checkpoint.planned_offsets`),
    a replay chunk is its own range. They, not the messages read, say how far a batch takes
    Bronze: offsets hold more than messages (a transaction's commit or abort marker, the
    records of an aborted transaction under ``read_committed``), so a batch whose last
    offsets are such records ends past its last message. ``start`` is None when Spark no
    longer keeps the previous batch's offsets: then no hole can be checked.
    """

    start: Mapping[int, int] | None
    end: Mapping[int, int]


def missing_before(planned: PlannedOffsets, committed: Mapping[int, int]) -> dict[int, tuple[int, int]]:
    """{partition: (Bronze's next offset, the batch's planned start)} where the batch starts beyond Bronze.

    Writing such a batch would move Bronze's position past offsets it never wrote: PostgreSQL
    lost commits it had acknowledged (a failover to an asynchronous replica, a point-in-time
    restore) while the stream ran. A partition Bronze has never written is not checked: its
    first offset is wherever the broker's retention left the log.
    """
    if planned.start is None:
        return {}
    return {
        partition: (committed[partition], start)
        for partition, start in sorted(planned.start.items())
        if partition in committed and start > committed[partition]
    }


def planned_coverage(planned: PlannedOffsets, committed: Mapping[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    """(start, end) per partition of what a batch adds to Bronze: from Bronze's next offset (or the
    planned start, where Bronze has none) to the planned end, only partitions it advances."""
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for partition, planned_end in sorted(planned.end.items()):
        first = committed.get(partition)
        if first is None:
            first = (planned.start or {}).get(partition, 0)
        if planned_end > first:
            start[partition], end[partition] = first, planned_end
    return start, end


def describe_hole(missing: Mapping[int, tuple[int, int]]) -> str:
    """The partitions and offset ranges (inclusive) Bronze lacks, as an error names them."""
    return ", ".join(
        f"partition {partition} offsets {bronze}-{start - 1}" for partition, (bronze, start) in sorted(missing.items())
    )


# ---------------------------------------------------------------------------------------
# Offsets

_COMMITTED_OFFSETS_SQL = """\
select kafka_partition as partition, next_offset
from bronze.ingest_offsets
where kafka_topic = %(topic)s"""


def committed_offsets(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """{partition: next offset to write} of ``topic`` in Bronze; empty before the first batch."""
    rows = conn.execute(_COMMITTED_OFFSETS_SQL, {"topic": topic}).fetchall()
    return {int(partition): int(offset) for partition, offset in rows}


def read_committed_offsets(database_url: str, topic: str) -> dict[int, int]:
    """:func:`committed_offsets` over a connection of its own."""
    with psycopg.connect(database_url, connect_timeout=10, autocommit=True) as conn:
        return committed_offsets(conn, topic)


def messages_behind(watermarks: Mapping[int, tuple[int, int]], committed: Mapping[int, int]) -> dict[int, int]:
    """Consumer lag per partition: messages the broker holds that Bronze has not committed.

    ``watermarks`` are the broker's {partition: (low, high)}, ``committed`` Bronze's next
    offsets. A partition Bronze has not reached yet counts from its low watermark: what
    retention has dropped cannot be read, so it is not lag. Spark commits nothing to Kafka,
    so no Kafka tool can show this figure; the stream's log, the Dagster check, the live
    dashboard, `shopstream up` and the benchmarks all use this one definition.
    """
    return {
        partition: max(0, high - max(committed.get(partition, low), low))
        for partition, (low, high) in sorted(watermarks.items())
    }


# ---------------------------------------------------------------------------------------
# Batches

_LATEST_BATCH_ID_SQL = "select coalesce(max(batch_id), 0) from bronze.ingest_batches where kafka_topic = %s"

# One statement, one snapshot: the next offsets per partition are those after the range's
# last batch, even while the stream commits more.
_BATCHES_AFTER_SQL = """
select min(batch_id), max(batch_id), count(*), count(*) filter (where source = 'stream'),
       coalesce(sum(messages_consumed), 0), coalesce(sum(rows_written), 0),
       coalesce(sum(rejects), 0), coalesce(sum(duplicates), 0),
       min(min_event_time), max(max_event_time), max(committed_at),
       (select jsonb_object_agg(kafka_partition, next_offset)
        from bronze.ingest_offsets where kafka_topic = %(topic)s)
from bronze.ingest_batches
where kafka_topic = %(topic)s and batch_id > %(after_batch_id)s
"""

_ROW_COUNTS_SQL = """
select (select count(*) from bronze.clickstream_events where kafka_topic = %(topic)s),
       coalesce(sum(rows_written), 0), count(*)
from bronze.ingest_batches where kafka_topic = %(topic)s
"""

_MESSAGES_AND_REJECTS_SINCE_SQL = (
    "select coalesce(sum(messages_consumed), 0), coalesce(sum(rejects), 0) from bronze.ingest_batches"
    " where kafka_topic = %s and committed_at > now() - %s::interval"
)

_ROWS_WRITTEN_SQL = "select coalesce(sum(rows_written), 0) from bronze.ingest_batches where kafka_topic = %s"

_INGEST_TOTALS_SQL = """
select
    count(*) as batches,
    coalesce(sum(rows_written), 0) as rows_written,
    coalesce(sum(rejects), 0) as rejects,
    coalesce(sum(duplicates), 0) as duplicates,
    coalesce(sum(messages_consumed), 0) as messages_consumed,
    max(batch_id) as last_batch_id,
    max(committed_at) as last_batch_committed_at,
    max(max_event_time) as newest_event_time,
    now() as database_now
from bronze.ingest_batches
where kafka_topic = %(topic)s
"""

_LAST_BATCHES_SQL = """
select batch_id, source, committed_at, messages_consumed, rows_written, rejects, duplicates,
    extract(epoch from committed_at - started_at) as write_seconds
from bronze.ingest_batches
where kafka_topic = %(topic)s
order by batch_id desc
limit %(limit)s
"""

_NEWEST_EVENT_TIME_THROUGH_SQL = """
select max(max_event_time)
from bronze.ingest_batches
where batch_id <= %(batch_id)s
"""


@dataclass(frozen=True)
class BatchRange:
    """The ledger rows of one topic after a cursor, summed."""

    first_batch_id: int
    last_batch_id: int
    batches: int
    stream_batches: int
    messages: int
    rows_written: int
    rejects: int
    duplicates: int
    end_offsets: dict[str, int]  # Bronze's next offset per partition after the range
    min_event_time: datetime | None
    max_event_time: datetime | None
    last_committed_at: datetime


@dataclass(frozen=True)
class RowCounts:
    """Bronze's rows of a topic against what its ledger says was written."""

    table_rows: int
    ledger_rows: int
    batches: int


@dataclass(frozen=True)
class IngestTotals:
    """A topic's ledger summed, its newest batch, and the database's clock in the same snapshot."""

    batches: int
    rows_written: int
    rejects: int
    duplicates: int
    messages_consumed: int
    last_batch_id: int | None
    last_batch_committed_at: datetime | None
    newest_event_time: datetime | None
    database_now: datetime


@dataclass(frozen=True)
class LedgerBatch:
    """One batch as the Live Stream page lists it."""

    batch_id: int
    source: str
    committed_at: datetime
    messages_consumed: int
    rows_written: int
    rejects: int
    duplicates: int
    write_seconds: Decimal  # committed_at - started_at


def latest_batch_id(conn: psycopg.Connection, topic: str) -> int:
    """The newest batch_id of ``topic``; 0 before the first batch."""
    (latest,) = conn.execute(_LATEST_BATCH_ID_SQL, (topic,)).fetchone()
    return latest


def batches_after(conn: psycopg.Connection, topic: str, after_batch_id: int) -> BatchRange | None:
    """The batches of ``topic`` committed after ``after_batch_id``, summed; None if there are none."""
    row = conn.execute(_BATCHES_AFTER_SQL, {"topic": topic, "after_batch_id": after_batch_id}).fetchone()
    if row is None or row[0] is None:
        return None
    offsets = row[11] or {}
    return BatchRange(
        first_batch_id=row[0],
        last_batch_id=row[1],
        batches=row[2],
        stream_batches=row[3],
        messages=row[4],
        rows_written=row[5],
        rejects=row[6],
        duplicates=row[7],
        end_offsets={partition: offset for partition, offset in sorted(offsets.items(), key=lambda item: int(item[0]))},
        min_event_time=row[8],
        max_event_time=row[9],
        last_committed_at=row[10],
    )


def row_counts(conn: psycopg.Connection, topic: str) -> RowCounts:
    """Rows of ``topic`` in ``bronze.clickstream_events`` and in its ledger, in one snapshot."""
    table_rows, ledger_rows, batches = conn.execute(_ROW_COUNTS_SQL, {"topic": topic}).fetchone()
    return RowCounts(table_rows, ledger_rows, batches)


def messages_and_rejects_since(conn: psycopg.Connection, topic: str, window: str) -> tuple[int, int]:
    """(messages consumed, of which rejected) in the batches of ``topic`` committed within ``window``
    (a PostgreSQL interval, e.g. ``'1 hour'``)."""
    messages, rejects = conn.execute(_MESSAGES_AND_REJECTS_SINCE_SQL, (topic, window)).fetchone()
    return messages, rejects


def rows_written(conn: psycopg.Connection, topic: str) -> int:
    """Rows the ledger says were written to Bronze for ``topic``."""
    (rows,) = conn.execute(_ROWS_WRITTEN_SQL, (topic,)).fetchone()
    return rows


def ingest_totals(conn: psycopg.Connection, topic: str) -> IngestTotals:
    """The ledger of ``topic`` summed and its newest batch (one row per micro-batch)."""
    return IngestTotals(*conn.execute(_INGEST_TOTALS_SQL, {"topic": topic}).fetchone())


def last_batches(conn: psycopg.Connection, topic: str, limit: int) -> list[LedgerBatch]:
    """The newest ``limit`` batches of ``topic``, newest first."""
    rows = conn.execute(_LAST_BATCHES_SQL, {"topic": topic, "limit": limit}).fetchall()
    return [LedgerBatch(*row) for row in rows]


def newest_event_time_through(conn: psycopg.Connection, batch_id: int) -> datetime | None:
    """The newest event time in the batches up to ``batch_id`` (all topics): what a reader
    that has consumed Bronze up to that batch holds."""
    (newest,) = conn.execute(_NEWEST_EVENT_TIME_THROUGH_SQL, {"batch_id": batch_id}).fetchone()
    return newest


# ---------------------------------------------------------------------------------------
# What the benchmarks measure from the ledger (``shopstream bench ingest`` and ``freshness``)

_DRAIN_TIMING_SQL = """
select sum(messages_consumed), extract(epoch from max(committed_at) - min(started_at)),
       extract(epoch from min(committed_at) - min(started_at)),
       (array_agg(messages_consumed order by batch_id))[1]
from bronze.ingest_batches
where kafka_topic = %(topic)s
"""

_MESSAGES_CONSUMED_SQL = """
select coalesce(sum(messages_consumed), 0)
from bronze.ingest_batches
where kafka_topic = %(topic)s and committed_at <= coalesce(to_timestamp(%(until)s), 'infinity')
"""

# Per event, its batch's commit time minus the producer's send time (the sent_at_ms header).
_COMMIT_LATENCY_SQL = """
select count(*), percentile_cont(0.50) within group (order by seconds),
       percentile_cont(0.95) within group (order by seconds),
       percentile_cont(0.99) within group (order by seconds), max(seconds)
from (
    select extract(epoch from batches.committed_at - events.sent_at) as seconds
    from bronze.clickstream_events as events
    join bronze.ingest_batches as batches using (batch_id)
    where events.kafka_topic = %(topic)s
) as latencies
"""

_EVENTS_WITH_COMMIT_TIME_SQL = """
select (events.event_timestamp at time zone 'UTC')::date, events.batch_id,
       extract(epoch from events.sent_at), extract(epoch from batches.committed_at)
from bronze.clickstream_events as events
join bronze.ingest_batches as batches using (batch_id)
where events.kafka_topic = %(topic)s and events.sent_at >= to_timestamp(%(since)s)
"""

_BATCH_COMMIT_TIMES_SQL = """
select batch_id, extract(epoch from committed_at)::float8
from bronze.ingest_batches
where kafka_topic = %(topic)s
"""


@dataclass(frozen=True)
class DrainTiming:
    """A topic's ledger as one drain: first batch start -> last batch commit, and the first batch alone."""

    messages: int
    seconds: float
    first_batch_seconds: float
    first_batch_messages: int


def drain_timing(conn: psycopg.Connection, topic: str) -> DrainTiming:
    messages, seconds, first_batch_seconds, first_batch_messages = conn.execute(
        _DRAIN_TIMING_SQL, {"topic": topic}
    ).fetchone()
    return DrainTiming(messages, float(seconds), float(first_batch_seconds), first_batch_messages)


def messages_consumed(conn: psycopg.Connection, topic: str, committed_by: float | None = None) -> int:
    """Messages of ``topic`` in batches committed by ``committed_by`` (epoch seconds; None: all)."""
    (messages,) = conn.execute(_MESSAGES_CONSUMED_SQL, {"topic": topic, "until": committed_by}).fetchone()
    return messages


def commit_latency_percentiles(conn: psycopg.Connection, topic: str) -> tuple[int, float, float, float, float]:
    """(events, p50, p95, p99, max) seconds from an event's send to its batch's commit."""
    return conn.execute(_COMMIT_LATENCY_SQL, {"topic": topic}).fetchone()


def events_with_commit_time(conn: psycopg.Connection, topic: str, since: float) -> list[tuple]:
    """(event day, batch_id, sent_at, committed_at) of each event of ``topic`` sent since ``since``."""
    return conn.execute(_EVENTS_WITH_COMMIT_TIME_SQL, {"topic": topic, "since": since}).fetchall()


def batch_commit_times(conn: psycopg.Connection, topic: str) -> dict[int, float]:
    """batch_id -> commit time (epoch seconds) of every batch of ``topic``."""
    return dict(conn.execute(_BATCH_COMMIT_TIMES_SQL, {"topic": topic}).fetchall())
