"""Spark's checkpoint read, and lined up with Bronze before a query starts.

Where the stream starts: the checkpoint under ``SHOPSTREAM_HOME/checkpoints/<topic>`` when
there is one; otherwise the next offsets recorded in ``bronze.ingest_offsets`` (``earliest``
for partitions never written). Nothing here deletes a checkpoint: one ahead of Bronze is
either caught up (a stop during the write-behind commit) or set aside, renamed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from shopstream.settings import Settings
from streaming.job_errors import StreamJobError
from streaming.kafka_source import write_offset_range
from streaming.ledger import PlannedOffsets

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streaming.bronze_batch import BatchResult
    from streaming.bronze_sink import BronzeSink

log = logging.getLogger("shopstream.stream")


def checkpoint_dir(settings: Settings, topic: str | None = None) -> Path:
    return settings.checkpoints_dir / (topic or settings.topic)


def has_checkpoint(checkpoint: Path) -> bool:
    offsets = checkpoint / "offsets"
    return offsets.is_dir() and any(entry.name.isdigit() for entry in offsets.iterdir())


def starting_offsets(topic: str, partitions: list[int], committed: Mapping[int, int]) -> str:
    """Kafka source ``startingOffsets``: the ledger's next offsets, -2 (earliest) elsewhere."""
    if not committed:
        return "earliest"
    return json.dumps({topic: {str(partition): committed.get(partition, -2) for partition in partitions}})


def line_up_checkpoint_with_bronze(
    *,
    spark: SparkSession,
    sink: BronzeSink,
    checkpoint: Path,
    kafka_bootstrap: str,
    topic: str,
    restart_from_bronze: bool,
) -> BatchResult | None:
    """Before a query starts: make Bronze hold everything the checkpoint marks committed, or stop.

    Bronze short of the checkpoint's newest batch alone is a stop during its write-behind
    commit: those messages are written from Kafka now, as that batch (its result returned).
    Further behind, the database was reset or restored: resuming would skip messages, so the
    job stops, unless ``restart_from_bronze``, which sets the checkpoint aside and starts from
    Bronze's offsets.
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
    refuse_bronze_ahead_of_topic(committed, marks, kafka_bootstrap, topic)
    newest = checkpoint_newest_batch(checkpoint, topic)
    if newest is None:
        return None
    low_watermarks = {partition: low for partition, (low, _) in marks.items()}
    ahead = checkpoint_ahead_of_bronze(newest.end, committed, low_watermarks)
    if not ahead:
        return None
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
        result = write_offset_range(
            spark,
            sink,
            kafka_bootstrap=kafka_bootstrap,
            topic=topic,
            start=bronze,
            end=end,
            spark_query_id=checkpoint_query_id(checkpoint),
            spark_batch_id=newest.spark_batch_id,
        )
        log.info(
            "batch %s (spark %d, caught up): %d messages -> %d rows, %d rejects, %d duplicates",
            result.batch_id,
            newest.spark_batch_id,
            result.messages_consumed,
            result.rows_written,
            result.rejects,
            result.duplicates,
        )
        return result
    if not restart_from_bronze:
        raise StreamJobError(
            f"the checkpoint {checkpoint} is ahead of bronze.ingest_batches ({where}): the database was reset or "
            "restored, or this is not the database the checkpoint wrote to. Resuming would skip those messages. "
            "If this is the right database, run `shopstream stream --restart-from-bronze` once: it sets the "
            "checkpoint aside (renamed, not deleted) and reads from the offsets Bronze holds."
        )
    aside = set_checkpoint_aside(checkpoint)
    log.warning("checkpoint ahead of Bronze (%s): set aside as %s; starting from Bronze's offsets", where, aside)
    return None


def refuse_bronze_ahead_of_topic(
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


@dataclass(frozen=True)
class CheckpointBatch:
    """The newest micro-batch Spark's checkpoint marks committed: its id and offsets per partition."""

    spark_batch_id: int
    start: dict[int, int] | None  # None when Spark no longer keeps the previous batch's offsets
    end: dict[int, int]


def checkpoint_newest_batch(checkpoint: Path, topic: str) -> CheckpointBatch | None:
    """The newest batch with a ``commits/<n>`` file (its offsets: :func:`planned_offsets`); None if none."""
    commits = checkpoint / "commits"
    done = [int(entry.name) for entry in commits.iterdir() if entry.name.isdigit()] if commits.is_dir() else []
    if not done:
        return None
    newest = max(done)
    planned = planned_offsets(checkpoint, topic, newest)
    return CheckpointBatch(newest, None if planned.start is None else dict(planned.start), dict(planned.end))


def planned_offsets(
    checkpoint: Path, topic: str, spark_batch_id: int, *, previous_end: Mapping[int, int] | None = None
) -> PlannedOffsets:
    """The offsets Spark planned for batch ``spark_batch_id``, from the checkpoint's offset log.

    Spark writes ``offsets/<n>`` (lines: version, batch metadata, one JSON per source) before
    batch n runs and ``commits/<n>`` once foreachBatch returned. Batch n starts where batch
    n-1 ended (``previous_end`` when the caller holds it, else ``offsets/<n-1>``); batch 0
    where the source started, kept in ``sources/0/0``.
    """
    try:
        end = _source_offsets((checkpoint / "offsets" / str(spark_batch_id)).read_text().splitlines()[2], topic)
        if previous_end is not None:
            start: dict[int, int] | None = dict(previous_end)
        elif spark_batch_id > 0:
            previous = checkpoint / "offsets" / str(spark_batch_id - 1)
            start = _source_offsets(previous.read_text().splitlines()[2], topic) if previous.exists() else None
        else:
            initial = checkpoint / "sources" / "0" / "0"
            start = (
                _source_offsets(initial.read_text().lstrip("\0").splitlines()[1], topic) if initial.exists() else None
            )
    except (OSError, IndexError, KeyError, TypeError, ValueError) as error:
        raise StreamJobError(f"cannot read the checkpoint's offsets under {checkpoint}: {error!r}") from None
    return PlannedOffsets(start, end)


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
    (see :class:`streaming.batch_writer.BatchWriter`); further behind, the database was reset
    or restored (or the stream points at another one).
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
