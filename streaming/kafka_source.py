"""Spark's Kafka source as the stream and the replay read it: validated rows, one task per core.

The stream reads it as a streaming DataFrame (:func:`read_stream`); the replay and the
checkpoint's line-up read a fixed offset range in batch mode and write it as one Bronze
batch (:func:`write_offset_range`). Both go through the one pure transformation,
:func:`streaming.transforms.parse_and_validate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shopstream.kafka_clients import spark_kafka_options
from shopstream.settings import KafkaSecurity
from streaming.arrow_collection import arrow_chunks

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

    from streaming.bronze_batch import BatchResult
    from streaming.bronze_sink import BronzeSink

# How long the broker may hold a fetch that finds no new data (Kafka's default: 500 ms).
# A task reading up to the end of the log waited that long for nothing, several times a
# batch: the micro-batch that drains a topic took longer by as much, and at a steady rate
# each batch ends at the log's end.
KAFKA_FETCH_MAX_WAIT_MS = 10

# Only records of committed transactions (and those written outside any): the consumer's
# default, read_uncommitted, hands over an aborted transaction's records too. Each batch
# then ends at the last stable offset, and its offsets hold markers and aborted records that
# are no message: the ledger records the planned range (:class:`streaming.ledger.PlannedOffsets`).
KAFKA_ISOLATION_LEVEL = "read_committed"


# Optimizer rules that leave the validation plan unchanged (no effective run on it; a test holds
# the plans equal) yet were the costliest ones to run: a streaming query optimizes its whole plan
# again for every micro-batch, data or not.
STREAM_EXCLUDED_RULES: tuple[str, ...] = (
    "org.apache.spark.sql.catalyst.optimizer.CollapseProject",
    "org.apache.spark.sql.catalyst.optimizer.RemoveRedundantAliases",
)
EXCLUDED_RULES_CONF = "spark.sql.optimizer.excludedRules"


@dataclass(frozen=True)
class BatchPacing:
    """When the stream starts a micro-batch: once ``min_messages`` wait, or ``max_wait_seconds`` after the last one.

    A micro-batch has a fixed cost (Spark plans the whole validation plan again, schedules its
    tasks, writes its offset and commit logs; the sink commits a transaction) whatever it
    holds. Started back to back, small batches paid it several times a second at a steady
    rate, and the empty checks between them asked the broker every few milliseconds. Spark's
    Kafka source skips a trigger while fewer than ``minOffsetsPerTrigger`` messages wait,
    unless ``maxTriggerDelay`` passed since its last batch: a quiet topic gets one batch per
    ``max_wait_seconds``, a busy one a batch per ``min_messages``, and a backlog batches back
    to back as before (each is at least ``min_messages`` already). ``check_seconds`` is the
    processing-time trigger between two such checks: each is one offsets request to the
    broker, and a batch that runs longer than it lets the next start at once.
    """

    min_messages: int = 500
    max_wait_seconds: float = 1.0
    check_seconds: float = 0.1

    def __post_init__(self) -> None:
        if self.min_messages < 1:
            raise ValueError(f"min_messages must be at least 1: got {self.min_messages}")
        if not 0 < self.max_wait_seconds < 3600:
            raise ValueError(f"max_wait_seconds must be within (0, 3600): got {self.max_wait_seconds}")
        if not 0 < self.check_seconds <= self.max_wait_seconds:
            raise ValueError(
                f"check_seconds must be within (0, max_wait_seconds={self.max_wait_seconds}]: got {self.check_seconds}"
            )

    def source_options(self, max_offsets_per_trigger: int) -> dict[str, str]:
        """The Kafka source's options: never more messages to wait for than a batch may hold."""
        return {
            "minOffsetsPerTrigger": str(min(self.min_messages, max_offsets_per_trigger)),
            "maxTriggerDelay": f"{round(self.max_wait_seconds * 1000)}ms",
        }


# Without a pacing, batches start back to back (Spark's default trigger).
BACK_TO_BACK: BatchPacing | None = None


def read_stream(
    spark: SparkSession,
    *,
    kafka_bootstrap: str,
    topic: str,
    starting_offsets: str,
    max_offsets_per_trigger: int,
    pacing: BatchPacing | None = BACK_TO_BACK,
    security: KafkaSecurity | None = None,
) -> DataFrame:
    """The topic as a streaming DataFrame, validated (``startingOffsets`` is ignored beside a checkpoint).

    Transformed here, once, at query start: each micro-batch's DataFrame arrives analysed and
    validated, so a batch pays no Python-side plan building or analysis. ``pacing``: when a
    batch may start (:class:`BatchPacing`; its trigger is the query's). ``security``: the
    client security settings, by default the process's SHOPSTREAM_KAFKA_* ones.
    """
    from streaming.transforms import parse_and_validate

    source = (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(kafka_bootstrap, security))
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
        .option("includeHeaders", "true")
        .option("kafka.fetch.max.wait.ms", str(KAFKA_FETCH_MAX_WAIT_MS))
        .option("kafka.isolation.level", KAFKA_ISOLATION_LEVEL)
        .options(**(pacing.source_options(max_offsets_per_trigger) if pacing is not None else {}))
        .load()
    )
    return parse_and_validate(one_task_per_core(source))


def start_stream(spark: SparkSession, stream_writer: DataStreamWriter) -> StreamingQuery:
    """``stream_writer.start()`` with :data:`STREAM_EXCLUDED_RULES` left out of every micro-batch's optimization.

    A streaming query runs on a copy of the session taken when it starts, so the exclusion is
    the query's alone; the session gets its own setting back at once.
    """
    with _excluded_rules(spark, STREAM_EXCLUDED_RULES):
        return stream_writer.start()


@contextmanager
def _excluded_rules(spark: SparkSession, rules: tuple[str, ...]) -> Iterator[None]:
    previous = spark.conf.get(EXCLUDED_RULES_CONF, None)
    already = [rule for rule in (previous or "").split(",") if rule]
    spark.conf.set(EXCLUDED_RULES_CONF, ",".join(dict.fromkeys([*already, *rules])))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(EXCLUDED_RULES_CONF)
        else:
            spark.conf.set(EXCLUDED_RULES_CONF, previous)


def write_offset_range(
    spark: SparkSession,
    sink: BronzeSink,
    *,
    kafka_bootstrap: str,
    topic: str,
    start: Mapping[int, int],
    end: Mapping[int, int],
    security: KafkaSecurity | None = None,
    **batch_info: object,
) -> BatchResult:
    """Offsets ``start`` to ``end`` (exclusive, every partition) read in batch mode, validated, written as one batch.

    The range is the batch's planned one: the sink refuses it if it starts beyond Bronze and
    records it whole, whatever messages it holds.
    """
    from streaming.ledger import PlannedOffsets
    from streaming.transforms import parse_and_validate

    messages = (
        spark.read.format("kafka")
        .options(**spark_kafka_options(kafka_bootstrap, security))
        .option("subscribe", topic)
        .option("startingOffsets", json.dumps({topic: {str(p): o for p, o in start.items()}}))
        .option("endingOffsets", json.dumps({topic: {str(p): o for p, o in end.items()}}))
        .option("failOnDataLoss", "true")
        .option("includeHeaders", "true")
        .option("kafka.fetch.max.wait.ms", str(KAFKA_FETCH_MAX_WAIT_MS))
        .option("kafka.isolation.level", KAFKA_ISOLATION_LEVEL)
        .load()
    )
    started_at = datetime.now(UTC)
    with arrow_chunks(parse_and_validate(one_task_per_core(messages))) as chunks:
        return sink.write(chunks, planned=PlannedOffsets(dict(start), dict(end)), started_at=started_at, **batch_info)


def one_task_per_core(kafka_messages: DataFrame) -> DataFrame:
    """The Kafka source read by as many tasks as Spark has cores, not one task per topic partition.

    Each task deserializes the whole plan and generates the code of the projections that
    hold ``from_json`` (Spark cannot compile it into whole-stage code): with more topic
    partitions than cores, generating that code alone was a visible share of the drain's JVM
    time. Merging partitions needs no shuffle, and the drain ran faster with it.
    """
    cores = kafka_messages.sparkSession.sparkContext.defaultParallelism
    return kafka_messages.coalesce(cores)
