"""The Bronze writer the stream and the replay use: one batch at a time, retried until it commits.

What one batch writes, and why it is written exactly once, is :mod:`streaming.bronze_batch`
(the transaction; its docstring tells the whole exactly-once story) and :mod:`streaming.bronze_copy`
(the COPY). This module keeps a batch going through failures: a lost connection is retried
(:class:`BronzeSink`; the chunks already taken are kept and written again); a batch
PostgreSQL refuses for its data (SQLSTATE class 22 or 54, e.g. an index row too big) fails at
once with :class:`PoisonBatchError` naming the batch, since every retry would fail the same way.

A batch that comes with the offsets it was planned to cover (:class:`streaming.ledger.PlannedOffsets`:
a micro-batch's from Spark's offset log, a replay chunk's own range) is checked against
Bronze's next offsets under the Bronze lock, in its own transaction: one that starts beyond
them is refused with :class:`BronzeHoleError` before anything is written, and one that is
written records its planned range in the ledger, so offsets that hold no message (a
transaction's marker, an aborted transaction's records) still move Bronze's position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import pyarrow as pa

from shopstream import database
from streaming.bronze_batch import (
    SOURCE_STREAM,
    BatchResult,
    Chunk,
    as_chunks,
    as_table,
    offset_ranges,
    write_batch,
)
from streaming.ledger import (
    LedgerRow,
    PlannedOffsets,
    committed_offsets,
    describe_hole,
    lock_bronze,
    missing_before,
    next_batch_id,
    planned_coverage,
    record_batch,
    set_batch_offsets,
)

log = logging.getLogger("shopstream.stream")

T = TypeVar("T")

# SQLSTATE classes of errors the same rows hit again on every attempt: 22 data exception
# (a value PostgreSQL cannot store), 54 program limit exceeded (an index row too big).
# Retrying those would only stop the stream later.
_NEVER_SUCCEEDS_SQLSTATE_CLASSES = ("22", "54")


class PoisonBatchError(RuntimeError):
    """A batch PostgreSQL refuses for what it holds: retrying, or restarting the stream, cannot help."""


class BronzeHoleError(RuntimeError):
    """A batch starts beyond Bronze's next offset: Bronze lost batches it had committed."""


def never_succeeds(error: BaseException) -> bool:
    """Is ``error`` one PostgreSQL raises for the data itself, so a retry would fail the same way?"""
    sqlstate = getattr(error, "sqlstate", None)
    return (
        isinstance(error, psycopg.Error) and sqlstate is not None and sqlstate[:2] in _NEVER_SUCCEEDS_SQLSTATE_CLASSES
    )


def retrying(
    action: Callable[[], T],
    *,
    what: str,
    attempts: int = 8,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    transient: tuple[type[BaseException], ...] = (psycopg.OperationalError,),
    permanent: tuple[type[BaseException], ...] = (),
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``action``; on a transient error log it, wait (doubling) and try again.

    An error the data itself causes (:func:`never_succeeds`), or one of ``permanent``, is
    raised at once, whatever its type.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except transient as error:
            if attempt == attempts or never_succeeds(error) or isinstance(error, permanent):
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
            self._conn = database.connect_writer(
                self.database_url, application_name=f"shopstream bronze writer ({self.source})", autocommit=True
            )
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

    def write(
        self, validated: pa.Table | Iterable[Chunk], *, planned: PlannedOffsets | None = None, **batch_info: Any
    ) -> BatchResult:
        """Write one batch; with ``planned``, refuse it if it starts beyond Bronze and record its planned range."""
        chunks = _Replayable(as_chunks(validated))
        try:
            return retrying(
                lambda: self._write_once(chunks, planned, batch_info),
                what="writing the batch to PostgreSQL",
                attempts=self.attempts,
                on_retry=self._drop_connection,
            )
        except psycopg.Error as error:
            if not never_succeeds(error):
                raise
            seen = pa.concat_tables(as_table(chunk) for chunk in chunks.seen) if chunks.seen else None
            raise PoisonBatchError(self._poison_message(seen, error, batch_info.get("spark_batch_id"))) from error

    def _write_once(self, chunks: Iterable[Chunk], planned: PlannedOffsets | None, batch_info: Any) -> BatchResult:
        conn = self._connection()
        if planned is None:
            return write_batch(conn, chunks, topic=self.topic, source=self.source, **batch_info)
        # One transaction around the batch's own (a savepoint then): the check, the rows and the
        # planned range commit together, under the lock no other writer passes meanwhile.
        with conn.transaction():
            lock_bronze(conn)
            committed = committed_offsets(conn, self.topic)
            if missing := missing_before(planned, committed):
                raise BronzeHoleError(self._hole_message(missing, batch_info.get("spark_batch_id")))
            result = write_batch(conn, chunks, topic=self.topic, source=self.source, **batch_info)
            return self._cover_planned(conn, result, planned, committed, batch_info)

    def _cover_planned(
        self,
        conn: psycopg.Connection,
        result: BatchResult,
        planned: PlannedOffsets,
        committed: dict[int, int],
        batch_info: Any,
    ) -> BatchResult:
        """The batch's ledger row with the range it was planned to cover, not its messages' range.

        A batch with no new message that still moves Bronze's position (it read only markers or
        an aborted transaction) gets a ledger row of its own, counting nothing.
        """
        start, end = planned_coverage(planned, committed)
        if not end or (start, end) == (result.start_offsets, result.end_offsets):
            return result
        if result.batch_id is not None:
            set_batch_offsets(conn, result.batch_id, start, end)
            return replace(result, start_offsets=start, end_offsets=end)
        batch_id, _ = next_batch_id(conn)
        committed_at = record_batch(
            conn,
            LedgerRow(
                batch_id=batch_id,
                kafka_topic=self.topic,
                source=self.source,
                start_offsets=start,
                end_offsets=end,
                messages_consumed=0,
                rows_written=0,
                rejects=0,
                duplicates=0,
                repaired=0,
                min_event_time=None,
                max_event_time=None,
                started_at=batch_info.get("started_at") or datetime.now(UTC),
                spark_query_id=batch_info.get("spark_query_id"),
                spark_batch_id=batch_info.get("spark_batch_id"),
            ),
        )
        return replace(result, batch_id=batch_id, start_offsets=start, end_offsets=end, committed_at=committed_at)

    def _hole_message(self, missing: dict[int, tuple[int, int]], spark_batch_id: int | None) -> str:
        spark_batch = f"Spark batch {spark_batch_id}" if spark_batch_id is not None else "the batch"
        return (
            f"Bronze lacks messages of topic {self.topic!r} before {spark_batch}: {describe_hole(missing)}"
            " (bronze.ingest_offsets stands before where the batch starts). PostgreSQL lost commits it had"
            " acknowledged (a failover to an asynchronous replica, a point-in-time restore) while the stream"
            " ran; nothing of this batch was written. Run `shopstream stream --restart-from-bronze` once: it"
            " sets the checkpoint aside and reads the missing messages from Kafka."
        )

    def _poison_message(self, validated: pa.Table | None, error: psycopg.Error, spark_batch_id: int | None) -> str:
        messages = validated.num_rows if validated is not None else 0
        start, end = offset_ranges(validated) if messages else ({}, {})
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
