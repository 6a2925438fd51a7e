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
3. the events, the rejects and the ledger row with its offsets commit together. The batch
   arrives in chunks (each Spark task's rows as the task finishes), and each chunk's events
   are COPYed (binary) into ``bronze.clickstream_events`` while Spark computes the next: the
   first copy of each event_id whose id Bronze does not hold yet. The lock makes that probe
   exact, and the rows of earlier chunks are visible to it, so a duplicate across chunks is
   caught too; the copy first in Kafka order (lowest partition, then offset) is the one kept,
   whichever chunk came first. Should a row collide anyway (a writer that bypasses this
   module), the chunk falls back to a staging table and ``insert ... on conflict do nothing``.
   The ledger row goes in last, when counts and offset ranges are known. Duplicates = valid
   rows - rows kept, so per batch messages_consumed = rows_written + rejects + duplicates (a
   table check enforces it).

Failures: a lost connection is retried (:class:`BronzeSink`; the chunks already taken are
kept and written again); a batch PostgreSQL refuses for its data (SQLSTATE class 22 or 54,
e.g. an index row too big) fails at once with :class:`PoisonBatchError` naming the batch,
since every retry would fail the same way.

Why not always stage: the staging COPY, the sort for ``distinct on`` and the insert-select
cost PostgreSQL about as much CPU again as the direct COPY (measured on 300k rows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder
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
# What write_batch takes: a whole table, or Arrow record batches as Spark delivers them.
Chunk = pa.Table | pa.RecordBatch

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


def _as_chunks(validated: pa.Table | Iterable[Chunk]) -> Iterable[Chunk]:
    return (validated,) if isinstance(validated, pa.Table) else validated


def _as_table(chunk: Chunk) -> pa.Table:
    return chunk if isinstance(chunk, pa.Table) else pa.Table.from_batches([chunk])


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
    validated: pa.Table | Iterable[Chunk],
    *,
    topic: str,
    source: str = SOURCE_STREAM,
    spark_query_id: str | None = None,
    spark_batch_id: int | None = None,
    started_at: datetime | None = None,
) -> BatchResult:
    """Write one batch of ``streaming.transforms.parse_and_validate`` output in ONE transaction.

    ``validated`` is a table, or its chunks in any order as Spark delivers them: each chunk
    is written as it arrives, so PostgreSQL works while Spark still computes the rest.
    ``conn`` must not be in a transaction. Returns the counts the ledger row holds.
    """
    started_at = started_at or datetime.now(UTC)
    with conn.transaction():
        lock_bronze(conn)
        batch = _BatchInProgress(conn, topic, committed_offsets(conn, topic))
        for chunk in _as_chunks(validated):
            batch.add(_as_table(chunk))
        if batch.messages_consumed == 0:
            log.info("batch already committed: all %d messages were written before", batch.already_committed)
            return BatchResult(None, 0, 0, 0, 0, 0, batch.already_committed)
        return batch.commit(
            source=source, spark_query_id=spark_query_id, spark_batch_id=spark_batch_id, started_at=started_at
        )


class _BatchInProgress:
    """One batch's writes inside its transaction, chunk by chunk; the ledger row comes last.

    The batch id is drawn from the ledger's identity when the first new message arrives (under
    the Bronze lock, so ids still grow in commit order) and the ledger row is inserted with it
    at the end, when the counts and offset ranges are known: its insert trigger advances
    ``bronze.ingest_offsets`` and the rejects' foreign key finds it.
    """

    def __init__(self, conn: psycopg.Connection, topic: str, high_water: Mapping[int, int]) -> None:
        self.conn = conn
        self.topic = topic
        self.high_water = high_water
        self.batch_id: int | None = None
        self.ingested_at: datetime | None = None
        self.messages_consumed = 0
        self.valid = 0
        self.rows_written = 0
        self.repaired = 0
        self.already_committed = 0
        self.start_offsets: dict[int, int] = {}
        self.end_offsets: dict[int, int] = {}
        self.min_event_time: datetime | None = None
        self.max_event_time: datetime | None = None
        self.rejected: list[pa.Table] = []

    def add(self, chunk: pa.Table) -> None:
        fresh = _not_yet_committed(chunk, self.high_water)
        self.already_committed += chunk.num_rows - fresh.num_rows
        if fresh.num_rows == 0:
            return
        if self.batch_id is None:
            self.batch_id, self.ingested_at = self.conn.execute(_NEXT_BATCH_ID_SQL).fetchone()
        self.messages_consumed += fresh.num_rows
        start, end = _offset_ranges(fresh)
        for partition, offset in start.items():
            self.start_offsets[partition] = min(offset, self.start_offsets.get(partition, offset))
        for partition, offset in end.items():
            self.end_offsets[partition] = max(offset, self.end_offsets.get(partition, offset))

        is_reject = pc.is_valid(fresh["reject_reason"])
        good = _without_nul(fresh.filter(pc.invert(is_reject)).select(list(EVENT_COLUMNS)))
        if good.num_rows < fresh.num_rows:
            self.rejected.append(fresh.filter(is_reject).select(list(REJECT_COLUMNS)))
        if good.num_rows == 0:
            return
        self.valid += good.num_rows
        times = pc.min_max(good["event_timestamp"]).as_py()
        self.min_event_time = min(filter(None, (self.min_event_time, times["min"])), default=None)
        self.max_event_time = max(filter(None, (self.max_event_time, times["max"])), default=None)
        written, repaired = _insert_events(self.conn, good, self.batch_id, self.ingested_at)
        self.rows_written += written
        self.repaired += repaired

    def commit(
        self, *, source: str, spark_query_id: str | None, spark_batch_id: int | None, started_at: datetime
    ) -> BatchResult:
        rejects = sum(table.num_rows for table in self.rejected)
        duplicates = self.valid - self.rows_written
        (committed_at,) = self.conn.execute(
            "insert into bronze.ingest_batches (batch_id, kafka_topic, source, spark_query_id, spark_batch_id,"
            " start_offsets, end_offsets, messages_consumed, rows_written, rejects, duplicates, repaired,"
            " min_event_time, max_event_time, started_at)"
            " overriding system value values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " returning committed_at",
            (
                self.batch_id,
                self.topic,
                source,
                spark_query_id,
                spark_batch_id,
                json_offsets(self.start_offsets),
                json_offsets(self.end_offsets),
                self.messages_consumed,
                self.rows_written,
                rejects,
                duplicates,
                self.repaired,
                self.min_event_time,
                self.max_event_time,
                started_at,
            ),
        ).fetchone()
        if rejects:
            _copy_rejects(self.conn, pa.concat_tables(self.rejected), self.batch_id, self.ingested_at)
        return BatchResult(
            batch_id=self.batch_id,
            messages_consumed=self.messages_consumed,
            rows_written=self.rows_written,
            rejects=rejects,
            duplicates=duplicates,
            repaired=self.repaired,
            already_committed=self.already_committed,
            start_offsets=dict(sorted(self.start_offsets.items())),
            end_offsets=dict(sorted(self.end_offsets.items())),
            committed_at=committed_at,
        )


# Drawn under the Bronze lock; a rolled-back batch leaves a gap, as an identity always did.
_NEXT_BATCH_ID_SQL = (
    "select nextval(pg_get_serial_sequence('bronze.ingest_batches', 'batch_id')), statement_timestamp()"
)


def _first_of_each_event_id(good: pa.Table) -> pa.Table:
    """The chunk's first copy of each event_id (lowest partition, then offset)."""
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
    """Insert the first copy of each event_id Bronze does not hold; (net rows inserted, of which repaired).

    Rows not inserted are duplicates: an event_id seen earlier in this chunk, in Bronze, or in
    an earlier chunk of this batch. Chunks arrive in whatever order Spark finishes them, so a
    copy here that comes first in Kafka (lower partition, then offset) than the one an earlier
    chunk of this batch wrote takes its place: the batch keeps the same rows whatever the order.
    """
    unique = _first_of_each_event_id(good)
    known = conn.execute(_PROBE_SQL, (batch_id, _joined_ids(unique["event_id"]))).fetchall()
    removed = removed_repaired = 0
    if known:
        here = unique.filter(pc.is_in(unique["event_id"], value_set=pa.array([row[0] for row in known], pa.string())))
        position_here = {
            row["event_id"]: (row["kafka_partition"], row["kafka_offset"])
            for row in here.select(["event_id", "kafka_partition", "kafka_offset"]).to_pylist()
        }
        superseded = [
            event_id
            for event_id, partition, offset, in_this_batch in known
            if in_this_batch and position_here[event_id] < (partition, offset)
        ]
        if superseded:
            deleted = conn.execute(_SUPERSEDE_SQL, (superseded,)).fetchall()
            removed, removed_repaired = len(deleted), sum(1 for (repaired,) in deleted if repaired)
        keep_out = {row[0] for row in known}.difference(superseded)
        if keep_out:
            unique = unique.filter(
                pc.invert(pc.is_in(unique["event_id"], value_set=pa.array(list(keep_out), pa.string())))
            )
    if unique.num_rows == 0:
        return -removed, -removed_repaired
    try:
        # A savepoint: a collision (only possible from a writer outside this module, which
        # does not take the lock) rolls back this COPY alone and takes the staging path.
        with conn.transaction():
            _copy_binary(conn, _COPY_EVENTS_SQL, _event_rows(unique, batch_id, ingested_at))
    except psycopg.errors.UniqueViolation:
        log.warning("event_id collision outside the Bronze lock: inserting through a staging table")
        inserted, repaired = _insert_events_staged(conn, unique, batch_id, ingested_at)
        return inserted - removed, repaired - removed_repaired
    repaired = pc.sum(unique["repaired"]).as_py() or 0
    return unique.num_rows - removed, repaired - removed_repaired


# The ids go over as ONE newline-joined text (joined in C++, no Python object per row). An
# id that holds a newline is split and so not found: its COPY collides and the chunk takes
# the staging path, still correct. Every id returned exists, so dropping those is right.
_PROBE_SQL = (
    "select event_id, kafka_partition, kafka_offset, batch_id = %s from bronze.clickstream_events"
    " where event_id = any(string_to_array(%s, E'\\n'))"
)
_SUPERSEDE_SQL = "delete from bronze.clickstream_events where event_id = any(%s) returning repaired"


def _joined_ids(ids: pa.ChunkedArray) -> str:
    flat = ids.combine_chunks()
    as_one_list = pa.ListArray.from_arrays(pa.array([0, len(flat)], pa.int32()), flat)
    return pc.binary_join(as_one_list, "\n")[0].as_py()


_COPY_EVENTS_SQL = sql.SQL(
    "copy bronze.clickstream_events ({columns}, ingested_at, batch_id) from stdin (format binary)"
).format(columns=_EVENT_COLUMN_LIST)
_COPY_STAGE_SQL = sql.SQL("copy clickstream_stage ({columns}) from stdin (format binary)").format(
    columns=_EVENT_COLUMN_LIST
)
# Below this a price is 0.00 however it is rounded; its shortest text may need more decimal
# places than the decimal cast holds (5e-324).
_TINY_PRICE = 0.001


def _postgres_types(good: pa.Table) -> pa.Table:
    """The event columns in the exact types of bronze.clickstream_events, as binary COPY needs.

    The price becomes numeric(14,2) the way PostgreSQL reads a price's text: the double's
    shortest decimal form, rounded half away from zero (so 1.005 is 1.01, as it was when the
    rows went over as CSV). Quantity and schema_version are in range: validation checked.
    """
    price = good["product_price"]
    price = pc.if_else(pc.less(price, _TINY_PRICE), 0.0, price)
    as_decimal = pc.cast(pc.cast(price, pa.string()), pa.decimal128(38, 20))
    price = pc.cast(pc.round(as_decimal, 2, round_mode="half_towards_infinity"), pa.decimal128(14, 2))
    for name, column in (
        ("product_price", price),
        ("quantity", pc.cast(good["quantity"], pa.int32())),
        ("schema_version", pc.cast(good["schema_version"], pa.int16())),
    ):
        good = good.set_column(good.schema.get_field_index(name), name, column)
    return good


def _event_rows(unique: pa.Table, batch_id: int, ingested_at: datetime) -> pa.Table:
    rows = _postgres_types(unique)
    return rows.append_column(
        "ingested_at", pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", "UTC")), rows.num_rows)
    ).append_column("batch_id", pa.repeat(pa.scalar(batch_id, pa.int64()), rows.num_rows))


def _copy_binary(conn: psycopg.Connection, statement: sql.Composable, rows: pa.Table) -> None:
    # PostgreSQL's binary COPY, encoded from Arrow in Rust (pgpq): per 250k rows ~0.1 s against
    # ~0.7 s for pyarrow's CSV writer, and PostgreSQL parses no text (~10% less of its CPU).
    encoder = ArrowToPostgresBinaryEncoder(rows.schema)
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write(encoder.write_header())
        for record_batch in rows.to_batches():
            copy.write(encoder.write_batch(record_batch))
        copy.write(encoder.finish())


def _insert_events_staged(
    conn: psycopg.Connection, good: pa.Table, batch_id: int, ingested_at: datetime
) -> tuple[int, int]:
    """COPY to a staging table, then insert what does not collide (the slow, always-safe path)."""
    conn.execute(
        sql.SQL(
            "create temp table if not exists clickstream_stage on commit drop as"
            " select {columns} from bronze.clickstream_events with no data"
        ).format(columns=_EVENT_COLUMN_LIST)
    )
    conn.execute("truncate clickstream_stage")
    _copy_binary(conn, _COPY_STAGE_SQL, _postgres_types(good))
    with conn.cursor() as cursor:
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


class _Replayable:
    """An iterable that can be iterated again: a retry rewrites the chunks it already took."""

    def __init__(self, source: Iterable[Chunk]) -> None:
        self._source = iter(source)
        self.seen: list[Chunk] = []

    def __iter__(self) -> Iterator[Chunk]:
        index = 0
        while True:
            if index == len(self.seen):
                chunk = next(self._source, None)
                if chunk is None:
                    return
                self.seen.append(chunk)
            yield self.seen[index]
            index += 1


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

    def write(self, validated: pa.Table | Iterable[Chunk], **batch_info: Any) -> BatchResult:
        chunks = _Replayable(_as_chunks(validated))
        try:
            return retrying(
                lambda: write_batch(self._connection(), chunks, topic=self.topic, source=self.source, **batch_info),
                what="writing the batch to PostgreSQL",
                attempts=self.attempts,
                on_retry=self._drop_connection,
            )
        except psycopg.Error as error:
            if not never_succeeds(error):
                raise
            seen = pa.concat_tables(_as_table(chunk) for chunk in chunks.seen) if chunks.seen else None
            raise PoisonBatchError(self._poison_message(seen, error, batch_info.get("spark_batch_id"))) from error

    def _poison_message(self, validated: pa.Table | None, error: psycopg.Error, spark_batch_id: int | None) -> str:
        messages = validated.num_rows if validated is not None else 0
        start, end = _offset_ranges(validated) if messages else ({}, {})
        ranges = ", ".join(f"partition {p} offsets {start[p]}-{end[p] - 1}" for p in sorted(start)) or "no messages"
        spark_batch = f" (Spark batch {spark_batch_id})" if spark_batch_id is not None else ""
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (
            f"PostgreSQL refuses the batch of {messages} messages from topic {self.topic!r}{spark_batch},"
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
