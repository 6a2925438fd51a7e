"""A batch's memory is bounded by bytes: 1,200 messages of 900 KB between good events drain with the defaults.

Issue 30's scenario, as a user runs it: ``shopstream stream --until-idle`` with the default
``maxOffsetsPerTrigger`` and driver memory, so the whole topic is ONE micro-batch holding
about a gigabyte of message values. Before rejects kept only a bounded prefix, the JVM died
on it and every restart took the same batch again.
"""

from __future__ import annotations

import hashlib
import random
import sys

import psycopg
import pytest
from confluent_kafka import Producer

from shopstream_assets_tests.streaming.conftest import assert_every_batch_accounted, produce_messages
from streaming.events import SENT_AT_HEADER, RejectReason
from streaming.reject_payload import RAW_PREFIX_BYTES
from streaming.simulator import Simulator

LARGE_MESSAGES = 1_200
LARGE_MESSAGE_BYTES = 900_000
GOOD_EACH_SIDE = 1_000


def produce_large_random_values(kafka_bootstrap: str, topic: str, count: int, size: int) -> dict[bytes, bytes]:
    """``count`` random values of ``size`` bytes, made one at a time: {sha256: first bytes} of each."""
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            # Room for one value and its record overhead (the broker takes about 1 MB).
            "message.max.bytes": size + 64_000,
            # The test's own memory: a few values queued at a time, not the whole gigabyte.
            "queue.buffering.max.kbytes": 65_536,
        }
    )
    failures: list[str] = []
    noise = random.Random(30)
    prefixes: dict[bytes, bytes] = {}
    for _ in range(count):
        value = noise.randbytes(size)
        prefixes[hashlib.sha256(value).digest()] = value[:RAW_PREFIX_BYTES]
        headers = [(SENT_AT_HEADER, b"1767450225500")]
        while True:
            try:
                producer.produce(
                    topic, value=value, headers=headers, on_delivery=lambda error, _: error and failures.append(error)
                )
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0 and not failures, failures[:3]
    return prefixes


@pytest.mark.slow
def test_a_gigabyte_of_rejects_between_good_events_drains_with_the_defaults(
    shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str, spawn_process
) -> None:
    good = Simulator(seed=30, bad_ratio=0.0).take(2 * GOOD_EACH_SIDE)
    produce_messages(kafka_bootstrap, topic, good.values[:GOOD_EACH_SIDE], keys=good.keys[:GOOD_EACH_SIDE])
    prefixes = produce_large_random_values(kafka_bootstrap, topic, LARGE_MESSAGES, LARGE_MESSAGE_BYTES)
    produce_messages(kafka_bootstrap, topic, good.values[GOOD_EACH_SIDE:], keys=good.keys[GOOD_EACH_SIDE:])

    # The topic is full before the stream starts, so idle means drained: a second is enough.
    stream = spawn_process(
        [sys.executable, "-m", "shopstream_cli.cli", "stream", "--until-idle", "1"], env=shopstream_env, name="stream"
    )
    assert stream.wait(240) == 0

    total = 2 * GOOD_EACH_SIDE + LARGE_MESSAGES
    assert assert_every_batch_accounted(database_url) == (total, 2 * GOOD_EACH_SIDE, LARGE_MESSAGES, 0)
    with psycopg.connect(database_url) as conn:
        (events,) = conn.execute("select count(*) from bronze.clickstream_events").fetchone()
        rejects = conn.execute(
            "select reason, raw_value, raw_text, raw_length, raw_sha256 from bronze.clickstream_rejects"
        ).fetchall()
    assert events == 2 * GOOD_EACH_SIDE
    assert len(rejects) == LARGE_MESSAGES
    for reason, raw_value, raw_text, raw_length, raw_sha256 in rejects:
        assert (reason, raw_text, raw_length) == (RejectReason.INVALID_UTF8.value, None, LARGE_MESSAGE_BYTES)
        assert bytes(raw_value) == prefixes[bytes(raw_sha256)]
    assert {bytes(row[4]) for row in rejects} == set(prefixes)
