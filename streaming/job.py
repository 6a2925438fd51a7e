"""Kafka -> Bronze: the Structured Streaming query (``shopstream stream``) and the batch replay.

Both read the topic with Spark's own Kafka source, run the one pure transformation
(:func:`streaming.transforms.parse_and_validate`), take ONE action per batch (Arrow
collection, as ``toArrow()`` does it, each task's rows handed over as the task ends:
:func:`arrow_chunks`; each action would re-read Kafka) and pass those Arrow chunks to
:mod:`streaming.bronze_sink`, which writes them as they come and commits rows, rejects and
the ledger row in one PostgreSQL transaction, skipping offsets already committed. That is
what makes a replayed micro-batch (after ``kill -9``) or a restart without checkpoint
exactly-once.

The stream applies the transformation to the streaming DataFrame once, at query start, so
a micro-batch pays no Python-side plan building or analysis (~0.25 s a batch when each
batch DataFrame was transformed in ``foreachBatch``).

Importing this module is cheap (no pyspark, pyarrow or Kafka client at import time): the
``shopstream`` CLI imports it to register ``stream``.

Where the stream starts: the checkpoint under ``SHOPSTREAM_HOME/checkpoints/<topic>``
when there is one; otherwise the next offsets recorded in ``bronze.ingest_offsets``
(``earliest`` for partitions never written). Nothing here deletes a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shopstream.command import fail
from shopstream.jars import SPARK_CONNECTOR, resolve_jars
from shopstream.settings import Settings
from streaming.ledger import messages_behind

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from streaming.bronze_sink import BatchResult, BronzeSink

log = logging.getLogger("shopstream.stream")

APP_NAME = "shopstream-bronze"
# Big enough to amortise the ~0.1 s fixed cost of a micro-batch (checkpoint writes, job
# scheduling) when draining a backlog; at a steady 2,000 events/s batches stay small anyway.
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 250_000
DEFAULT_REPLAY_CHUNK = 500_000
CONNECTOR_ARTIFACT = "spark-sql-kafka-0-10_2.13"
# Consecutive failed query runs (broker down, PostgreSQL down beyond the sink's own
# retries) before the job gives up; a batch that commits resets the count.
MAX_CONSECUTIVE_RESTARTS = 8
# How long the broker may hold a fetch that finds no new data (Kafka's default: 500 ms).
# A task reading up to the end of the log waited that long for nothing, several times a
# batch: the micro-batch that drains a topic took ~1 s longer, and at a steady rate each
# batch ends at the log's end.
KAFKA_FETCH_MAX_WAIT_MS = 10
# JVM thread stack (-Xss) for the driver and the tasks: see build_spark_session.
TASK_THREAD_STACK = "16m"

# Spark's INFO chatter and a few harmless start-up warnings off; our own log says what happens.
LOG4J2_PROPERTIES = """\
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss} %p spark %c{1}: %m%n%ex
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = error
logger.sparkutils.name = org.apache.spark.util.Utils
logger.sparkutils.level = error
logger.kafkaconfig.name = org.apache.kafka.clients
logger.kafkaconfig.level = error
logger.kafkadata.name = org.apache.spark.sql.kafka010
logger.kafkadata.level = error
logger.checkpoint.name = org.apache.spark.sql.execution.streaming
logger.checkpoint.level = error
# "Failed to cancel job group" when a query stops between batches
logger.dagscheduler.name = org.apache.spark.scheduler.DAGScheduler
logger.dagscheduler.level = error
"""


class StreamJobError(RuntimeError):
    """The job cannot start or cannot go on; the message says what to fix."""


# ---------------------------------------------------------------------------------------------
# Spark session


def connector_jars(settings: Settings) -> list[Path]:
    """The Kafka connector closure under SHOPSTREAM_HOME/jars/spark-connector (resolved if missing)."""
    jars = resolve_jars(SPARK_CONNECTOR, settings.jars_dir, progress=log.info)
    if not jars:
        raise StreamJobError(f"no jars in {settings.jars_dir / SPARK_CONNECTOR}; delete it and run again")
    return jars


def check_connector_version(jars: list[Path]) -> str:
    """The connector's version; raises unless it equals ``pyspark.__version__``."""
    import pyspark

    prefix = CONNECTOR_ARTIFACT + "-"
    versions = [jar.name.removeprefix(prefix).removesuffix(".jar") for jar in jars if jar.name.startswith(prefix)]
    if not versions:
        raise StreamJobError(f"{CONNECTOR_ARTIFACT} is not among the connector jars: {[jar.name for jar in jars]}")
    if versions[0] != pyspark.__version__:
        raise StreamJobError(
            f"Spark's Kafka connector is {CONNECTOR_ARTIFACT} {versions[0]} but pyspark is {pyspark.__version__}: "
            "they must be the same version. Set <spark.version> in streaming/jvm/pom.xml to pyspark's "
            "version (or install the pyspark matching the connector) and run again."
        )
    return versions[0]


def _log4j_config(settings: Settings) -> Path:
    path = settings.run_dir / "spark-log4j2.properties"
    if not path.exists() or path.read_text() != LOG4J2_PROPERTIES:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(LOG4J2_PROPERTIES)
    return path


def build_spark_session(
    settings: Settings,
    *,
    master: str | None = None,
    app_name: str = APP_NAME,
    extra_conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """A SparkSession with the Kafka connector, UTC, quiet logs and no console progress bar."""
    from pyspark.sql import SparkSession

    jars = connector_jars(settings)
    check_connector_version(jars)
    # Python workers (toArrow, any UDF) must run this interpreter, not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Spark's variant functions recurse once per nesting level, and JSON may nest 1,000 deep
    # before Jackson refuses it: with the JVM's 1 MB thread stacks, schema_of_variant on one
    # hostile message 900 levels deep overflowed a task thread's stack and took the JVM down.
    # The parallel collector: ~15% less CPU per micro-batch than G1 here (its concurrent
    # marking and write barriers buy short pauses, which a batch job does not need).
    java_options = (
        f"-Xss{TASK_THREAD_STACK} -XX:+UseParallelGC -Dlog4j2.configurationFile=file:{_log4j_config(settings)}"
    )
    builder = (
        SparkSession.builder.master(master or settings.spark_master)
        .appName(app_name)
        .config("spark.jars", ",".join(str(jar) for jar in jars))
        # Read when the driver JVM is launched. Local mode runs the tasks in it too: the 1g
        # default spent a tenth of the drain in GC (27-29k events/s against 31k with 3g).
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", java_options)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
    )
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# ---------------------------------------------------------------------------------------------
# Offsets


def checkpoint_dir(settings: Settings, topic: str | None = None) -> Path:
    return settings.checkpoints_dir / (topic or settings.topic)


def has_checkpoint(checkpoint: Path) -> bool:
    offsets = checkpoint / "offsets"
    return offsets.is_dir() and any(entry.name.isdigit() for entry in offsets.iterdir())


@dataclass(frozen=True)
class CheckpointBatch:
    """The newest micro-batch Spark's checkpoint marks committed: its id and offsets per partition."""

    spark_batch_id: int
    start: dict[int, int] | None  # None when Spark no longer keeps the previous batch's offsets
    end: dict[int, int]


def checkpoint_newest_batch(checkpoint: Path, topic: str) -> CheckpointBatch | None:
    """The newest batch with a ``commits/<n>`` file; None if none.

    Spark writes ``offsets/<n>`` (lines: version, batch metadata, one JSON per source) before
    batch n runs and ``commits/<n>`` once foreachBatch returned. Batch n starts where batch
    n-1 ended; batch 0 where the source started, kept in ``sources/0/0``.
    """
    commits = checkpoint / "commits"
    done = [int(entry.name) for entry in commits.iterdir() if entry.name.isdigit()] if commits.is_dir() else []
    if not done:
        return None
    newest = max(done)
    try:
        end = _source_offsets((checkpoint / "offsets" / str(newest)).read_text().splitlines()[2], topic)
        if newest > 0:
            previous = checkpoint / "offsets" / str(newest - 1)
            start = _source_offsets(previous.read_text().splitlines()[2], topic) if previous.exists() else None
        else:
            initial = checkpoint / "sources" / "0" / "0"
            start = (
                _source_offsets(initial.read_text().lstrip("\0").splitlines()[1], topic) if initial.exists() else None
            )
    except (OSError, IndexError, KeyError, TypeError, ValueError) as error:
        raise StreamJobError(f"cannot read the checkpoint's offsets under {checkpoint}: {error!r}") from None
    return CheckpointBatch(newest, start, end)


def _source_offsets(line: str, topic: str) -> dict[int, int]:
    return {int(partition): int(offset) for partition, offset in json.loads(line)[topic].items()}


def checkpoint_query_id(checkpoint: Path) -> str | None:
    """The query id Spark keeps for this checkpoint across restarts (``metadata``)."""
    try:
        return str(json.loads((checkpoint / "metadata").read_text())["id"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def checkpoint_ahead_of_bronze(
    checkpoint_next: Mapping[int, int], bronze_next: Mapping[int, int], low_watermarks: Mapping[int, int]
) -> dict[int, tuple[int, int]]:
    """{partition: (checkpoint's next offset, Bronze's)} where resuming from the checkpoint would skip messages.

    Bronze's position in a partition it never wrote is the partition's first offset still
    on the broker. Behind by at most the newest batch is a stop during a write-behind commit
    (see :class:`_BatchWriter`); further behind, the database was reset or restored (or the
    stream points at another one).
    """
    ahead: dict[int, tuple[int, int]] = {}
    for partition, checkpoint_offset in checkpoint_next.items():
        bronze_offset = bronze_next.get(partition, low_watermarks.get(partition, 0))
        if checkpoint_offset > bronze_offset:
            ahead[partition] = (checkpoint_offset, bronze_offset)
    return ahead


def set_checkpoint_aside(checkpoint: Path) -> Path:
    """Rename (never delete) a checkpoint so the stream starts again from Bronze's own offsets."""
    aside = checkpoint.with_name(f"{checkpoint.name}.set-aside-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    checkpoint.rename(aside)
    return aside


def starting_offsets(topic: str, partitions: list[int], committed: Mapping[int, int]) -> str:
    """Kafka source ``startingOffsets``: the ledger's next offsets, -2 (earliest) elsewhere."""
    if not committed:
        return "earliest"
    return json.dumps({topic: {str(partition): committed.get(partition, -2) for partition in partitions}})


# ---------------------------------------------------------------------------------------------
# One action per batch, its rows as they come


class SparkChunks:
    """The record batches of one Spark action, iterated as they arrive (see :func:`arrow_chunks`)."""

    def __init__(self) -> None:
        self._arrived: queue.SimpleQueue[pa.RecordBatch | BaseException | None] = queue.SimpleQueue()
        self.last_arrival: float | None = None  # time.perf_counter() when Spark's last rows came
        self.spark_failed = False
        self.abandoned = False

    def arrive(self, batch: pa.RecordBatch) -> None:
        self.last_arrival = time.perf_counter()
        self._arrived.put(batch)

    def fail(self, error: BaseException) -> None:
        self._arrived.put(error)

    def end(self) -> None:
        self._arrived.put(None)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (item := self._arrived.get()) is not None:
            if isinstance(item, BaseException):
                self.spark_failed = True
                raise item
            yield item


def one_task_per_core(kafka_messages: DataFrame) -> DataFrame:
    """The Kafka source read by as many tasks as Spark has cores, not one task per topic partition.

    Each task deserializes the whole plan and generates the code of the projections that
    hold ``from_json`` (Spark cannot compile it into whole-stage code): with the topic's 6
    partitions on 2 cores, generating that code alone was ~7% of the drain's JVM samples.
    Merging partitions (no shuffle) took the drain's rate after the first batch from 47.6-48.6k
    to 50.8-55.6k events/s here (three runs each).
    """
    cores = kafka_messages.sparkSession.sparkContext.defaultParallelism
    return kafka_messages.coalesce(cores)


@contextmanager
def arrow_chunks(frame: DataFrame) -> Iterator[SparkChunks]:
    """``frame``'s rows as Arrow record batches, each handed over as soon as Spark has it.

    The one action of a batch, taken as ``toArrow()`` takes it (the same JVM call,
    ``collectAsArrowToPython``, whose rows are never read twice), but ``toArrow()`` returns only
    after the last task: this yields each task's batches when it finishes, so the sink writes
    them while Spark still computes the rest. Batches come in the order tasks finish.

    A thread of its own reads the socket into memory at once (a batch's worth, as
    ``toArrow()`` holds): Spark writes each finished task's rows from its scheduler thread,
    so a reader that waited for PostgreSQL would stop Spark from starting its next tasks.
    """
    import pyarrow as pa
    from pyspark.errors.exceptions.captured import unwrap_spark_exception
    from pyspark.sql.pandas.serializers import ArrowCollectSerializer
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.util import _load_from_socket

    schema = to_arrow_schema(frame.schema, error_on_duplicated_field_names_in_struct=True, timezone="UTC")
    port, secret, server = frame._jdf.collectAsArrowToPython()
    chunks = SparkChunks()

    def read_everything() -> None:
        try:
            with _load_from_socket((port, secret), ArrowCollectSerializer()) as stream:
                for item in stream:
                    # Read to the end even when the sink gave up, so Spark's job ends normally.
                    if isinstance(item, pa.RecordBatch) and not chunks.abandoned:
                        chunks.arrive(item.cast(schema))
        except BaseException as error:  # noqa: BLE001 -- handed to the consumer, which raises it
            chunks.fail(error)
        finally:
            chunks.end()

    reader = threading.Thread(target=read_everything, name="shopstream-arrow-reader", daemon=True)
    reader.start()
    sink_failed = False
    try:
        yield chunks
    except BaseException:
        sink_failed = not chunks.spark_failed
        chunks.abandoned = True
        raise
    finally:
        reader.join()
        try:
            with unwrap_spark_exception():
                server.getResult()  # the job's own failure, raised as Spark's exception
        except Exception:
            # After the sink's own failure, the sink's error is the one to report.
            if not sink_failed:
                raise


# ---------------------------------------------------------------------------------------------
# The stream


@dataclass
class StreamSummary:
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


class _WatermarkWatch:
    """The topic's high watermarks, refreshed in a thread of its own every ``interval`` seconds.

    The consumer-lag figure and the idle check read the last answer instead of asking the
    broker on the batch thread (7 round trips, up to 2 s each when the broker is slow).
    """

    def __init__(self, kafka_bootstrap: str, topic: str, interval: float = 0.5) -> None:
        from shopstream.kafka_admin import offset_reader

        self.topic = topic
        self.interval = interval
        self.marks: dict[int, tuple[int, int]] | None = None  # None: no answer yet, or the last failed
        self._consumer = offset_reader(kafka_bootstrap)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shopstream-watermarks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        from shopstream.kafka_admin import read_watermarks

        while not self._stop.is_set():
            try:
                self.marks = read_watermarks(self._consumer, self.topic, timeout=2)
            except KafkaException:
                self.marks = None
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


class _BatchWriter:
    """The foreachBatch function: one Spark action per batch, its PostgreSQL commit written behind.

    foreachBatch returns once Spark's rows are all in memory; the transaction that writes them
    goes on in a thread of its own while Spark marks the batch done and computes the next one
    (PostgreSQL's share of a batch no longer waits for Spark's, nor Spark's for PostgreSQL's).
    The next batch's write waits for that commit, so Spark's checkpoint is at most one batch
    ahead of Bronze, and only while that commit runs or if the process dies in it: every
    query start first writes such a batch from Kafka (:func:`_line_up_checkpoint_with_bronze`).
    """

    def __init__(self, sink: BronzeSink, kafka_bootstrap: str, topic: str, summary: StreamSummary) -> None:
        self.sink = sink
        self.topic = topic
        self.summary = summary
        self.in_batch = False
        self.query_id: str | None = None
        # Where Bronze stands per partition, for the consumer-lag figure.
        self.position: dict[int, int] = dict(sink.committed_offsets())
        self._watch = _WatermarkWatch(kafka_bootstrap, topic)
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
            with arrow_chunks(batch) as chunks, self._lock:
                if query_run != self._query_run:
                    raise StreamJobError(f"Spark batch {spark_batch_id} belongs to a stopped query: not written")
                # The previous batch's commit first: its error fails this batch, before Spark
                # marks it done, and batch ids keep Kafka's order.
                self.settle_commit()
                self._commit = self._committer.submit(self._write, chunks, spark_batch_id, started_at, began)
        finally:
            self.in_batch = False

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
        log.warning("a batch's commit failed: %s", _first_line(self._commit_error))

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

    def _write(self, chunks: SparkChunks, spark_batch_id: int, started_at: datetime, began: float) -> None:
        result = self.sink.write(
            chunks, spark_query_id=self.query_id, spark_batch_id=spark_batch_id, started_at=started_at
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

        From watermarks at most ~0.5 s old, so a figure slightly low while data arrives.
        """
        marks = self._watch.marks
        if marks is None:
            return None
        return sum(messages_behind(marks, self.position).values())

    def close(self) -> None:
        self.settle_commit(raise_error=False)
        self._committer.shutdown()
        self._watch.close()


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


def _is_fatal(error: BaseException) -> bool:
    from streaming.bronze_sink import PoisonBatchError

    if isinstance(error, PoisonBatchError):
        return True
    text = str(error)
    # failOnDataLoss: offsets we have not read are gone from Kafka. Restarting cannot help;
    # nor can it for a batch PostgreSQL refuses for its data (py4j keeps the Python error's name).
    return "data may have been lost" in text or "failOnDataLoss" in text or PoisonBatchError.__name__ in text


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
) -> StreamSummary:
    """Run the Kafka -> Bronze query until ``until_idle`` seconds pass without data, or ``stop``.

    A failed query run (broker or PostgreSQL unreachable for longer than the sink's
    retries) is restarted from its checkpoint with backoff. Each batch commits behind
    Spark's (:class:`_BatchWriter`); a batch the checkpoint marks done that Bronze lacks is
    written from Kafka before the query starts. A checkpoint further ahead of Bronze (a reset
    or restored database) stops the job before it reads anything, unless
    ``restart_from_bronze``: then it is set aside and the stream starts from Bronze's offsets.
    """
    from shopstream.kafka_admin import ensure_topic
    from streaming.bronze_sink import SOURCE_STREAM, BronzeSink, retrying

    topic = settings.topic
    stop = stop or threading.Event()
    checkpoint = checkpoint_dir(settings, topic)
    summary = StreamSummary()
    began = time.monotonic()
    retrying(
        lambda: ensure_topic(kafka_bootstrap, topic, settings.topic_partitions),
        what=f"reaching Kafka at {kafka_bootstrap}",
        transient=(Exception,),
    )
    with BronzeSink(database_url, topic, source=SOURCE_STREAM) as sink, _stop_on_signals(stop):
        line_up = {
            "spark": spark,
            "sink": sink,
            "checkpoint": checkpoint,
            "kafka_bootstrap": kafka_bootstrap,
            "topic": topic,
            "summary": summary,
        }
        _line_up_checkpoint_with_bronze(**line_up, restart_from_bronze=restart_from_bronze)
        writer = _BatchWriter(sink, kafka_bootstrap, topic, summary)
        try:
            failures = 0
            while not stop.is_set():
                batches_before = summary.batches
                try:
                    if summary.restarts:  # a commit written behind may have failed with the query
                        _line_up_checkpoint_with_bronze(**line_up, restart_from_bronze=False)
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
                    )
                except StreamJobError:
                    raise
                except Exception as error:  # noqa: BLE001 -- py4j surfaces every failure as a generic exception
                    if stop.is_set():
                        break
                    if _is_fatal(error):
                        raise StreamJobError(f"the stream cannot go on: {_first_line(error)}") from error
                    failures = 0 if summary.batches > batches_before else failures + 1
                    if failures >= MAX_CONSECUTIVE_RESTARTS:
                        raise StreamJobError(
                            f"the stream failed {failures} times in a row; last error: {_first_line(error)}"
                        ) from error
                    delay = min(2.0**failures, 30.0)
                    summary.restarts += 1
                    log.warning(
                        "stream query failed (%s); restarting from the checkpoint in %.0f s (%d/%d)",
                        _first_line(error),
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
                    f"stopped with the last batch's commit failed ({_first_line(commit_error)}); "
                    "the next start writes that batch from Kafka first"
                ) from commit_error
        finally:
            writer.close()
    summary.seconds = time.monotonic() - began
    return summary


def _refuse_bronze_ahead_of_topic(
    committed: Mapping[int, int], marks: Mapping[int, tuple[int, int]], kafka_bootstrap: str, topic: str
) -> None:
    """Bronze's offsets for ``topic`` beyond what the broker has ever held: not the same topic.

    It was deleted and recreated, or the bootstrap now names another cluster. Its offsets do
    not line up with Bronze's, so streaming or replaying it would skip messages as "already
    committed" (or write none at all).
    """
    if not marks:
        return  # the broker did not describe the topic (yet): nothing to compare
    beyond = {
        partition: (offset, marks[partition][1] if partition in marks else None)
        for partition, offset in committed.items()
        if partition not in marks or offset > marks[partition][1]
    }
    if not beyond:
        return
    where = ", ".join(
        f"partition {partition}: Bronze {bronze:,}, broker {'no such partition' if high is None else f'{high:,}'}"
        for partition, (bronze, high) in sorted(beyond.items())
    )
    raise StreamJobError(
        f"bronze.ingest_offsets holds topic {topic!r} beyond what the broker at {kafka_bootstrap} has ({where}): "
        "the topic was deleted and recreated, or this is another Kafka cluster, so its offsets are not Bronze's. "
        "Stream it under a topic name of its own (SHOPSTREAM_TOPIC), or point SHOPSTREAM_KAFKA_BOOTSTRAP back "
        "at the cluster Bronze was filled from."
    )


def _line_up_checkpoint_with_bronze(
    *,
    spark: SparkSession,
    sink: BronzeSink,
    checkpoint: Path,
    kafka_bootstrap: str,
    topic: str,
    summary: StreamSummary,
    restart_from_bronze: bool,
) -> None:
    """Before a query starts: make Bronze hold everything the checkpoint marks committed, or stop.

    Bronze short of the checkpoint's newest batch alone is a stop during its write-behind
    commit: those messages are written from Kafka now, as that batch. Further behind, the
    database was reset or restored: resuming would skip messages, so the job stops, unless
    ``restart_from_bronze``, which sets the checkpoint aside and starts from Bronze's offsets.
    """
    from shopstream.kafka_admin import watermarks
    from streaming.bronze_sink import retrying

    # Bronze's offsets first: watermarks read after them are at least as new, so a batch
    # another writer commits meanwhile cannot look "beyond the broker".
    committed = sink.committed_offsets()
    marks = retrying(
        lambda: watermarks(kafka_bootstrap, topic),
        what=f"reading the offsets of {topic!r} from Kafka at {kafka_bootstrap}",
        transient=(Exception,),
    )
    _refuse_bronze_ahead_of_topic(committed, marks, kafka_bootstrap, topic)
    newest = checkpoint_newest_batch(checkpoint, topic)
    if newest is None:
        return
    low_watermarks = {partition: low for partition, (low, _) in marks.items()}
    ahead = checkpoint_ahead_of_bronze(newest.end, committed, low_watermarks)
    if not ahead:
        return
    where = ", ".join(
        f"partition {partition}: checkpoint {checkpoint_offset:,}, Bronze {bronze_offset:,}"
        for partition, (checkpoint_offset, bronze_offset) in sorted(ahead.items())
    )
    if newest.start is not None and all(bronze >= newest.start.get(p, 0) for p, (_, bronze) in ahead.items()):
        log.warning(
            "Bronze lacks part of Spark batch %d, which the checkpoint marks done (%s): the job stopped during its "
            "commit; writing those messages from Kafka first",
            newest.spark_batch_id,
            where,
        )
        bronze = {p: committed.get(p, low_watermarks.get(p, 0)) for p in marks}
        end = {p: max(newest.end.get(p, bronze[p]), bronze[p]) for p in marks}
        result = _write_range(
            spark,
            sink,
            kafka_bootstrap=kafka_bootstrap,
            topic=topic,
            start=bronze,
            end=end,
            spark_query_id=checkpoint_query_id(checkpoint),
            spark_batch_id=newest.spark_batch_id,
        )
        if result.batch_id is not None:
            summary.add(result)
        log.info(
            "batch %s (spark %d, caught up): %d messages -> %d rows, %d rejects, %d duplicates",
            result.batch_id,
            newest.spark_batch_id,
            result.messages_consumed,
            result.rows_written,
            result.rejects,
            result.duplicates,
        )
        return
    if not restart_from_bronze:
        raise StreamJobError(
            f"the checkpoint {checkpoint} is ahead of bronze.ingest_batches ({where}): the database was reset or "
            "restored, or this is not the database the checkpoint wrote to. Resuming would skip those messages. "
            "If this is the right database, run `shopstream stream --restart-from-bronze` once: it sets the "
            "checkpoint aside (renamed, not deleted) and reads from the offsets Bronze holds."
        )
    aside = set_checkpoint_aside(checkpoint)
    log.warning("checkpoint ahead of Bronze (%s): set aside as %s; starting from Bronze's offsets", where, aside)


def _first_line(error: BaseException) -> str:
    from streaming.bronze_sink import PoisonBatchError

    text = str(error).strip()
    marker = f"{PoisonBatchError.__name__}: "
    for line in text.splitlines():
        if marker in line:  # the sink's own message, from inside py4j's traceback
            return line.split(marker, 1)[1].strip()[:600]
    for line in text.splitlines():
        # Not a traceback's indented frame lines: py4j wraps a Python error's whole traceback.
        if line.strip() and not line[:1].isspace() and "Traceback" not in line:
            return line.strip()[:300]
    return type(error).__name__


def _run_query_once(
    spark: SparkSession,
    settings: Settings,
    writer: _BatchWriter,
    checkpoint: Path,
    *,
    kafka_bootstrap: str,
    trigger_seconds: float,
    until_idle: float | None,
    max_offsets_per_trigger: int,
    stop: threading.Event,
) -> bool:
    """Start the query and watch it; True when it ended on purpose (idle or stop)."""
    from shopstream.kafka_admin import watermarks
    from streaming.transforms import parse_and_validate

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
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", start)
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
        .option("includeHeaders", "true")
        .option("kafka.fetch.max.wait.ms", str(KAFKA_FETCH_MAX_WAIT_MS))
        .load()
    )
    # Transformed here, once: each micro-batch's DataFrame arrives analysed and validated.
    validated = parse_and_validate(one_task_per_core(source))
    stream_writer = validated.writeStream.foreachBatch(writer).option("checkpointLocation", str(checkpoint))
    if trigger_seconds > 0:
        stream_writer = stream_writer.trigger(processingTime=f"{trigger_seconds} seconds")
    query = stream_writer.start()
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
            # Idle = no batch running and Bronze holds every offset the topic has. Polled at
            # most every half second: it asks the broker for the partitions' high watermarks.
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
    from streaming.bronze_sink import SOURCE_REPLAY, BronzeSink

    database_url = database_url or services.database_urls(settings)[0]
    kafka_bootstrap = kafka_bootstrap or services.kafka_bootstrap(settings)
    topic = topic or settings.topic
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
        _refuse_bronze_ahead_of_topic(committed, marks, kafka_bootstrap, topic)
        position = {partition: max(low, 0) for partition, (low, _) in marks.items()}
        position.update({p: o for p, o in committed.items() if p in position})
        latest = {partition: high for partition, (_, high) in marks.items()}
        per_partition = max(1, max_offsets_per_chunk // len(marks))
        while any(position[p] < latest[p] for p in position):
            end = {p: min(latest[p], position[p] + per_partition) for p in position}
            result = _write_range(spark, sink, kafka_bootstrap=kafka_bootstrap, topic=topic, start=position, end=end)
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


def _write_range(
    spark: SparkSession,
    sink: BronzeSink,
    *,
    kafka_bootstrap: str,
    topic: str,
    start: Mapping[int, int],
    end: Mapping[int, int],
    **batch_info: object,
) -> BatchResult:
    """Offsets ``start`` to ``end`` (exclusive, every partition) read in batch mode, validated, written as one batch."""
    from streaming.transforms import parse_and_validate

    messages = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", json.dumps({topic: {str(p): o for p, o in start.items()}}))
        .option("endingOffsets", json.dumps({topic: {str(p): o for p, o in end.items()}}))
        .option("failOnDataLoss", "true")
        .option("includeHeaders", "true")
        .option("kafka.fetch.max.wait.ms", str(KAFKA_FETCH_MAX_WAIT_MS))
        .load()
    )
    started_at = datetime.now(UTC)
    with arrow_chunks(parse_and_validate(one_task_per_core(messages))) as chunks:
        return sink.write(chunks, started_at=started_at, **batch_info)


# ---------------------------------------------------------------------------------------------
# CLI


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # py4j logs every callback at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def stream_command(
    trigger: Annotated[
        float,
        typer.Option(
            "--trigger", min=0, help="Seconds between micro-batch starts; 0 = next batch as soon as one commits."
        ),
    ] = 0,
    until_idle: Annotated[
        float | None,
        typer.Option("--until-idle", min=0, help="Exit after this many seconds without new data (tests, benchmarks)."),
    ] = None,
    max_offsets_per_trigger: Annotated[
        int, typer.Option("--max-offsets-per-trigger", min=1, help="Most messages one micro-batch reads.")
    ] = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    restart_from_bronze: Annotated[
        bool,
        typer.Option(
            "--restart-from-bronze",
            help="If the checkpoint is ahead of Bronze (a reset database), set it aside; read from Bronze's offsets.",
        ),
    ] = False,
) -> None:
    """Stream the clickstream topic into Bronze (PostgreSQL), exactly once."""
    from shopstream.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as error:
        raise fail(error) from None
    configure_logging(settings)
    from shopstream import services

    try:
        database_url = services.database_urls(settings)[0]
        kafka_bootstrap = services.kafka_bootstrap(settings)
        spark = build_spark_session(settings)
    except (RuntimeError, StreamJobError) as error:
        raise fail(error) from None
    try:
        summary = run_stream(
            spark,
            settings,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            trigger_seconds=trigger,
            until_idle=until_idle,
            max_offsets_per_trigger=max_offsets_per_trigger,
            restart_from_bronze=restart_from_bronze,
        )
    except StreamJobError as error:
        raise fail(error, code=1) from None
    finally:
        spark.stop()
    rate = summary.messages / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"stream stopped: {summary.batches} batches, {summary.messages} messages -> {summary.rows_written} rows, "
        f"{summary.rejects} rejects, {summary.duplicates} duplicates in {summary.seconds:.1f} s ({rate:,.0f} msg/s)",
        err=True,
    )
