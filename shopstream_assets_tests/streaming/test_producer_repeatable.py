"""Repeatable to the byte: what ``--seed`` alone repeats, what ``--seed`` with ``--start`` repeats.

``--seed --start`` runs twice through the real command to two real topics and every message is
compared (key, value, partition, offset, header names; the send-time header is the wall clock of
sending, so only its presence is compared). Bad ``--start`` values exit 2 naming the option.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from typer.testing import CliRunner

from shopstream_assets_tests.conftest import Spawn
from shopstream_assets_tests.streaming.test_producer import PRODUCE, producer_env, summary, wait_for_exit
from shopstream_cli.cli import app
from streaming.events import SENT_AT_HEADER, parse_timestamp
from streaming.simulator import Simulator

START = "2026-01-01T00:00:00Z"
# Where the clock shows in a message: the time part of an event id, a timestamp, or the end of
# either where a bad kind cut the message short.
CLOCK_TEXT = re.compile(rb"(?<=EVT_)[0-9a-f]{1,12}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?|\d[\d:T.-]*$")
ID_PATTERN = re.compile(rb'\{"event_id":"EVT_([0-9a-f]{12})')

# (partition, offset, key, value, header names, sent_at_ms)
Record = tuple[int, int, bytes | None, bytes | None, list[str], int]


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[Record]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1_000, timeout=0.5):
                assert message.error() is None, message.error()
                headers = message.headers() or []
                sent_at = [int(value) for name, value in headers if name == SENT_AT_HEADER]
                assert len(sent_at) == 1, headers
                names = [name for name, _ in headers]
                records.append(
                    (message.partition(), message.offset(), message.key(), message.value(), names, sent_at[0])
                )
        assert len(records) == expected, f"read {len(records)} of {expected} messages"
        return sorted(records)
    finally:
        consumer.close()


def produce_twice(
    kafka_bootstrap: str, topic: str, spawn_process: Spawn, tmp_path: Path, options: list[str], events: int
) -> Iterator[list[Record]]:
    """Two runs of the command, one topic each (created by the command, same partitions)."""
    runs = []
    for run in ("first", "second"):
        run_topic = f"{topic}-{run}"
        process = spawn_process(
            [*PRODUCE, *options, "--events", str(events), "--partitions", "6", "--quiet"],
            env=producer_env(kafka_bootstrap, run_topic, tmp_path / f"home-{run}"),
            name=run,
        )
        runs.append((run, run_topic, process))
    for run, run_topic, process in runs:
        assert wait_for_exit(process, 90) == 0, (tmp_path / "logs" / f"{run}.log").read_text()[-2000:]
        assert f"sent {events:,}, delivered {events:,}, failed 0" in summary(tmp_path / "logs" / f"{run}.log")
        yield read_all(kafka_bootstrap, run_topic, events)


def test_seed_and_start_repeat_every_message_to_the_byte(
    kafka_bootstrap: str, topic: str, spawn_process: Spawn, tmp_path: Path
) -> None:
    events = 3_000
    options = ["--rate", "0", "--seed", "5", "--start", START, "--bad-ratio", "0.2"]
    first, second = produce_twice(kafka_bootstrap, topic, spawn_process, tmp_path, options, events)
    assert len({partition for partition, *_ in first}) == 6
    assert [record[:5] for record in first] == [record[:5] for record in second]
    # Every header but the send time's is the same: there is no other, and that one is the wall clock.
    assert all(names == [SENT_AT_HEADER] for *_, names, _ in first)
    # The event clock is pinned: the first event is at --start (ids lead with its epoch ms).
    id_times = [int(found.group(1), 16) for *_, value, _, _ in first if (found := ID_PATTERN.match(value or b""))]
    assert len(id_times) >= 0.9 * events
    assert min(id_times) == int(datetime.fromisoformat(START).timestamp() * 1000)


def test_paced_runs_from_a_start_advance_at_the_rate_not_the_wall_clock(
    kafka_bootstrap: str, topic: str, spawn_process: Spawn, tmp_path: Path
) -> None:
    rate, events = 1_000, 1_500
    options = ["--rate", str(rate), "--seed", "8", "--start", START]
    first, second = produce_twice(kafka_bootstrap, topic, spawn_process, tmp_path, options, events)
    assert [record[:5] for record in first] == [record[:5] for record in second]
    times = sorted(event_time(value) for *_, value, _, _ in first)
    start = datetime.fromisoformat(START)
    assert times[0] == start
    assert times[-1] - start == pytest.approx(timedelta(seconds=(events - 1) / rate), abs=timedelta(milliseconds=2))
    # Sent over about as long as the events span: paced from the start, not in one burst.
    sent = sorted(sent_at for *_, sent_at in first)
    assert sent[-1] - sent[0] >= (events - 1) / rate * 1000 * 0.8


def event_time(value: bytes | None) -> datetime:
    moment = parse_timestamp(json.loads(value or b"")["event_timestamp"])
    assert moment is not None
    return moment


def test_seed_alone_repeats_all_but_the_clock() -> None:
    """Two starts, months and a fraction of a millisecond apart: the same keys, the same kinds
    of bad message, values of the same length that differ only where the clock shows (a value
    cut short by a bad kind may end inside those spans)."""
    first = Simulator(5, start=datetime(2026, 1, 1, 0, 0, 0, 123_456, tzinfo=UTC), bad_ratio=0.2).take(30_000)
    second = Simulator(5, start=datetime(2026, 6, 1, 13, 7, tzinfo=UTC), bad_ratio=0.2).take(30_000)
    assert first.keys == second.keys
    assert first.labels is not None and second.labels is not None
    assert [label and label.kind for label in first.labels] == [label and label.kind for label in second.labels]
    changed = 0
    for one, other in zip(first.values, second.values, strict=True):
        assert len(one) == len(other)
        clock = {index for found in CLOCK_TEXT.finditer(one) for index in range(*found.span())}
        differ = {index for index, (a, b) in enumerate(zip(one, other, strict=True)) if a != b}
        assert differ <= clock, (one, other)
        changed += bool(differ)
    assert changed >= 0.99 * len(first)  # all but values cut before the id's time


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "1999-12-31T23:59:59Z", "9999-01-01T00:00:00Z", ""],
)
def test_a_bad_start_exits_2_naming_the_option(value: str) -> None:
    result = CliRunner().invoke(app, ["produce", f"--start={value}", "--events", "1"])
    assert result.exit_code == 2, result.output[-1500:]
    assert "--start" in result.output, result.output[-1500:]
