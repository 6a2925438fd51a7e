"""streaming.arrow_collection: one action per batch, its Arrow rows as Spark's tasks finish (or, on the stock
path, at once), exactly the rows and schema of ``toArrow()``."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from shopstream_assets_tests.streaming.conftest import good_event, kafka_frame
from streaming import pyspark_private
from streaming.arrow_collection import arrow_chunks
from streaming.events import encode_event
from streaming.transforms import parse_and_validate


def validated_frame(spark):
    values = [encode_event(good_event(event_id=f"EVT_{index:03d}")) for index in range(60)] + [b"{oops"]
    return parse_and_validate(kafka_frame(spark, values).repartition(4))


def test_arrow_chunks_hands_over_every_row_once_as_to_arrow_would(spark) -> None:
    """The stream's one action per batch: each task's rows as the task ends, same schema as
    toArrow(); when the sink fails midway its error is the one raised and Spark stays usable."""
    frame = validated_frame(spark)
    whole = frame.toArrow()
    with arrow_chunks(frame) as chunks:
        batches = list(chunks)
    assert len(batches) >= 2  # one per non-empty task at least
    collected = pa.Table.from_batches(batches)
    assert collected.schema == whole.schema
    assert sorted(collected["kafka_offset"].to_pylist()) == list(range(61))
    assert collected["reject_reason"].null_count == 60

    with pytest.raises(RuntimeError, match="the sink gave up"), arrow_chunks(frame) as chunks:
        for _ in chunks:
            raise RuntimeError("the sink gave up")
    assert frame.count() == 61


def test_without_a_private_name_arrow_chunks_hands_over_to_arrow_s_rows(
    spark, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade that removed a private name: the same rows and schema through the stock toArrow(),
    said once in the log; the sink's own error still the one raised."""
    monkeypatch.setattr(
        pyspark_private,
        "PRIVATE_NAMES",
        (*pyspark_private.PRIVATE_NAMES, "pyspark.util._load_from_socket_gone_in_arrow_chunks"),
    )
    frame = validated_frame(spark)
    whole = frame.toArrow()
    with caplog.at_level("WARNING", logger="shopstream.stream"):
        for _ in range(2):
            with arrow_chunks(frame) as chunks:
                collected = pa.Table.from_batches(list(chunks), schema=whole.schema)
            assert collected.schema == whole.schema
            assert sorted(collected["kafka_offset"].to_pylist()) == list(range(61))
            assert collected["reject_reason"].null_count == 60
    told = [record.getMessage() for record in caplog.records if "DataFrame.toArrow()" in record.getMessage()]
    assert len(told) == 1 and "pyspark.util._load_from_socket_gone_in_arrow_chunks" in told[0]

    with pytest.raises(RuntimeError, match="the sink gave up"), arrow_chunks(frame) as chunks:
        for _ in chunks:
            raise RuntimeError("the sink gave up")


def test_a_job_spark_aborts_after_a_task_handed_over_its_rows_fails_the_iteration(spark) -> None:
    """The sink commits when the chunks end: a job Spark aborts after one task's rows arrived (a task that
    failed, results beyond spark.driver.maxResultSize) must end the iteration with the failure, not
    with a batch that lacks the other task's rows."""
    from pyspark.sql.functions import udf

    @udf("long")
    def fails_late_in_the_second_partition(value):  # no hints: Spark would read them as a pandas UDF
        if value >= 10:
            time.sleep(3)  # the first task's rows reach the driver first
            raise ValueError("the second task failed")
        return value

    frame = spark.range(0, 20, numPartitions=2).select(fails_late_in_the_second_partition("id").alias("id"))
    arrived: list[pa.RecordBatch] = []
    ended_without_failure = False
    with pytest.raises(Exception, match="the second task failed"), arrow_chunks(frame) as chunks:
        for batch in chunks:
            arrived.append(batch)
        ended_without_failure = True
    assert not ended_without_failure
    assert sum(batch.num_rows for batch in arrived) == 10  # the first task's rows did arrive
    assert spark.range(3).count() == 3
