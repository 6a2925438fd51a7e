"""The transactional PostgreSQL writer for one micro-batch (or one replay chunk).

Spark's ``foreachBatch`` is at-least-once: after a crash the last batch runs again with
the same offsets, and after a lost checkpoint the stream restarts from offsets it may
already have written. Exactly-once therefore lives here, in one transaction per batch:

1. one ``pg_advisory_xact_lock`` shared by every Bronze writer (``streaming.ledger.lock_bronze``),
   so writers never interleave and ``batch_id`` -- the cursor dbt and the sensor follow --
   grows in commit order;
2. the committed next offset per partition (``bronze.ingest_offsets``, which the ledger row's
   trigger advances) drops every message already written, so a replayed batch is not applied
   twice (a fully covered one writes nothing: "already committed");
3. the ledger row, its offsets, the events and the rejects (COPY) commit together. Events: the first
   copy of each event_id in the batch (lowest partition, then offset) whose id Bronze does
   not hold yet is COPYed straight into ``bronze.clickstream_events``; the lock makes that
   probe exact. Should a row collide anyway (a writer that bypasses this module), the batch
   falls back to a staging table and ``insert ... on conflict do nothing``. Duplicates =
   valid rows - inserted rows, so per batch messages_consumed = rows_written + rejects +
   duplicates (a table check enforces it).

Failures: a lost connection is retried (:class:`BronzeSink`); a batch PostgreSQL refuses for
its data (SQLSTATE class 22 or 54, e.g. an index row too big) fails at once with
:class:`PoisonBatchError` naming the batch, since every retry would fail the same way.

Why not always stage: the staging COPY, the sort for ``distinct on`` and the insert-select
cost PostgreSQL about as much CPU again as the direct COPY (measured on 300k rows).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from streaming.ledger import committed_offsets, json_offsets, lock_bronze, read_committed_offsets
from streaming.transforms import EVENT_COLUMNS, REJECT_COLUMNS

__all__ = [
    "SOURCE_REPLAY",
    "SOURCE_STREAM",
    "BatchResult",
    "BronzeSink",
    "PoisonBatchError",
    "committed_offsets",
    "never_succeeds",
    "read_committed_offsets",
    "retrying",
    "write_batch",
]

log = logging.getLogger("shopstream.stream")

SOURCE_STREAM = "stream"
SOURCE_REPLAY = "replay"

# PostgreSQL text cannot hold U+0000, which JSON allows ("\u0000"); it becomes U+FFFD.
_NUL = "\x00"
_NUL_REPLACEMENT = "\ufffd"

T = TypeVar("T")

# SQLSTATE classes of errors the same rows hit again on every attempt: 22 data exception
# (a value PostgreSQL cannot store), 54 program limit exceeded (an index row too big).
# Retrying those would only stop the stream later.
_NEVER_SUCCEEDS_SQLSTATE_CLASSES = ("22", "54")


class PoisonBatchError(RuntimeError):
    """A batch PostgreSQL refuses for what it holds: retrying, or restarting the stream, cannot help."""


def never_succeeds(error: BaseException) -> bool:
    """Is ``error`` one PostgreSQL raises for the data itself, so a retry would fail the same way?"""
    sqlstate = getattr(error, "sqlstate", None)
    return (
        isinstance(error, psycopg.Error) and sqlstate is not None and sqlstate[:2] in _NEVER_SUCCEEDS_SQLSTATE_CLASSES
    )


@dataclass(frozen=True)
class BatchResult:
    """What one call of :meth:`BronzeSink.write` did."""

    batch_id: int | None  # None: nothing new, every message was already committed
    messages_consumed: int
    rows_written: int
    rejects: int
    duplicates: int
    repaired: int
    already_committed: int  # messages dropped because their offsets were written before
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    committed_at: datetime | None = None


def _not_yet_committed(table: pa.Table, high_water: Mapping[int, int]) -> pa.Table:
    if not high_water or table.num_rows == 0:
        return table
    partitions = table["kafka_partition"]
    offsets = table["kafka_offset"]
    keep = pc.invert(pc.is_in(partitions, value_set=pa.array(list(high_water), pa.int32())))
    for partition, next_offset in high_water.items():
        keep = pc.or_(keep, pc.and_(pc.equal(partitions, partition), pc.greater_equal(offsets, next_offset)))
    return table.filter(keep)


def _offset_ranges(table: pa.Table) -> tuple[dict[int, int], dict[int, int]]:
    """({partition: first offset}, {partition: next offset to read}) of the messages in ``table``."""
    ranges = table.group_by("kafka_partition").aggregate([("kafka_offset", "min"), ("kafka_offset", "max")])
    start = dict(zip(ranges["kafka_partition"].to_pylist(), ranges["kafka_offset_min"].to_pylist(), strict=True))
    last = dict(zip(ranges["kafka_partition"].to_pylist(), ranges["kafka_offset_max"].to_pylist(), strict=True))
    return start, {partition: offset + 1 for partition, offset in last.items()}


def _without_nul(table: pa.Table) -> pa.Table:
    for index, column_field in enumerate(table.schema):
        if not pa.types.is_string(column_field.type) and not pa.types.is_large_string(column_field.type):
            continue
        column = table.column(index)
        if pc.any(pc.match_substring(column, _NUL)).as_py():
            fixed = pc.replace_substring(column, _NUL, _NUL_REPLACEMENT)
            table = table.set_column(index, column_field, fixed)
    return table


_EVENT_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(name) for name in EVENT_COLUMNS)
_REJECT_TARGET_COLUMNS = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "raw_value",
    "raw_text",
    "reason",
    "reason_detail",
    "sent_at",
    "ingested_at",
    "batch_id",
)


def write_batch(
    conn: psycopg.Connection,
    validated: pa.Table,
    *,
    topic: str,
    source: str = SOURCE_STREAM,
    spark_query_id: str | None = None,
    spark_batch_id: int | None = None,
    started_at: datetime | None = None,
) -> BatchResult:
    """Write one batch of ``streaming.transforms.parse_and_validate`` output in ONE transaction.

    ``conn`` must not be in a transaction. Returns the counts the ledger row holds.
    """
    started_at = started_at or datetime.now(UTC)
    with conn.transaction():
        lock_bronze(conn)
        fresh = _not_yet_committed(validated, committed_offsets(conn, topic))
        already_committed = validated.num_rows - fresh.num_rows
        if fresh.num_rows == 0:
            log.info("batch already committed: all %d messages were written before", already_committed)
            return BatchResult(None, 0, 0, 0, 0, 0, already_committed)

        is_reject = pc.is_valid(fresh["reject_reason"])
        good = _without_nul(fresh.filter(pc.invert(is_reject)).select(list(EVENT_COLUMNS)))
        rejected = fresh.filter(is_reject).select(list(REJECT_COLUMNS))
        start_offsets, end_offsets = _offset_ranges(fresh)
        event_times = pc.min_max(good["event_timestamp"]).as_py() if good.num_rows else {"min": None, "max": None}

        # The counts satisfy the ledger's check (0 = 0 + 0 + 0) until the final update.
        batch_id, ingested_at = conn.execute(
            "insert into bronze.ingest_batches (kafka_topic, source, spark_query_id, spark_batch_id,"
            " start_offsets, end_offsets, messages_consumed, rows_written, rejects, duplicates,"
            " min_event_time, max_event_time, started_at)"
            " values (%s, %s, %s, %s, %s, %s, 0, 0, 0, 0, %s, %s, %s)"
            " returning batch_id, statement_timestamp()",
            (
                topic,
                source,
                spark_query_id,
                spark_batch_id,
                json_offsets(start_offsets),
                json_offsets(end_offsets),
                event_times["min"],
                event_times["max"],
                started_at,
            ),
        ).fetchone()

        rows_written = repaired = 0
        if good.num_rows:
            rows_written, repaired = _insert_events(conn, good, batch_id, ingested_at)
        if rejected.num_rows:
            _copy_rejects(conn, rejected, batch_id, ingested_at)

        duplicates = good.num_rows - rows_written
        (committed_at,) = conn.execute(
            "update bronze.ingest_batches set messages_consumed = %s, rows_written = %s, rejects = %s,"
            " duplicates = %s, repaired = %s, committed_at = clock_timestamp()"
            " where batch_id = %s returning committed_at",
            (fresh.num_rows, rows_written, rejected.num_rows, duplicates, repaired, batch_id),
        ).fetchone()
    return BatchResult(
        batch_id=batch_id,
        messages_consumed=fresh.num_rows,
        rows_written=rows_written,
        rejects=rejected.num_rows,
        duplicates=duplicates,
        repaired=repaired,
        already_committed=already_committed,
        start_offsets=start_offsets,
        end_offsets=end_offsets,
        committed_at=committed_at,
    )


def _first_of_each_event_id(good: pa.Table) -> pa.Table:
    """The batch's first copy of each event_id (lowest partition, then offset)."""
    if good.num_rows < 2 or pc.count_distinct(good["event_id"]).as_py() == good.num_rows:
        return good  # the usual case, settled by a hash count instead of a sort
    order = pc.sort_indices(
        good, [("event_id", "ascending"), ("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
    )
    ordered = good.take(order)
    ids = ordered["event_id"]
    first = pc.not_equal(ids.slice(1), ids.slice(0, ids.length() - 1))
    keep = pa.chunked_array([pa.array([True]), *first.chunks])
    return ordered.filter(keep)


def _insert_events(conn: psycopg.Connection, good: pa.Table, batch_id: int, ingested_at: datetime) -> tuple[int, int]:
    """Insert the first copy of each event_id Bronze does not hold; (rows inserted, of which repaired).

    Rows not inserted are duplicates: an event_id seen earlier in this batch or in Bronze.
    """
    unique = _first_of_each_event_id(good)
    known = {event_id for (event_id,) in conn.execute(_PROBE_SQL, (_joined_ids(unique["event_id"]),))}
    if known:
        unique = unique.filter(pc.invert(pc.is_in(unique["event_id"], value_set=pa.array(list(known), pa.string()))))
    if unique.num_rows == 0:
        return 0, 0
    try:
        # A savepoint: a collision (only possible from a writer outside this module, which
        # does not take the lock) rolls back this COPY alone and takes the staging path.
        with conn.transaction():
            _copy_events(conn, unique, batch_id, ingested_at)
    except psycopg.errors.UniqueViolation:
        log.warning("event_id collision outside the Bronze lock: inserting through a staging table")
        return _insert_events_staged(conn, unique, batch_id, ingested_at)
    repaired = pc.sum(unique["repaired"]).as_py() or 0
    return unique.num_rows, repaired


# The ids go over as ONE newline-joined text (joined in C++, no Python object per row). An
# id that holds a newline is split and so not found: its COPY collides and the batch takes
# the staging path, still correct. Every id returned exists, so dropping those is right.
_PROBE_SQL = "select event_id from bronze.clickstream_events where event_id = any(string_to_array(%s, E'\\n'))"


def _joined_ids(ids: pa.ChunkedArray) -> str:
    flat = ids.combine_chunks()
    as_one_list = pa.ListArray.from_arrays(pa.array([0, len(flat)], pa.int32()), flat)
    return pc.binary_join(as_one_list, "\n")[0].as_py()


def _event_csv(good: pa.Table) -> io.BytesIO:
    # pyarrow writes CSV in C++ (~0.1 s per 100k rows); per-row write_row is ~10x slower.
    buffer = io.BytesIO()
    pacsv.write_csv(good, buffer, pacsv.WriteOptions(include_header=False, batch_size=8192))
    return buffer


def _copy_events(conn: psycopg.Connection, unique: pa.Table, batch_id: int, ingested_at: datetime) -> None:
    # The constant ingested_at goes as ISO text: formatting it as a timestamp per row costs
    # pyarrow's CSV writer ~40% more time.
    rows = unique.append_column(
        "ingested_at", pa.repeat(pa.scalar(ingested_at.isoformat()), unique.num_rows)
    ).append_column("batch_id", pa.repeat(pa.scalar(batch_id, pa.int64()), unique.num_rows))
    statement = sql.SQL("copy bronze.clickstream_events ({columns}, ingested_at, batch_id) from stdin (format csv)")
    with conn.cursor() as cursor, cursor.copy(statement.format(columns=_EVENT_COLUMN_LIST)) as copy:
        copy.write(_event_csv(rows).getbuffer())


def _insert_events_staged(
    conn: psycopg.Connection, good: pa.Table, batch_id: int, ingested_at: datetime
) -> tuple[int, int]:
    """COPY to a staging table, then insert what does not collide (the slow, always-safe path)."""
    conn.execute(
        sql.SQL(
            "create temp table clickstream_stage on commit drop as"
            " select {columns} from bronze.clickstream_events with no data"
        ).format(columns=_EVENT_COLUMN_LIST)
    )
    copy_statement = sql.SQL("copy clickstream_stage ({columns}) from stdin (format csv)").format(
        columns=_EVENT_COLUMN_LIST
    )
    with conn.cursor() as cursor:
        with cursor.copy(copy_statement) as copy:
            copy.write(_event_csv(good).getbuffer())
        cursor.execute(
            sql.SQL(
                "with inserted as ("
                " insert into bronze.clickstream_events ({columns}, ingested_at, batch_id)"
                " select distinct on (event_id) {columns}, %s, %s from clickstream_stage"
                " order by event_id, kafka_partition, kafka_offset"
                " on conflict (event_id) do nothing returning repaired)"
                " select count(*), count(*) filter (where repaired) from inserted"
            ).format(columns=_EVENT_COLUMN_LIST),
            (ingested_at, batch_id),
        )
        inserted, repaired = cursor.fetchone()
    return inserted, repaired


def _copy_rejects(conn: psycopg.Connection, rejected: pa.Table, batch_id: int, ingested_at: datetime) -> None:
    statement = sql.SQL("copy bronze.clickstream_rejects ({columns}) from stdin").format(
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in _REJECT_TARGET_COLUMNS)
    )
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rejected.to_pylist():
            raw_text = row["raw_text"]
            copy.write_row(
                (
                    row["kafka_topic"],
                    row["kafka_partition"],
                    row["kafka_offset"],
                    row["raw_value"],
                    raw_text.replace(_NUL, _NUL_REPLACEMENT) if raw_text is not None else None,
                    row["reject_reason"],
                    (row["reject_detail"] or "").replace(_NUL, _NUL_REPLACEMENT) or None,
                    row["sent_at"],
                    ingested_at,
                    batch_id,
                )
            )


def retrying(
    action: Callable[[], T],
    *,
    what: str,
    attempts: int = 8,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    transient: tuple[type[BaseException], ...] = (psycopg.OperationalError,),
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``action``; on a transient error log it, wait (doubling) and try again.

    An error the data itself causes (:func:`never_succeeds`) is raised at once, whatever its type.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except transient as error:
            if attempt == attempts or never_succeeds(error):
                raise
            log.warning(
                "%s failed (%s); retry %d/%d in %.0f s",
                what,
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                attempt,
                attempts - 1,
                delay,
            )
            if on_retry is not None:
                on_retry()
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")


class BronzeSink:
    """Writes batches of one topic over one reused connection, reconnecting after a failure.

    A batch whose commit acknowledgement was lost is safe to retry: its offsets are in the
    ledger by then, so the retry finds it "already committed".
    """

    def __init__(
        self,
        database_url: str,
        topic: str,
        *,
        source: str = SOURCE_STREAM,
        attempts: int = 8,
    ) -> None:
        self.database_url = database_url
        self.topic = topic
        self.source = source
        self.attempts = attempts
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.database_url, connect_timeout=10, autocommit=True)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def committed_offsets(self) -> dict[int, int]:
        return retrying(
            lambda: committed_offsets(self._connection(), self.topic),
            what="reading committed offsets from PostgreSQL",
            attempts=self.attempts,
            on_retry=self._drop_connection,
        )

    def write(self, validated: pa.Table, **batch_info: Any) -> BatchResult:
        try:
            return retrying(
                lambda: write_batch(self._connection(), validated, topic=self.topic, source=self.source, **batch_info),
                what="writing the batch to PostgreSQL",
                attempts=self.attempts,
                on_retry=self._drop_connection,
            )
        except psycopg.Error as error:
            if not never_succeeds(error):
                raise
            raise PoisonBatchError(self._poison_message(validated, error, batch_info.get("spark_batch_id"))) from error

    def _poison_message(self, validated: pa.Table, error: psycopg.Error, spark_batch_id: int | None) -> str:
        start, end = _offset_ranges(validated) if validated.num_rows else ({}, {})
        ranges = ", ".join(f"partition {p} offsets {start[p]}-{end[p] - 1}" for p in sorted(start)) or "no messages"
        spark_batch = f" (Spark batch {spark_batch_id})" if spark_batch_id is not None else ""
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (
            f"PostgreSQL refuses the batch of {validated.num_rows} messages from topic {self.topic!r}{spark_batch},"
            f" {ranges}: {first_line} (SQLSTATE {error.sqlstate}). Retrying cannot help: a message the"
            " validation rules let through does not fit Bronze; reject it in streaming/events.py and"
            " streaming/transforms.py, then restart the stream."
        )

    def close(self) -> None:
        self._drop_connection()

    def __enter__(self) -> BronzeSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
