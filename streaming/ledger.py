"""The Bronze ledger: ``bronze.ingest_batches`` and ``bronze.ingest_offsets``, without Spark or pyarrow.

The stream's sink, the Dagster sensor and checks, the live dashboard, `shopstream up` and
the benchmarks all ask the ledger the same questions -- up to which Kafka offset is Bronze
complete, which batches are new, how many rows were written -- and every Bronze writer
must take the same lock, so that SQL lives here once: every read and write of the two
tables is a function here or in the modules below, parameterized, named for what it returns. ``bronze.ingest_offsets``
is advanced by a trigger on each new ledger row (migration 0003), so no writer can forget it.
Importing this module costs only psycopg.

This module holds the writes, the lock and the offsets; the reads of totals and batches live in
:mod:`streaming.ledger_reads`, the benchmarks' in :mod:`streaming.ledger_bench`, the roll-up of
old rows in :mod:`streaming.ledger_roll_up`. All are re-exported here: callers write
``from streaming import ledger; ledger.X``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

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
# Reads, the benchmarks' reads and the roll-up: one import for every caller

from streaming.ledger_bench import (  # noqa: E402
    DrainTiming,
    batch_commit_times,
    commit_latency_percentiles,
    drain_timing,
    events_with_commit_time,
    messages_consumed,
)
from streaming.ledger_reads import (  # noqa: E402
    ROW_CHECK_WINDOW,
    BatchRange,
    IngestTotals,
    LedgerBatch,
    RejectCount,
    RowCounts,
    batches_after,
    ingest_totals,
    last_batches,
    latest_batch_id,
    messages_and_rejects_since,
    newest_event_time_through,
    rejects_by_reason,
    rejects_by_reason_recent,
    row_counts,
    rows_written,
)
from streaming.ledger_roll_up import RollUp, roll_up_ledger  # noqa: E402

__all__ = [
    "LOCK_REPORT_SECONDS",
    "ROW_CHECK_WINDOW",
    "BatchRange",
    "DrainTiming",
    "IngestTotals",
    "LedgerBatch",
    "LedgerRow",
    "LockHolder",
    "PlannedOffsets",
    "RejectCount",
    "RollUp",
    "RowCounts",
    "batch_commit_times",
    "batches_after",
    "bronze_lock_holder",
    "commit_latency_percentiles",
    "committed_offsets",
    "describe_hole",
    "drain_timing",
    "events_with_commit_time",
    "ingest_totals",
    "json_offsets",
    "last_batches",
    "latest_batch_id",
    "lock_bronze",
    "messages_and_rejects_since",
    "messages_behind",
    "messages_consumed",
    "missing_before",
    "newest_event_time_through",
    "next_batch_id",
    "planned_coverage",
    "read_committed_offsets",
    "record_batch",
    "rejects_by_reason",
    "rejects_by_reason_recent",
    "roll_up_ledger",
    "row_counts",
    "rows_written",
    "set_batch_offsets",
]
