"""Fixtures for the streaming tests: Kafka helpers and event builders (the SparkSession is the suite's one,
in the root conftest)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import pytest
from confluent_kafka import Producer

from streaming.events import SENT_AT_HEADER, encode_event

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
