"""What the sensor, the checks, the dashboard and `shopstream up` read from the Bronze ledger.

Every read here is bounded, however long the stream has run: totals and rejects by reason
come from the running sums kept by migration 0007's triggers (``bronze.ingest_totals``,
``bronze.reject_totals``), batch lists and ranges walk ``batch_id`` from a cursor or from the
newest batch, the row check counts Bronze only over a recent window of batches, and the
newest event time through a batch is read from the running value migration 0008 keeps on
each ledger row. Rolled-up hours (``bronze.ingest_batches_hourly``) change none of these answers.
Re-exported by :mod:`streaming.ledger`, which callers import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg

# The row check's window, back from the topic's newest batch (not from now: an idle stream
# still has its last hour checked). Batches rolled up inside it (a stream idle for longer than
# the ledger's keep age) count by their hour's sums.
ROW_CHECK_WINDOW = "1 hour"

_LATEST_BATCH_ID_SQL = "select coalesce(max(last_batch_id), 0) from bronze.ingest_totals where kafka_topic = %s"

# One statement, one snapshot: the next offsets per partition are those after the range's
# last batch, even while the stream commits more. The topic's batches after the cursor, per
# batch and, where the ledger has rolled them up (a sensor stopped for longer than the keep
# age), per hour: an hour holding the cursor's batch counts whole. Both by index from the cursor.
_BATCHES_AFTER_SQL = """
with units as (
    select batch_id as first_batch_id, batch_id as last_batch_id, 1::bigint as batches,
           (source = 'stream')::int::bigint as stream_batches, messages_consumed::bigint,
           rows_written::bigint, rejects::bigint, duplicates::bigint, min_event_time, max_event_time,
           committed_at as last_committed_at
    from bronze.ingest_batches
    where kafka_topic = %(topic)s and batch_id > %(after_batch_id)s
    union all
    select first_batch_id, last_batch_id, batches, stream_batches, messages_consumed, rows_written, rejects,
           duplicates, min_event_time, max_event_time, last_committed_at
    from bronze.ingest_batches_hourly
    where kafka_topic = %(topic)s and last_batch_id > %(after_batch_id)s
)
select min(first_batch_id), max(last_batch_id),
       coalesce(sum(batches), 0)::bigint, coalesce(sum(stream_batches), 0)::bigint,
       coalesce(sum(messages_consumed), 0)::bigint, coalesce(sum(rows_written), 0)::bigint,
       coalesce(sum(rejects), 0)::bigint, coalesce(sum(duplicates), 0)::bigint,
       min(min_event_time), max(max_event_time), max(last_committed_at),
       (select jsonb_object_agg(kafka_partition, next_offset)
        from bronze.ingest_offsets where kafka_topic = %(topic)s)
from units
"""

# The window's first batch, then both sides from it by batch_id (the events' batch_id index,
# the ledger's primary key): a batch committed meanwhile is in neither. Batches rolled up
# (bronze.ingest_batches_hourly) count by their hour: an hour lies wholly inside the window's
# batch range or wholly before it, since batch ids grow in commit order; its rows are found by
# hour, which is never before the hour of the window's start.
_ROW_COUNTS_SQL = """
with totals as (
    select last_batch_committed_at, rows_written,
           last_batch_committed_at - %(window)s::interval as since
    from bronze.ingest_totals where kafka_topic = %(topic)s
), first_batch as (
    select min(first_batch_id) as batch_id from (
        select min(batch_id) as first_batch_id
        from bronze.ingest_batches
        where kafka_topic = %(topic)s and committed_at >= (select since from totals)
        union all
        select min(first_batch_id)
        from bronze.ingest_batches_hourly
        where kafka_topic = %(topic)s and hour >= date_trunc('hour', (select since from totals), 'UTC')
          and last_committed_at >= (select since from totals)
    ) as candidates
), ledger as (
    select rows_written::bigint, 1::bigint as batches
    from bronze.ingest_batches
    where kafka_topic = %(topic)s and batch_id >= (select batch_id from first_batch)
    union all
    select rows_written, batches
    from bronze.ingest_batches_hourly
    where kafka_topic = %(topic)s and hour >= date_trunc('hour', (select since from totals), 'UTC')
      and first_batch_id >= (select batch_id from first_batch)
)
select (select count(*) from bronze.clickstream_events
        where kafka_topic = %(topic)s and batch_id >= (select batch_id from first_batch)),
       coalesce(sum(rows_written), 0)::bigint, coalesce(sum(batches), 0)::bigint, (select batch_id from first_batch),
       coalesce((select rows_written from totals), 0)
from ledger
"""

_MESSAGES_AND_REJECTS_SINCE_SQL = (
    "select coalesce(sum(messages_consumed), 0), coalesce(sum(rejects), 0) from bronze.ingest_batches"
    " where kafka_topic = %s and committed_at > now() - %s::interval"
)

_ROWS_WRITTEN_SQL = "select coalesce(max(rows_written), 0) from bronze.ingest_totals where kafka_topic = %s"

# A topic never written has no totals row: zeros, and the clock still.
_INGEST_TOTALS_SQL = """
select coalesce(totals.batches, 0), coalesce(totals.rows_written, 0), coalesce(totals.rejects, 0),
       coalesce(totals.duplicates, 0), coalesce(totals.messages_consumed, 0), totals.last_batch_id,
       totals.last_batch_committed_at, totals.newest_event_time, now()
from (select 1) as one
left join bronze.ingest_totals as totals on totals.kafka_topic = %(topic)s
"""

_REJECTS_BY_REASON_SQL = """
select reason, rejects from bronze.reject_totals
where kafka_topic = %(topic)s and rejects > 0
order by rejects desc, reason
"""

# The recent counts over the rejects' ingested_at index: only the window's rows are read.
_REJECTS_BY_REASON_RECENT_SQL = """
select totals.reason, totals.rejects, coalesce(recent.rejects, 0)
from bronze.reject_totals as totals
left join (
    select reason, count(*) as rejects
    from bronze.clickstream_rejects
    where kafka_topic = %(topic)s and ingested_at >= now() - make_interval(mins => %(minutes)s)
    group by reason
) as recent using (reason)
where totals.kafka_topic = %(topic)s and totals.rejects > 0
order by totals.rejects desc, totals.reason
"""

_LAST_BATCHES_SQL = """
select batch_id, source, committed_at, messages_consumed, rows_written, rejects, duplicates,
    extract(epoch from committed_at - started_at) as write_seconds
from bronze.ingest_batches
where kafka_topic = %(topic)s
order by batch_id desc
limit %(limit)s
"""

# Two index probes (migration 0008 keeps the running newest event time on each row): the ledger
# row at or below the batch_id, and the newest hour rolled up at or below it. A batch_id inside
# a rolled-up hour (Gold more than the ledger's keep age behind) gets that of the hour before.
_NEWEST_EVENT_TIME_THROUGH_SQL = """
select greatest(
    (select newest_event_time_so_far from bronze.ingest_batches
     where batch_id <= %(batch_id)s order by batch_id desc limit 1),
    (select newest_event_time_so_far from bronze.ingest_batches_hourly
     where last_batch_id <= %(batch_id)s order by last_batch_id desc limit 1)
)
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
    """Bronze's rows of a topic against what its ledger says was written, over the batches from
    ``first_batch_id`` on (the row check's window); ``total_rows_written`` is the ledger's running sum."""

    table_rows: int
    ledger_rows: int
    batches: int
    first_batch_id: int | None = None
    total_rows_written: int = 0


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
class RejectCount:
    """One reason's rejects of a topic: all of them, and those ingested in the recent window."""

    reason: str
    rejects: int
    recent_rejects: int


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
    """The batches of ``topic`` committed after ``after_batch_id``, summed; None if there are none.

    A roll-up never takes a topic's newest batch, so a cursor at it never sees rolled-up
    batches as new; a cursor older than the keep age counts the hours rolled up since.
    """
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


def row_counts(conn: psycopg.Connection, topic: str, window: str = ROW_CHECK_WINDOW) -> RowCounts:
    """Rows of ``topic`` in ``bronze.clickstream_events`` and in its ledger, in one snapshot, over the
    batches committed within ``window`` (a PostgreSQL interval) before the topic's newest one.

    A row lost from an older batch is no longer seen: counting it would read all of Bronze.
    """
    table_rows, ledger_rows, batches, first_batch_id, total = conn.execute(
        _ROW_COUNTS_SQL, {"topic": topic, "window": window}
    ).fetchone()
    return RowCounts(table_rows, ledger_rows, batches, first_batch_id, total)


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
    """The ledger of ``topic`` summed (rolled-up hours included) and its newest batch."""
    return IngestTotals(*conn.execute(_INGEST_TOTALS_SQL, {"topic": topic}).fetchone())


def rejects_by_reason(conn: psycopg.Connection, topic: str) -> dict[str, int]:
    """Every reject of ``topic`` ever written, counted by reason, most frequent first."""
    return dict(conn.execute(_REJECTS_BY_REASON_SQL, {"topic": topic}).fetchall())


def rejects_by_reason_recent(conn: psycopg.Connection, topic: str, minutes: int) -> list[RejectCount]:
    """Rejects of ``topic`` by reason, all and in the last ``minutes``, most frequent first."""
    rows = conn.execute(_REJECTS_BY_REASON_RECENT_SQL, {"topic": topic, "minutes": minutes}).fetchall()
    return [RejectCount(*row) for row in rows]


def last_batches(conn: psycopg.Connection, topic: str, limit: int) -> list[LedgerBatch]:
    """The newest ``limit`` batches of ``topic``, newest first."""
    rows = conn.execute(_LAST_BATCHES_SQL, {"topic": topic, "limit": limit}).fetchall()
    return [LedgerBatch(*row) for row in rows]


def newest_event_time_through(conn: psycopg.Connection, batch_id: int) -> datetime | None:
    """The newest event time in the batches up to ``batch_id`` (all topics): what a reader
    that has consumed Bronze up to that batch holds. Two index probes, however long the ledger."""
    (newest,) = conn.execute(_NEWEST_EVENT_TIME_THROUGH_SQL, {"batch_id": batch_id}).fetchone()
    return newest
