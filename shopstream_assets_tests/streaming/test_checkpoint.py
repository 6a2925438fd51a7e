"""streaming.checkpoint: where the stream starts, and a topic that is not the one Bronze holds (the line-up of a
checkpoint with Bronze runs in test_job.py, through the stream)."""

from __future__ import annotations

import json

import psycopg
import pytest

from shopstream.settings import load_settings
from shopstream_assets_tests.streaming.conftest import fetch, produce_simulated
from streaming.checkpoint import starting_offsets
from streaming.job import replay_topic, run_stream
from streaming.job_errors import StreamJobError


def test_starting_offsets_come_from_the_ledger_else_earliest() -> None:
    assert starting_offsets("t", [0, 1, 2], {}) == "earliest"
    assert json.loads(starting_offsets("t", [0, 1, 2], {0: 7, 2: 3})) == {"t": {"0": 7, "1": -2, "2": 3}}


def test_a_topic_recreated_under_the_same_name_is_refused_not_skipped(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """Bronze holds the old topic up to offset 5,000 of partition 0; the broker's topic of the same
    name (recreated, or another cluster) holds far less. Its messages would all count as already
    committed: the stream and the replay refuse instead, naming the partition."""
    produce_simulated(kafka_bootstrap, topic, 300, seed=12, bad_ratio=0.0)
    with psycopg.connect(database_url) as conn:
        conn.execute(  # its trigger advances bronze.ingest_offsets
            "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets, messages_consumed,"
            " rows_written, rejects, duplicates, started_at)"
            " values (%s, 'stream', '{\"0\": 0}', '{\"0\": 5000}', 0, 0, 0, 0, now())",
            (topic,),
        )
    settings = load_settings(shopstream_env)
    refused = r"holds topic .* beyond what the broker .* has \(partition 0: Bronze 5,000, broker \d"
    with pytest.raises(StreamJobError, match=refused):
        run_stream(spark, settings, database_url=database_url, kafka_bootstrap=kafka_bootstrap, until_idle=1.5)
    with pytest.raises(StreamJobError, match=refused):
        replay_topic(spark, settings, database_url=database_url, kafka_bootstrap=kafka_bootstrap)
    assert fetch(database_url, "select count(*) from bronze.clickstream_events") == [(0,)]
