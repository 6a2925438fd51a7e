"""Whole Kafka records for the end-to-end tests: sent with any headers, read back with their
headers and timestamps, and held against Bronze message by message.

``helpers.read_topic`` reads values only; the verdict on event_timestamp needs each record's
timestamp and ``sent_at`` needs its headers, so these tests read them too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, Producer, TopicPartition

from shopstream.kafka_admin import end_offsets
from shopstream_assets_tests.e2e.helpers import Report, fetch
from streaming.events import from_epoch_ms, sent_at_from_headers, validate_message

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    value: bytes | None
    headers: Headers
    timestamp: datetime  # the record's timestamp, as Spark's Kafka source reads it


def produce_records(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    headers: Sequence[Headers],
    *,
    keys: Sequence[bytes],
    timestamp_ms: int | None = None,
) -> None:
    """Send each value with its own header list (any bytes, None, several, none) and wait for every ack.

    ``timestamp_ms``: the records' CreateTime (by default the client's clock at each send).
    """
    stamp = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value, header_list in zip(keys, values, headers, strict=True):
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=header_list, on_delivery=delivered, **stamp)
                break
            except BufferError:
                producer.poll(0.1)
    remaining = producer.flush(60)
    assert remaining == 0 and not failures, f"{remaining} messages not delivered: {failures[:3]}"


def read_records(bootstrap: str, topic: str, *, timeout: float = 120) -> list[TopicRecord]:
    """Every record of ``topic`` with its headers and timestamp, in (partition, offset) order."""
    highs = end_offsets(bootstrap, topic, timeout=30)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "e2e-records", "enable.auto.commit": False, "log_level": 0}
    )
    records: list[TopicRecord] = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0) for partition in highs])
        remaining = sum(highs.values())
        deadline = time.monotonic() + timeout
        while remaining > 0:
            assert time.monotonic() < deadline, f"read {len(records)} of {sum(highs.values())} records back"
            for message in consumer.consume(10_000, timeout=1):
                if message.error() is None and message.offset() < highs[message.partition()]:
                    _, milliseconds = message.timestamp()
                    records.append(
                        TopicRecord(
                            message.partition(),
                            message.offset(),
                            message.value(),
                            list(message.headers() or []),
                            from_epoch_ms(milliseconds),
                        )
                    )
                    remaining -= 1
    finally:
        consumer.close()
    return sorted(records, key=lambda record: (record.partition, record.offset))


def check_each_message(report: Report, database_url: str, topic: str, records: Sequence[TopicRecord]) -> None:
    """Message by message: Bronze's reason is the reference's (given the record's timestamp), and
    its sent_at is the reference's reading of the record's headers."""
    rejects = {
        (partition, offset): (reason, sent_at)
        for partition, offset, reason, sent_at in fetch(
            database_url,
            "select kafka_partition, kafka_offset, reason, sent_at from bronze.clickstream_rejects"
            " where kafka_topic = %s",
            (topic,),
        )
    }
    events = {
        (partition, offset): sent_at
        for partition, offset, sent_at in fetch(
            database_url,
            "select kafka_partition, kafka_offset, sent_at from bronze.clickstream_events where kafka_topic = %s",
            (topic,),
        )
    }
    wrong_reason: list[str] = []
    wrong_sent_at: list[str] = []
    with_sent_at = 0
    for record in records:
        position = (record.partition, record.offset)
        verdict = validate_message(record.value, record.timestamp)
        expected_reason = verdict.reason.value if verdict.reason else None
        stored_reason, stored_sent_at = rejects.get(position, (None, None))
        if stored_reason != expected_reason:
            wrong_reason.append(f"{position}: Bronze {stored_reason}, reference {expected_reason}")
        if position in events:
            stored_sent_at = events[position]
        elif expected_reason is None:
            continue  # a duplicate: its event_id is stored from another position
        expected_sent_at = sent_at_from_headers(record.headers)
        with_sent_at += expected_sent_at is not None
        if stored_sent_at != expected_sent_at:
            wrong_sent_at.append(f"{position} headers {record.headers!r:.120}: {stored_sent_at} vs {expected_sent_at}")
    report.held(
        "each message's reject reason (or none) = the reference's, given its record timestamp",
        not wrong_reason,
        f"{len(wrong_reason)} differ: {wrong_reason[:5]}",
    )
    report.held(
        "each stored message's sent_at = the reference's reading of its headers",
        not wrong_sent_at,
        f"{len(wrong_sent_at)} differ: {wrong_sent_at[:5]}",
    )
    report.note(f"{len(records):,} messages compared one by one; {with_sent_at:,} with a legible sent_at")
