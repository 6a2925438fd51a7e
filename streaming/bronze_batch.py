"""One Bronze batch in one transaction: where exactly-once lives.

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
   are COPYed (binary, :mod:`streaming.bronze_copy`) into ``bronze.clickstream_events`` while
   Spark computes the next: the first copy of each event_id whose id Bronze does not hold
   yet. The lock makes that probe exact, and the rows of earlier chunks are visible to it,
   so a duplicate across chunks is caught too; the copy first in Kafka order (lowest
   partition, then offset) is the one kept, whichever chunk came first. Should a row
   collide anyway (a writer that bypasses this module), the chunk falls back to a staging
   table and ``insert ... on conflict do nothing``. The ledger row goes in last, when
   counts and offset ranges are known. Duplicates = valid rows - rows kept, so per batch
   messages_consumed = rows_written + rejects + duplicates (a table check enforces it).

Why not always stage: the staging COPY, the sort for ``distinct on`` and the insert-select
cost PostgreSQL about as much CPU again as the direct COPY.

Retries, reconnection and the poison-batch error are :mod:`streaming.bronze_sink`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from streaming.bronze_copy import copy_events, copy_rejects, insert_events_staged, without_nul
from streaming.ledger import LedgerRow, committed_offsets, lock_bronze, next_batch_id, record_batch
from streaming.transforms import EVENT_COLUMNS, REJECT_COLUMNS

log = logging.getLogger("shopstream.stream")

SOURCE_STREAM = "stream"
SOURCE_REPLAY = "replay"

# What write_batch takes: a whole table, or Arrow record batches as Spark delivers them.
Chunk = pa.Table | pa.RecordBatch


@dataclass(frozen=True)
class BatchResult:
    """What one call of :func:`write_batch` did."""

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


def not_yet_committed(table: pa.Table, high_water: Mapping[int, int]) -> pa.Table:
    """The messages of ``table`` at or after Bronze's next offset of their partition."""
    if not high_water or table.num_rows == 0:
        return table
    partitions = table["kafka_partition"]
    offsets = table["kafka_offset"]
    keep = pc.invert(pc.is_in(partitions, value_set=pa.array(list(high_water), pa.int32())))
    for partition, next_offset in high_water.items():
        keep = pc.or_(keep, pc.and_(pc.equal(partitions, partition), pc.greater_equal(offsets, next_offset)))
    return table.filter(keep)


def offset_ranges(table: pa.Table) -> tuple[dict[int, int], dict[int, int]]:
    """({partition: first offset}, {partition: next offset to read}) of the messages in ``table``."""
    ranges = table.group_by("kafka_partition").aggregate([("kafka_offset", "min"), ("kafka_offset", "max")])
    start = dict(zip(ranges["kafka_partition"].to_pylist(), ranges["kafka_offset_min"].to_pylist(), strict=True))
    last = dict(zip(ranges["kafka_partition"].to_pylist(), ranges["kafka_offset_max"].to_pylist(), strict=True))
    return start, {partition: offset + 1 for partition, offset in last.items()}


def as_chunks(validated: pa.Table | Iterable[Chunk]) -> Iterable[Chunk]:
    return (validated,) if isinstance(validated, pa.Table) else validated


def as_table(chunk: Chunk) -> pa.Table:
    return chunk if isinstance(chunk, pa.Table) else pa.Table.from_batches([chunk])


def write_batch(
    conn: psycopg.Connection,
    validated: pa.Table | Iterable[Chunk],
    *,
    topic: str,
    source: str = SOURCE_STREAM,
    spark_query_id: str | None = None,
    spark_batch_id: int | None = None,
    started_at: datetime | None = None,
    event_ids_are_new: bool = False,
) -> BatchResult:
    """Write one batch of ``streaming.transforms.parse_and_validate`` output in ONE transaction.

    ``validated`` is a table, or its chunks in any order as Spark delivers them: each chunk
    is written as it arrives, so PostgreSQL works while Spark still computes the rest.
    ``conn`` must not be in a transaction. Returns the counts the ledger row holds.

    ``event_ids_are_new``: the caller vouches that no event_id is in Bronze yet (the bulk
    path, :func:`streaming.bronze_load.bulk_load_valid_messages`), so the probe for ids
    Bronze already holds is skipped. Should one be there after all, the COPY collides and
    the chunk takes the staging path: the rows kept are the same either way.
    """
    started_at = started_at or datetime.now(UTC)
    with conn.transaction():
        lock_bronze(conn)
        batch = _BatchInProgress(conn, topic, committed_offsets(conn, topic), probe=not event_ids_are_new)
        for chunk in as_chunks(validated):
            batch.add(as_table(chunk))
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

    def __init__(self, conn: psycopg.Connection, topic: str, high_water: Mapping[int, int], *, probe: bool) -> None:
        self.conn = conn
        self.topic = topic
        self.high_water = high_water
        self.probe = probe
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
        fresh = not_yet_committed(chunk, self.high_water)
        self.already_committed += chunk.num_rows - fresh.num_rows
        if fresh.num_rows == 0:
            return
        if self.batch_id is None:
            self.batch_id, self.ingested_at = next_batch_id(self.conn)
        self.messages_consumed += fresh.num_rows
        start, end = offset_ranges(fresh)
        for partition, offset in start.items():
            self.start_offsets[partition] = min(offset, self.start_offsets.get(partition, offset))
        for partition, offset in end.items():
            self.end_offsets[partition] = max(offset, self.end_offsets.get(partition, offset))

        is_reject = pc.is_valid(fresh["reject_reason"])
        good = without_nul(fresh.filter(pc.invert(is_reject)).select(list(EVENT_COLUMNS)))
        if good.num_rows < fresh.num_rows:
            self.rejected.append(fresh.filter(is_reject).select(list(REJECT_COLUMNS)))
        if good.num_rows == 0:
            return
        self.valid += good.num_rows
        times = pc.min_max(good["event_timestamp"]).as_py()
        self.min_event_time = min(filter(None, (self.min_event_time, times["min"])), default=None)
        self.max_event_time = max(filter(None, (self.max_event_time, times["max"])), default=None)
        written, repaired = _insert_events(self.conn, good, self.batch_id, self.ingested_at, probe=self.probe)
        self.rows_written += written
        self.repaired += repaired

    def commit(
        self, *, source: str, spark_query_id: str | None, spark_batch_id: int | None, started_at: datetime
    ) -> BatchResult:
        rejects = sum(table.num_rows for table in self.rejected)
        duplicates = self.valid - self.rows_written
        committed_at = record_batch(
            self.conn,
            LedgerRow(
                batch_id=self.batch_id,
                kafka_topic=self.topic,
                source=source,
                spark_query_id=spark_query_id,
                spark_batch_id=spark_batch_id,
                start_offsets=self.start_offsets,
                end_offsets=self.end_offsets,
                messages_consumed=self.messages_consumed,
                rows_written=self.rows_written,
                rejects=rejects,
                duplicates=duplicates,
                repaired=self.repaired,
                min_event_time=self.min_event_time,
                max_event_time=self.max_event_time,
                started_at=started_at,
            ),
        )
        if rejects:
            copy_rejects(self.conn, pa.concat_tables(self.rejected), self.batch_id, self.ingested_at)
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


def _insert_events(
    conn: psycopg.Connection, good: pa.Table, batch_id: int, ingested_at: datetime, *, probe: bool = True
) -> tuple[int, int]:
    """Insert the first copy of each event_id Bronze does not hold; (net rows inserted, of which repaired).

    Rows not inserted are duplicates: an event_id seen earlier in this chunk, in Bronze, or in
    an earlier chunk of this batch. Chunks arrive in whatever order Spark finishes them, so a
    copy here that comes first in Kafka (lower partition, then offset) than the one an earlier
    chunk of this batch wrote takes its place: the batch keeps the same rows whatever the order.
    """
    unique = _first_of_each_event_id(good)
    known = conn.execute(_PROBE_SQL, (batch_id, _joined_ids(unique["event_id"]))).fetchall() if probe else []
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
        # does not take the lock, or ids a bulk load wrongly vouched new) rolls back this
        # COPY alone and takes the staging path.
        with conn.transaction():
            copy_events(conn, unique, batch_id, ingested_at)
    except psycopg.errors.UniqueViolation:
        log.warning("event_id collision outside the Bronze lock: inserting through a staging table")
        inserted, repaired = insert_events_staged(conn, unique, batch_id, ingested_at)
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
