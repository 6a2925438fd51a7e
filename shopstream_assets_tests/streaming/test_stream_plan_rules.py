"""The optimizer rules the stream leaves out (``STREAM_EXCLUDED_RULES``) change nothing in the validation plan.

A streaming query optimizes its plan again for every micro-batch; these rules were the costliest
to run on it while never changing it. If a new stage made one of them matter, the plans below
would differ and the rule would have to go back in.
"""

from __future__ import annotations

import re
import threading

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streaming.kafka_source import EXCLUDED_RULES_CONF, STREAM_EXCLUDED_RULES, start_stream
from streaming.transforms import parse_and_validate

MESSAGES = [b'{"event_id": "a"}', b"not json", None]


def _kafka_like(spark: SparkSession, *, headers: bool) -> DataFrame:
    frame = spark.createDataFrame(
        [(value, "t", 0, offset) for offset, value in enumerate(MESSAGES)],
        "value binary, topic string, partition int, offset long",
    ).withColumn("timestamp", F.lit("2026-12-07 12:00:00").cast("timestamp"))  # a constant: planned alike twice
    if headers:
        frame = frame.withColumn("headers", F.lit(None).cast("array<struct<key:string,value:binary>>"))
    return frame


def _optimized(frame: DataFrame) -> str:
    plan = frame.select("*")._jdf.queryExecution().optimizedPlan().toString()
    return re.sub(r"#\d+L?", "#", plan)  # expression ids differ between two plannings


@pytest.mark.parametrize("headers", [True, False], ids=["with-headers", "without-headers"])
def test_the_excluded_rules_leave_the_validation_plan_as_it_was(spark: SparkSession, headers: bool) -> None:
    validated = parse_and_validate(_kafka_like(spark, headers=headers))
    with_every_rule = _optimized(validated)
    spark.conf.set(EXCLUDED_RULES_CONF, ",".join(STREAM_EXCLUDED_RULES))
    try:
        without = _optimized(validated)
    finally:
        spark.conf.unset(EXCLUDED_RULES_CONF)
    assert without == with_every_rule


def test_the_stream_runs_without_them_and_the_session_keeps_its_own_setting(spark: SparkSession) -> None:
    seen: list[str | None] = []
    first_batch = threading.Event()

    def record(batch: DataFrame, batch_id: int) -> None:
        seen.append(batch.sparkSession.conf.get(EXCLUDED_RULES_CONF, None))
        first_batch.set()

    writer = spark.readStream.format("rate").option("rowsPerSecond", 1).load().writeStream.foreachBatch(record)
    query = start_stream(spark, writer)
    try:
        assert first_batch.wait(120), "no micro-batch within 120 s"
    finally:
        query.stop()
    assert spark.conf.get(EXCLUDED_RULES_CONF, None) is None
    assert seen and set((seen[0] or "").split(",")) == set(STREAM_EXCLUDED_RULES)
