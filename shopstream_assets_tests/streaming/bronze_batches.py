"""Validated batches and Bronze reads for the Bronze sink's tests (test_bronze_sink*.py)."""

from __future__ import annotations

import psycopg
import pyarrow as pa

from shopstream_assets_tests.streaming.conftest import good_event, kafka_frame
from streaming.events import encode_event
from streaming.transforms import parse_and_validate

TOPIC = "clicks"  # the topic kafka_frame writes into the rows


def validated(spark, values, *, first_offset: int = 0) -> pa.Table:
    table = parse_and_validate(kafka_frame(spark, values)).toArrow()
    offsets = pa.array([offset + first_offset for offset in table["kafka_offset"].to_pylist()], pa.int64())
    return table.set_column(table.schema.get_field_index("kafka_offset"), "kafka_offset", offsets)


def events(count: int, start: int = 0) -> list[bytes]:
    return [encode_event(good_event(event_id=f"EVT_{index:012d}")) for index in range(start, start + count)]


def fetch(database_url: str, query: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def ledger(database_url: str) -> list[tuple]:
    return fetch(
        database_url,
        "select batch_id, messages_consumed, rows_written, rejects, duplicates, repaired, source"
        " from bronze.ingest_batches order by batch_id",
    )
