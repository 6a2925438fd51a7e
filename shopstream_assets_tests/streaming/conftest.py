"""Fixtures for the streaming tests: Kafka helpers and event builders (the SparkSession is the suite's one,
in the root conftest)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence

import psycopg
import pytest
from confluent_kafka import Producer

from streaming.events import SENT_AT_HEADER, encode_event, validate_message
from streaming.simulator import Simulator

Produce = Callable[..., int]


def produce_messages(
    kafka_bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    partition: int | None = None,
    sent_at_ms: int | None = None,
) -> int:
    """Send ``values`` (with the sent_at_ms header) and wait until all are acknowledged."""
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}
    )
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))

    for index, value in enumerate(values):
        key = keys[index] if keys is not None else None
        headers = [(SENT_AT_HEADER, str(sent_at_ms or int(time.time() * 1000)).encode())]
        extra = {"partition": partition} if partition is not None else {}
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered, **extra)
                break
            except BufferError:
                producer.poll(0.1)
    remaining = producer.flush(60)
    assert remaining == 0 and not failures, f"{remaining} messages not delivered: {failures[:3]}"
    return len(values)


@pytest.fixture
def produce(kafka_bootstrap: str) -> Produce:
    def send(topic: str, values: Sequence[bytes | None], **options: object) -> int:
        return produce_messages(kafka_bootstrap, topic, values, **options)

    return send


KAFKA_SCHEMA = "value binary, topic string, partition int, offset long, headers array<struct<key:string,value:binary>>"


def good_event(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "EVT_000000000001",
        "event_timestamp": "2026-01-03T14:23:45.123Z",
        "user_id": "USER_12345",
        "session_id": "SESSION_abcdef012345",
        "event_type": "purchase",
        "product_id": "P001",
        "product_name": "Wireless Earbuds",
        "product_category": "Electronics",
        "product_price": 79.99,
        "quantity": 2,
        "device_type": "Mobile",
        "country": "Nigeria",
        "schema_version": 1,
    }
    event.update(changes)
    return event


def without(name: str) -> bytes:
    event = good_event()
    del event[name]
    return encode_event(event)


def raw(**changes: object) -> bytes:
    """JSON with possibly non-standard values (NaN) written as Python's json module would."""
    return json.dumps(good_event(**changes), allow_nan=True).encode()


def kafka_frame(spark, values: Sequence[bytes | None], *, sent_at_ms: int | None = 1_767_450_225_500):
    headers = [(SENT_AT_HEADER, str(sent_at_ms).encode())] if sent_at_ms is not None else []
    rows = [(value, "clicks", index % 3, index, headers) for index, value in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


# Bronze as the stream tests check it: the simulator's messages sent, the reference's verdicts, the tables read back.

EVENT_COLUMNS_SQL = (
    "event_id, event_timestamp, user_id, session_id, event_type, product_id, product_name, product_category,"
    " product_price, quantity, device_type, country, schema_version, repaired, repair_reason,"
    " kafka_topic, kafka_partition, kafka_offset, sent_at"
)


def produce_simulated(kafka_bootstrap: str, topic: str, count: int, *, seed: int, bad_ratio: float):
    batch = Simulator(seed=seed, bad_ratio=bad_ratio).take(count)
    produce_messages(kafka_bootstrap, topic, batch.values, keys=batch.keys)
    return batch


def expected_bronze(values: list[bytes]) -> tuple[set[str], Counter[str], int]:
    """(event_ids in Bronze, reject reasons counted, duplicates) by the Python reference rules."""
    event_ids: set[str] = set()
    rejects: Counter[str] = Counter()
    duplicates = 0
    for value in values:
        verdict = validate_message(value)
        if verdict.reason is not None:
            rejects[verdict.reason.value] += 1
            continue
        event_id = json.loads(value)["event_id"]
        if event_id in event_ids:
            duplicates += 1
        event_ids.add(event_id)
    return event_ids, rejects, duplicates


def fetch(database_url: str, query: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def assert_every_batch_accounted(database_url: str) -> tuple[int, int, int, int]:
    rows = fetch(database_url, "select messages_consumed, rows_written, rejects, duplicates from bronze.ingest_batches")
    assert rows and all(consumed == written + rejects + dups for consumed, written, rejects, dups in rows)
    return tuple(sum(column) for column in zip(*rows, strict=True))  # type: ignore[return-value]


def bronze_snapshot(database_url: str) -> tuple[list[tuple], list[tuple]]:
    events = fetch(database_url, f"select {EVENT_COLUMNS_SQL} from bronze.clickstream_events order by event_id")
    rejects = fetch(
        database_url,
        "select kafka_partition, kafka_offset, raw_value, raw_text, reason, reason_detail"
        " from bronze.clickstream_rejects order by kafka_partition, kafka_offset",
    )
    return events, rejects


def delete_batch_from_bronze(conn: psycopg.Connection, topic: str, batch_id: int) -> None:
    """Bronze as if batch ``batch_id`` had never committed: its rows, rejects and ledger row gone,
    ``ingest_offsets`` back at the newest end offsets the remaining ledger holds."""
    conn.execute("delete from bronze.clickstream_rejects where batch_id = %s", (batch_id,))
    conn.execute("delete from bronze.clickstream_events where batch_id = %s", (batch_id,))
    conn.execute("delete from bronze.ingest_offsets where kafka_topic = %s", (topic,))
    conn.execute("delete from bronze.ingest_batches where batch_id = %s", (batch_id,))
    conn.execute(
        "insert into bronze.ingest_offsets (kafka_topic, kafka_partition, next_offset, batch_id)"
        " select distinct on (offsets.key::int) kafka_topic, offsets.key::int, offsets.value::bigint, batch_id"
        " from bronze.ingest_batches, jsonb_each_text(end_offsets) as offsets where kafka_topic = %s"
        " order by offsets.key::int, offsets.value::bigint desc",
        (topic,),
    )
