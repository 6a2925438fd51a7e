"""A batch's driver-side memory is bounded by bytes whatever the accepted events carry.

The largest events the rules accept (every free-text field at its length limit in 4-byte
characters, about 10 KB each) are streamed by ``shopstream stream`` under a result limit
scaled down from Spark's 1 GB default through Spark's own configuration file
(``SPARK_CONF_DIR/spark-defaults.conf``). Before batches were sized by the largest row, the
whole topic was one micro-batch larger than that limit: Spark aborted its collection, and
every restart took the same batch again until the stream gave up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shopstream_assets_tests.streaming.conftest import assert_every_batch_accounted, fetch, produce_messages
from shopstream_assets_tests.streaming.worst_case import worst_case_event, worst_case_event_values
from streaming.arrow_collection import LARGEST_ROW_BYTES, spark_size_bytes

MAX_RESULT_SIZE = "8m"
EVENTS = 2_000
# Every text column of a Bronze event: what one collected row carries beyond a few numbers.
TEXT_COLUMNS = (
    "event_id",
    "user_id",
    "session_id",
    "event_type",
    "product_id",
    "product_name",
    "product_category",
    "device_type",
    "country",
    "kafka_topic",
)


def test_the_largest_accepted_events_drain_within_a_small_result_limit(
    shopstream_env: dict[str, str],
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    spawn_process,
    tmp_path: Path,
) -> None:
    values = worst_case_event_values(EVENTS)
    assert len(values[0]) > 10_000
    produce_messages(kafka_bootstrap, topic, values)
    spark_conf = tmp_path / "spark-conf"
    spark_conf.mkdir()
    (spark_conf / "spark-defaults.conf").write_text(f"spark.driver.maxResultSize {MAX_RESULT_SIZE}\n")

    # The topic is full before the stream starts, so idle means drained: a second is enough.
    stream = spawn_process(
        [sys.executable, "-m", "shopstream_cli.cli", "stream", "--until-idle", "1"],
        env={**shopstream_env, "SPARK_CONF_DIR": str(spark_conf)},
        name="stream",
    )
    assert stream.wait(180) == 0

    assert assert_every_batch_accounted(database_url) == (EVENTS, EVENTS, 0, 0)
    stored = fetch(database_url, "select event_id from bronze.clickstream_events")
    assert sorted(event_id for (event_id,) in stored) == sorted(
        str(worst_case_event(index)["event_id"]) for index in range(EVENTS)
    )
    # Each batch within half the result limit, counted in the bytes its rows carry.
    budget = spark_size_bytes(MAX_RESULT_SIZE) // 2
    text_bytes = " + ".join(f"octet_length(e.{column})" for column in TEXT_COLUMNS)
    batches = fetch(
        database_url,
        "select b.messages_consumed, sum("
        + text_bytes
        + ") from bronze.ingest_batches b join bronze.clickstream_events e using (batch_id) group by b.batch_id",
    )
    assert len(batches) >= EVENTS * LARGEST_ROW_BYTES / budget
    assert all(messages <= budget // LARGEST_ROW_BYTES and row_bytes <= budget for messages, row_bytes in batches)
    # The rows really are the largest: what the bound is computed for.
    assert min(row_bytes / messages for messages, row_bytes in batches) > 0.9 * LARGEST_ROW_BYTES


@pytest.mark.parametrize(
    ("text", "default_unit", "expected"),
    [("1g", "b", 1 << 30), ("8m", "b", 8 << 20), ("1073741824", "b", 1 << 30), ("2048", "m", 2 << 30), ("0", "b", 0)],
)
def test_spark_sizes_read_as_spark_reads_them(text: str, default_unit: str, expected: int) -> None:
    assert spark_size_bytes(text, default_unit=default_unit) == expected
