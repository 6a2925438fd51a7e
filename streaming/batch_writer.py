"""The stream's foreachBatch function: one Spark action per batch, its PostgreSQL commit written behind.

While one batch commits, Spark marks it done and computes the next: the next batch's write
waits for that commit, so Spark's checkpoint is at most one batch ahead of Bronze, and
:func:`streaming.checkpoint.line_up_checkpoint_with_bronze` writes such a batch from Kafka
before every query start.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.arrow_collection import SparkChunks, arrow_chunks
from streaming.checkpoint import planned_offsets
from streaming.job_errors import StreamJobError, first_line
from streaming.ledger import PlannedOffsets, messages_behind
from streaming.watermark_watch import WatermarkWatch

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from streaming.bronze_batch import BatchResult
    from streaming.bronze_sink import BronzeSink

log = logging.getLogger("shopstream.stream")


@dataclass
class StreamSummary:
    """What one run of the stream wrote, batch by batch (:class:`BatchWriter` records each)."""

    batches: int = 0
    messages: int = 0
    rows_written: int = 0
    rejects: int = 0
    duplicates: int = 0
    already_committed: int = 0
    restarts: int = 0
    seconds: float = 0.0
    results: list[BatchResult] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.messages += result.messages_consumed
        self.rows_written += result.rows_written
        self.rejects += result.rejects
        self.duplicates += result.duplicates
        self.already_committed += result.already_committed
        self.results.append(result)


class BatchWriter:
    """The foreachBatch function: one Spark action per batch, its PostgreSQL commit written behind.

    foreachBatch returns once Spark's rows are all in memory; the transaction that writes them
    goes on in a thread of its own while Spark marks the batch done and computes the next one
    (PostgreSQL's share of a batch no longer waits for Spark's, nor Spark's for PostgreSQL's).
    The next batch's write waits for that commit, so Spark's checkpoint is at most one batch
    ahead of Bronze, and only while that commit runs or if the process dies in it: every
    query start first writes such a batch from Kafka (:func:`streaming.checkpoint.line_up_checkpoint_with_bronze`).
    """

    def __init__(
        self, sink: BronzeSink, kafka_bootstrap: str, topic: str, summary: StreamSummary, checkpoint: Path | None = None
    ) -> None:
        self.sink = sink
        self.topic = topic
        self.summary = summary
        # Where Spark's offset log is: each batch is written with the offsets Spark planned
        # for it, and refused if it starts beyond Bronze (None: the messages' own range).
        self.checkpoint = checkpoint
        self._planned: tuple[int, PlannedOffsets] | None = None
        self.in_batch = False
        self.query_id: str | None = None
        # Where Bronze stands per partition, for the consumer-lag figure.
        self.position: dict[int, int] = dict(sink.committed_offsets())
        self._watch = WatermarkWatch(kafka_bootstrap, topic)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="shopstream-commit")
        self._commit: Future[None] | None = None
        # Kept until Bronze is lined up with the checkpoint again: a later batch written past a
        # failed one would move Bronze's offsets beyond messages it never wrote.
        self._commit_error: BaseException | None = None
        # A foreachBatch call that outlives its query's stop (a stop that timed out) must not
        # commit after the stop settled: it belongs to the query run it started in.
        self._query_run = 0
        self._lock = threading.Lock()

    def __call__(self, batch: DataFrame, spark_batch_id: int) -> None:
        self.in_batch = True
        try:
            started_at = datetime.now(UTC)
            began = time.perf_counter()
            query_run = self._query_run
            planned = self._planned_offsets(spark_batch_id)
            with arrow_chunks(batch) as chunks, self._lock:
                if query_run != self._query_run:
                    raise StreamJobError(f"Spark batch {spark_batch_id} belongs to a stopped query: not written")
                # The previous batch's commit first: its error fails this batch, before Spark
                # marks it done, and batch ids keep Kafka's order.
                self.settle_commit()
                self._commit = self._committer.submit(self._write, chunks, spark_batch_id, started_at, began, planned)
        finally:
            self.in_batch = False

    def _planned_offsets(self, spark_batch_id: int) -> PlannedOffsets | None:
        """Spark's plan for this batch: its end from the offset log, its start the previous batch's end."""
        if self.checkpoint is None:
            return None
        previous = self._planned
        previous_end = previous[1].end if previous is not None and previous[0] == spark_batch_id - 1 else None
        planned = planned_offsets(self.checkpoint, self.topic, spark_batch_id, previous_end=previous_end)
        self._planned = (spark_batch_id, planned)
        return planned

    @property
    def committing(self) -> bool:
        return self._commit is not None and not self._commit.done()

    def failed_commit(self) -> BaseException | None:
        """The error of a commit written behind, once it failed. Reads only: foreachBatch settles."""
        if self._commit_error is not None:
            return self._commit_error
        commit = self._commit
        return commit.exception() if commit is not None and commit.done() else None

    def settle_commit(self, *, raise_error: bool = True) -> None:
        """Wait for the batch being committed; raise a failed commit's error (or log it)."""
        commit, self._commit = self._commit, None
        if commit is not None and (error := commit.exception()) is not None and self._commit_error is None:
            self._commit_error = error
        if self._commit_error is None:
            return
        if raise_error:
            raise self._commit_error
        log.warning("a batch's commit failed: %s", first_line(self._commit_error))

    def query_stopped(self, *, raise_error: bool) -> None:
        """After ``query.stop()``: no later call of this run commits; the last commit is settled."""
        with self._lock:
            self._query_run += 1
            self.settle_commit(raise_error=raise_error)

    def lined_up(self) -> None:
        """Bronze holds every batch the checkpoint marks done again: batches may commit again."""
        self._commit_error = None
        self.position_from_bronze()  # the batch the line-up wrote, if any

    def position_from_bronze(self) -> None:
        for partition, offset in self.sink.committed_offsets().items():
            self.position[partition] = max(offset, self.position.get(partition, 0))

    def _write(
        self,
        chunks: SparkChunks,
        spark_batch_id: int,
        started_at: datetime,
        began: float,
        planned: PlannedOffsets | None,
    ) -> None:
        result = self.sink.write(
            chunks, planned=planned, spark_query_id=self.query_id, spark_batch_id=spark_batch_id, started_at=started_at
        )
        seconds = time.perf_counter() - began
        spark_seconds = chunks.last_arrival - began if chunks.last_arrival is not None else seconds
        self.record(result)
        if result.already_committed:
            # Offsets another writer (the replay) or a lost acknowledgement's retry committed
            # are not in this result: without them the lag would never reach 0.
            self.position_from_bronze()
        lag = self.lag()
        lag_text = "?" if lag is None else f"{lag:,}"
        if result.batch_id is None:
            log.info(
                "spark batch %d: %d messages already committed, nothing written; lag %s; %.2f s",
                spark_batch_id,
                result.already_committed,
                lag_text,
                seconds,
            )
            return
        log.info(
            "batch %d (spark %d): %d messages -> %d rows, %d rejects, %d duplicates%s; lag %s; "
            "%.2f s (spark's last rows at %.2f s, postgres done %.2f s later)",
            result.batch_id,
            spark_batch_id,
            result.messages_consumed,
            result.rows_written,
            result.rejects,
            result.duplicates,
            f", {result.already_committed} already committed" if result.already_committed else "",
            lag_text,
            seconds,
            spark_seconds,
            seconds - spark_seconds,
        )

    def record(self, result: BatchResult) -> None:
        for partition, offset in result.end_offsets.items():
            self.position[partition] = max(offset, self.position.get(partition, 0))
        self.summary.add(result)

    def lag(self) -> int | None:
        """Messages in Kafka not yet in Bronze, summed over partitions (None if Kafka did not answer).

        From watermarks at most one refresh of :class:`WatermarkWatch` old: slightly low while data arrives.
        """
        marks = self._watch.marks
        if marks is None:
            return None
        return sum(messages_behind(marks, self.position).values())

    def close(self) -> None:
        self.settle_commit(raise_error=False)
        self._committer.shutdown()
        self._watch.close()
