"""`shopstream up`'s status line, against a real broker and a real PostgreSQL."""

from datetime import UTC, datetime

from confluent_kafka import Producer

from shopstream.database import connect
from shopstream.services import Endpoints
from shopstream_cli.stack import _status_line


def test_the_status_line_shows_bronze_the_lag_and_the_last_gold_refresh(
    database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, count in ((0, 5), (1, 3)):
        for index in range(count):
            producer.produce(topic, value=f"message {index}".encode(), partition=partition)
    assert producer.flush(30) == 0
    with connect(database_url) as conn:
        (batch_id,) = conn.execute(
            "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets, messages_consumed,"
            " rows_written, rejects, duplicates, started_at)"
            " values (%s, 'stream', '{\"0\": 0}', '{\"0\": 2}', 2, 2, 0, 0, now()) returning batch_id",
            (topic,),
        ).fetchone()
    endpoints = Endpoints(database_url, database_url, kafka_bootstrap)

    line, _ = _status_line(endpoints, topic, None)
    assert "topic 8 |" in line and "bronze 2 rows" in line and "lag 6 |" in line
    assert line.endswith("gold refreshed -")  # no dbt run yet: gold.refresh_log does not exist

    refreshed_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with connect(database_url) as conn:
        conn.execute("create table gold.refresh_log (invocation_id text, refreshed_at timestamptz, gold_batch_id int)")
        conn.execute("insert into gold.refresh_log values ('x', %s, %s)", (refreshed_at, batch_id))
    line, _ = _status_line(endpoints, topic, None)
    assert line.endswith(f"gold refreshed {refreshed_at.astimezone().strftime('%H:%M:%S')}")
