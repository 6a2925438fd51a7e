"""Kafka -> Bronze: the Structured Streaming query (:func:`run_stream`) and the batch replay (:func:`replay_topic`).

Both read the topic with Spark's own Kafka source (:mod:`streaming.kafka_source`), run the
one pure transformation (:func:`streaming.transforms.parse_and_validate`), take ONE action
per batch (each action would re-read Kafka), collected as Arrow while Spark's tasks finish
(:mod:`streaming.arrow_collection`), and pass those chunks to :mod:`streaming.bronze_sink`,
which commits rows, rejects and the ledger row in one PostgreSQL transaction, skipping
offsets already committed. That is what makes a replayed micro-batch (after ``kill -9``) or
a restart without checkpoint exactly-once.

The stream applies the transformation to the streaming DataFrame once, at query start, and
commits each batch behind Spark's next (:mod:`streaming.batch_writer`); before each query
start, Bronze is lined up with Spark's checkpoint (:mod:`streaming.checkpoint`).

Importing this module is cheap (no pyspark, pyarrow or Kafka client at import time): the
``shopstream`` CLI imports the ``stream`` command, which imports it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shopstream.settings import Settings
from streaming.arrow_collection import within_driver_memory
from streaming.batch_writer import BatchWriter, StreamSummary
from streaming.checkpoint import (
    checkpoint_dir,
    has_checkpoint,
    line_up_checkpoint_with_bronze,
    refuse_bronze_ahead_of_topic,
    starting_offsets,
)
from streaming.job_errors import StreamJobError, first_line
from streaming.kafka_source import BatchPacing, read_stream, start_stream, write_offset_range

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("shopstream.stream")

# Big enough to amortise the fixed cost of a micro-batch (checkpoint writes, job scheduling)
# when draining a backlog; at a steady rate batches stay small anyway. Both are lowered to
# what the driver's memory holds (:func:`streaming.arrow_collection.within_driver_memory`).
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 250_000
DEFAULT_REPLAY_CHUNK = 500_000
# Consecutive failed query runs (broker down, PostgreSQL down beyond the sink's own
# retries) before the job gives up; a batch that commits resets the count.
MAX_CONSECUTIVE_RESTARTS = 8
DEFAULT_PACING = BatchPacing()


# ---------------------------------------------------------------------------------------------
# The stream


def run_stream(
    spark: SparkSession,
    settings: Settings,
    *,
    database_url: str,
    kafka_bootstrap: str,
    trigger_seconds: float = 0.0,
    until_idle: float | None = None,
    max_offsets_per_trigger: int = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    stop: threading.Event | None = None,
    restart_from_bronze: bool = False,
    pacing: BatchPacing | None = DEFAULT_PACING,
) -> StreamSummary:
    """Run the Kafka -> Bronze query until ``until_idle`` seconds pass without data, or ``stop``.

    A failed query run (broker or PostgreSQL unreachable for longer than the sink's
    retries) is restarted from its checkpoint with backoff. Each batch commits behind
    Spark's (:class:`BatchWriter`); a batch the checkpoint marks done that Bronze lacks is
    written from Kafka before the query starts. A checkpoint further ahead of Bronze (a reset
    or restored database) stops the job before it reads anything, unless
    ``restart_from_bronze``: then it is set aside and the stream starts from Bronze's offsets.
    ``pacing``: when a batch starts (None: back to back); ``trigger_seconds`` > 0 replaces its checks' interval.
    """
    from shopstream.kafka_admin import TopicRefusedError, ensure_topic
    from streaming.bronze_batch import SOURCE_STREAM
    from streaming.bronze_sink import BronzeSink, retrying

    topic = settings.topic
    max_offsets_per_trigger = within_driver_memory(spark, max_offsets_per_trigger, "micro-batches")
    stop = stop or threading.Event()
    checkpoint = checkpoint_dir(settings, topic)
    summary = StreamSummary()
    began = time.monotonic()
    try:
        retrying(
            lambda: ensure_topic(kafka_bootstrap, topic, settings.topic_partitions),
            what=f"reaching Kafka at {kafka_bootstrap}",
            transient=(Exception,),
            permanent=(TopicRefusedError,),
        )
    except TopicRefusedError as error:
        raise StreamJobError(str(error)) from None
    with BronzeSink(database_url, topic, source=SOURCE_STREAM) as sink, _stop_on_signals(stop):

        def line_up(*, restart_from_bronze: bool) -> None:
            caught_up = line_up_checkpoint_with_bronze(
                spark=spark,
                sink=sink,
                checkpoint=checkpoint,
                kafka_bootstrap=kafka_bootstrap,
                topic=topic,
                restart_from_bronze=restart_from_bronze,
            )
            if caught_up is not None and caught_up.batch_id is not None:
                summary.add(caught_up)

        line_up(restart_from_bronze=restart_from_bronze)
        writer = BatchWriter(sink, kafka_bootstrap, topic, summary, checkpoint)
        try:
            failures = 0
            while not stop.is_set():
                batches_before = summary.batches
                try:
                    if summary.restarts:  # a commit written behind may have failed with the query
                        line_up(restart_from_bronze=False)
                        writer.lined_up()
                    finished = _run_query_once(
                        spark,
                        settings,
                        writer,
                        checkpoint,
                        kafka_bootstrap=kafka_bootstrap,
                        trigger_seconds=trigger_seconds,
                        until_idle=until_idle,
                        max_offsets_per_trigger=max_offsets_per_trigger,
                        stop=stop,
                        pacing=pacing,
                    )
                except StreamJobError:
                    raise
                except Exception as error:  # noqa: BLE001 -- py4j surfaces every failure as a generic exception
                    if stop.is_set():
                        break
                    if _is_fatal(error):
                        raise StreamJobError(f"the stream cannot go on: {first_line(error)}") from error
                    failures = 0 if summary.batches > batches_before else failures + 1
                    if failures >= MAX_CONSECUTIVE_RESTARTS:
                        raise StreamJobError(
                            f"the stream failed {failures} times in a row; last error: {first_line(error)}"
                        ) from error
                    delay = min(2.0**failures, 30.0)
                    summary.restarts += 1
                    log.warning(
                        "stream query failed (%s); restarting from the checkpoint in %.0f s (%d/%d)",
                        first_line(error),
                        delay,
                        failures,
                        MAX_CONSECUTIVE_RESTARTS,
                    )
                    stop.wait(delay)
                    continue
                if finished:
                    break
            if (commit_error := writer.failed_commit()) is not None:
                # Stopped (a signal) with the last batch's commit failed: nothing is lost, the
                # next start writes it first, but the job did not finish its work.
                raise StreamJobError(
                    f"stopped with the last batch's commit failed ({first_line(commit_error)}); "
                    "the next start writes that batch from Kafka first"
                ) from commit_error
        finally:
            writer.close()
    summary.seconds = time.monotonic() - began
    return summary


def _run_query_once(
    spark: SparkSession,
    settings: Settings,
    writer: BatchWriter,
    checkpoint: Path,
    *,
    kafka_bootstrap: str,
    trigger_seconds: float,
    until_idle: float | None,
    max_offsets_per_trigger: int,
    stop: threading.Event,
    pacing: BatchPacing | None,
) -> bool:
    """Start the query and watch it; True when it ended on purpose (idle or stop)."""
    from shopstream.kafka_admin import watermarks

    topic = settings.topic
    if has_checkpoint(checkpoint):
        start = "earliest"  # ignored by Spark: the checkpoint's offsets win
        log.info("resuming from checkpoint %s", checkpoint)
    else:
        committed = writer.sink.committed_offsets()
        partitions = sorted(watermarks(kafka_bootstrap, topic))
        start = starting_offsets(topic, partitions, committed)
        log.info(
            "no checkpoint at %s: starting from %s",
            checkpoint,
            "the earliest offsets" if start == "earliest" else f"the offsets stored in bronze.ingest_offsets {start}",
        )
    validated = read_stream(
        spark,
        kafka_bootstrap=kafka_bootstrap,
        topic=topic,
        starting_offsets=start,
        max_offsets_per_trigger=max_offsets_per_trigger,
        pacing=pacing,
    )
    stream_writer = validated.writeStream.foreachBatch(writer).option("checkpointLocation", str(checkpoint))
    if (interval := trigger_seconds or (pacing.check_seconds if pacing is not None else 0)) > 0:
        stream_writer = stream_writer.trigger(processingTime=f"{interval} seconds")
    query = start_stream(spark, stream_writer)
    writer.query_id = str(query.id)
    idle_since = time.monotonic()
    failed = False
    try:
        while True:
            if query.awaitTermination(0.25):
                # Ended without our stop: awaitTermination raised if it failed.
                return stop.is_set()
            if (commit_error := writer.failed_commit()) is not None:
                raise commit_error  # the query restarts and first writes the batch Bronze lacks
            if stop.is_set():
                return True
            if until_idle is None:
                continue
            # Idle = no batch running and Bronze holds every offset the topic has (as of the
            # watermarks the writer's watch last read: the broker is not asked from here).
            now = time.monotonic()
            if writer.in_batch or writer.committing or writer.lag() != 0:
                idle_since = now
            elif now - idle_since >= until_idle:
                log.info("no new data for %.0f s: stopping", until_idle)
                return True
    except BaseException:
        failed = True
        raise
    finally:
        _log_progress(query)
        try:
            query.stop()
        except Exception as error:  # noqa: BLE001 -- a stop interrupted by a signal; the JVM cleans up
            log.debug("query.stop(): %s", error)
        # The batch committing behind, before anyone compares Bronze with the checkpoint again.
        writer.query_stopped(raise_error=not failed)


def _is_fatal(error: BaseException) -> bool:
    from streaming.bronze_sink import BronzeHoleError, PoisonBatchError

    if isinstance(error, PoisonBatchError | BronzeHoleError):
        return True
    text = str(error)
    # failOnDataLoss: offsets we have not read are gone from Kafka. Restarting cannot help;
    # nor can it for a batch PostgreSQL refuses for its data, nor for one that starts beyond
    # Bronze (py4j keeps the Python error's name).
    return (
        "data may have been lost" in text
        or "failOnDataLoss" in text
        or PoisonBatchError.__name__ in text
        or BronzeHoleError.__name__ in text
    )


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT ask for a clean stop (the running batch finishes or rolls back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def request_stop(signum: int, frame: object) -> None:
        log.info("stop requested (%s)", signal.Signals(signum).name)
        stop.set()

    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _log_progress(query: object) -> None:
    """Spark's own split of the recent micro-batches' time, at DEBUG (profiling)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    try:
        for progress in query.recentProgress:  # type: ignore[attr-defined]
            log.debug(
                "spark batch %s: %s rows, durationMs %s",
                progress.batchId,
                progress.numInputRows,
                json.dumps(progress.durationMs),
            )
    except Exception as error:  # noqa: BLE001 -- diagnostics only; never fail a stop on them
        log.debug("no progress: %s", error)


# ---------------------------------------------------------------------------------------------
# The batch replay (Dagster's on-demand Bronze materialization)


@dataclass
class ReplaySummary:
    chunks: int = 0
    messages: int = 0
    rows_written: int = 0
    rejects: int = 0
    duplicates: int = 0
    already_committed: int = 0
    batch_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0


def replay_topic(
    spark: SparkSession,
    settings: Settings,
    *,
    database_url: str | None = None,
    kafka_bootstrap: str | None = None,
    topic: str | None = None,
    max_offsets_per_chunk: int = DEFAULT_REPLAY_CHUNK,
) -> ReplaySummary:
    """Write into Bronze whatever the topic holds beyond the ledger's offsets, in batch mode.

    Reads ``spark.read.format("kafka")`` from the stored end offsets (earliest where none)
    up to the latest offsets at the time of the call, in chunks of at most
    ``max_offsets_per_chunk`` messages, through the same transforms and sink as the
    stream (``source='replay'``). Safe beside a running stream: the sink's lock and
    offset check write every message once, whoever gets there first.
    """
    from shopstream import services
    from shopstream.kafka_admin import watermarks
    from streaming.bronze_batch import SOURCE_REPLAY
    from streaming.bronze_sink import BronzeSink

    database_url = database_url or services.database_urls(settings)[0]
    kafka_bootstrap = kafka_bootstrap or services.kafka_bootstrap(settings)
    topic = topic or settings.topic
    max_offsets_per_chunk = within_driver_memory(spark, max_offsets_per_chunk, "replay chunks")
    began = time.monotonic()
    summary = ReplaySummary()
    marks = watermarks(kafka_bootstrap, topic)
    if not marks:
        raise StreamJobError(f"topic {topic!r} does not exist on {kafka_bootstrap}")
    with BronzeSink(database_url, topic, source=SOURCE_REPLAY) as sink:
        # Bronze's offsets first, then the watermarks again: the stream may commit meanwhile,
        # and watermarks read after its offsets are at least as new.
        committed = sink.committed_offsets()
        marks = watermarks(kafka_bootstrap, topic)
        refuse_bronze_ahead_of_topic(committed, marks, kafka_bootstrap, topic)
        position = {partition: max(low, 0) for partition, (low, _) in marks.items()}
        position.update({p: o for p, o in committed.items() if p in position})
        latest = {partition: high for partition, (_, high) in marks.items()}
        per_partition = max(1, max_offsets_per_chunk // len(marks))
        while any(position[p] < latest[p] for p in position):
            end = {p: min(latest[p], position[p] + per_partition) for p in position}
            result = write_offset_range(
                spark, sink, kafka_bootstrap=kafka_bootstrap, topic=topic, start=position, end=end
            )
            summary.chunks += 1
            summary.messages += result.messages_consumed
            summary.rows_written += result.rows_written
            summary.rejects += result.rejects
            summary.duplicates += result.duplicates
            summary.already_committed += result.already_committed
            if result.batch_id is not None:
                summary.batch_ids.append(result.batch_id)
            log.info(
                "replay chunk %d: %d messages -> %d rows, %d rejects, %d duplicates, %d already committed",
                summary.chunks,
                result.messages_consumed,
                result.rows_written,
                result.rejects,
                result.duplicates,
                result.already_committed,
            )
            position = end
    summary.seconds = time.monotonic() - began
    return summary
