"""The producer against the real broker: round trip, pacing, the CLI's manifest, SIGTERM, benchmark."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from shopstream.kafka_admin import end_offsets
from shopstream_assets_tests.conftest import Spawn
from shopstream_cli.bench.produce import measure_delivery
from streaming.bad_messages import Outcome
from streaming.events import SENT_AT_HEADER, Repair, parse_timestamp, validate_message
from streaming.producer import PACING_TICK_S, ClickstreamProducer, run
from streaming.simulator import Batch, Simulator

# (offset, key, value, sent_at_ms) per partition, in offset order.
PartitionLog = dict[int, list[tuple[int, bytes, bytes, int]]]


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> PartitionLog:
    """Everything on ``topic`` from the beginning, by partition, once ``expected`` messages arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        log: PartitionLog = defaultdict(list)
        received = 0
        deadline = time.monotonic() + timeout
        while received < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1_000, timeout=0.5):
                assert message.error() is None, message.error()
                headers = dict(message.headers() or [])
                log[message.partition()].append(
                    (message.offset(), message.key(), message.value(), int(headers[SENT_AT_HEADER]))
                )
                received += 1
        assert received == expected, f"read {received} of {expected} messages"
        return dict(log)
    finally:
        consumer.close()


def test_round_trip_delivered_equals_read_back_per_partition_in_order(kafka_bootstrap: str, topic: str) -> None:
    delivered: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)

    def record(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        delivered[message.partition()].append((message.offset(), message.key(), message.value()))

    producer = ClickstreamProducer(kafka_bootstrap, topic, listener=record)
    # Bad data included: non-UTF-8 and truncated values must travel unchanged too.
    simulator = Simulator(7, events_per_second=100_000, bad_ratio=0.1)
    started_ms = time.time() * 1000
    result = run(simulator, producer, paced=False, events=20_000)
    assert (result.counts.sent, result.counts.delivered, result.counts.failed, result.pending) == (20_000, 20_000, 0, 0)

    read_back = read_topic(kafka_bootstrap, topic, 20_000)
    assert set(read_back) == set(delivered)
    assert len(read_back) == 6  # sessions spread over every partition
    for partition, messages in read_back.items():
        assert [message[:3] for message in messages] == delivered[partition]
        assert all(started_ms - 1 <= message[3] <= time.time() * 1000 for message in messages)
    # key = session_id: a session lives in exactly one partition.
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    for partition, messages in read_back.items():
        for _, key, _, _ in messages:
            partitions_of_key[key].add(partition)
    assert all(len(found) == 1 for found in partitions_of_key.values())


def test_rate_is_paced_smoothly_and_event_time_matches_send_time(kafka_bootstrap: str, topic: str) -> None:
    """Each event goes out when due: never before its event time (the send stamp and the event
    time come from one clock, so no load can fail that), and typically within a loop turn of it.

    The producer paces on a clock shifted back by its own set-up time (longer on a loaded
    machine), so every send is late by at least that shift: "within a turn" is measured from
    the smallest lag seen. A stall delays the messages it covers and the catch-up sends them
    together; the typical message and the typical 100 ms window do not move. A producer
    sending each second's events at its start fails the first check; one holding them to the
    second's end fails the other two (both tried)."""
    rate, events = 400.0, 1_200
    producer = ClickstreamProducer(kafka_bootstrap, topic)
    # Bounded by a count (see the next test): a stall near a deadline would cut events off the end.
    result = run(Simulator(8, events_per_second=rate), producer, events=events, duration=30.0)
    assert result.counts.delivered == result.counts.sent == events
    assert result.seconds >= events / rate * 0.95, f"{events:,} events in {result.seconds:.2f} s: not paced"

    messages = [message for log in read_topic(kafka_bootstrap, topic, result.counts.sent).values() for message in log]
    lags = []
    for _, _, value, sent_at in messages:
        event_time = parse_timestamp(json.loads(value)["event_timestamp"])
        assert event_time is not None
        lags.append(timedelta(milliseconds=sent_at) - timedelta(seconds=event_time.timestamp()))
    # Never early, give or take the millisecond the header is rounded to (late events are >= 2
    # minutes behind their send, so they stay clearly apart from any lag seen here).
    assert min(lags) >= timedelta(milliseconds=-50), min(lags)
    # Generous: a guard against batching by design (a second's events held to its end wait half
    # a second typically), not a timing.
    typical_delay = statistics.median(lags) - min(lags)
    assert typical_delay <= timedelta(milliseconds=400), f"typical send {typical_delay} after the earliest"
    windows = Counter(sent_at // 100 for *_, sent_at in messages)
    typical_window = statistics.median(windows.values())
    assert typical_window <= rate / 10 * 3, f"a typical 100 ms window holds {typical_window} messages"


class TurnCountingProducer(ClickstreamProducer):
    """The real producer, counting the loop's turns that sent nothing and the waits they asked for."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.empty_turns = 0
        self.waits: list[float] = []

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        super().wait(seconds)

    def send(self, batch: Batch) -> None:
        self.empty_turns += not batch.values
        super().send(batch)


def test_a_paced_producer_sleeps_between_turns(kafka_bootstrap: str, topic: str) -> None:
    """At 2,000 events/s the next event is always under a millisecond away; the producer once
    waited that long, librdkafka rounded it down to no wait, and the loop spun a whole core.
    Counted in turns, not timed: every turn that had nothing to send waits at least a whole
    millisecond, and such turns are at most one per pacing tick plus one per delivery report
    (a wait ends early only to serve reports). Load only makes a run longer, which allows more
    turns, never fewer. The spinning loop (its sub-millisecond waits brought back) fails (tried).
    Bounded by a count, not a deadline: a stall near a deadline would cut events off the end
    (CI once sent 3,504 of 4,000 in 2 s that way), while pacing can only make a run longer."""
    rate, events = 2_000.0, 4_000
    producer = TurnCountingProducer(kafka_bootstrap, topic)
    result = run(Simulator(9, events_per_second=rate), producer, events=events, duration=30.0)
    paced_seconds = events / rate
    assert result.counts.sent == events
    assert result.seconds >= paced_seconds * 0.95, f"{events:,} events in {result.seconds:.2f} s: not paced"
    assert producer.waits and len(producer.waits) == producer.empty_turns, "a turn with nothing to send did not wait"
    assert min(producer.waits) >= 0.001, f"a wait of {min(producer.waits) * 1000:.3f} ms rounds to none"
    most_turns = result.seconds / PACING_TICK_S + result.counts.delivered
    assert producer.empty_turns <= most_turns, f"{producer.empty_turns:,} idle turns in {result.seconds:.2f} s"


def producer_env(kafka_bootstrap: str, topic: str, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update({"SHOPSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap, "SHOPSTREAM_TOPIC": topic, "SHOPSTREAM_HOME": str(home)})
    return env


# Until the lead registers it as `shopstream produce`, the command runs from its own module.
PRODUCE = [sys.executable, "-m", "shopstream_cli.cli", "produce"]


def wait_for_exit(process: subprocess.Popen[bytes], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.returncode is not None, "the producer did not exit"
    return process.returncode


def summary(log_path: Path) -> str:
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("produce ")]
    assert lines, log_path.read_text()
    return lines[-1]


def test_cli_sends_exactly_n_and_the_manifest_predicts_each_message(
    kafka_bootstrap: str, topic: str, spawn_process: Spawn, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.jsonl"
    command = PRODUCE + ["--rate", "0", "--events", "3000", "--bad-ratio", "0.25", "--seed", "5"]
    process = spawn_process(
        command + ["--manifest", str(manifest), "--quiet"],
        env=producer_env(kafka_bootstrap, topic, tmp_path / "home"),
        name="produce",
    )
    assert wait_for_exit(process, 60) == 0
    assert "sent 3,000, delivered 3,000, failed 0" in summary(tmp_path / "logs" / "produce.log")

    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(entry["seq"] for entry in entries) == list(range(3000))
    values = {
        (partition, offset): value
        for partition, log in read_topic(kafka_bootstrap, topic, 3000).items()
        for offset, _, value, _ in log
    }
    kinds = Counter(entry["kind"] for entry in entries)
    assert len(kinds) == 10  # good and all nine bad kinds
    accepted_ids: set[str] = set()
    for entry in sorted(entries, key=lambda entry: entry["seq"]):
        verdict = validate_message(values[entry["partition"], entry["offset"]])
        expected = entry["expected"]
        if expected in (Outcome.ACCEPTED, Outcome.LATE):
            assert verdict.accepted and verdict.repair is None
            accepted_ids.add(entry["event_id"])
        elif expected == Outcome.DUPLICATE:
            assert verdict.accepted and entry["event_id"] in accepted_ids
        elif expected == Outcome.REPAIRED:
            assert verdict.repair is Repair.PURCHASE_NULL_QUANTITY
        else:
            assert verdict.reason == expected, entry


def messages_on(bootstrap: str, topic: str) -> int:
    # A topic created a moment ago may not have its partition leaders known yet.
    for _ in range(50):
        try:
            return sum(end_offsets(bootstrap, topic).values())
        except KafkaException as error:
            if error.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            time.sleep(0.2)
    raise AssertionError(f"no partition leaders for {topic}")


def test_sigterm_mid_run_flushes_and_prints_the_summary(
    kafka_bootstrap: str, topic: str, spawn_process: Spawn, tmp_path: Path
) -> None:
    process = spawn_process(
        PRODUCE + ["--rate", "3000"],  # no --duration/--events: forever
        env=producer_env(kafka_bootstrap, topic, tmp_path / "home"),
        name="produce",
    )
    deadline = time.monotonic() + 60
    while messages_on(kafka_bootstrap, topic) < 1_000 and time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "logs" / "produce.log").read_text()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert wait_for_exit(process, 40) == 0
    line = summary(tmp_path / "logs" / "produce.log")
    assert line.startswith("produce interrupted, flushed: sent ")
    found = re.search(r"sent ([\d,]+), delivered ([\d,]+), failed ([\d,]+), ", line)
    assert found, line
    sent, delivered, failed = (int(number.replace(",", "")) for number in found.groups())
    assert delivered == sent > 1_000
    assert failed == 0
    assert messages_on(kafka_bootstrap, topic) == sent  # everything sent is on the topic


@pytest.mark.slow
def test_benchmark_short_run(kafka_bootstrap: str) -> None:
    benchmark = measure_delivery(kafka_bootstrap, 20_000, seed=1, partitions=6)
    assert (benchmark.delivered, benchmark.failed) == (20_000, 0)
    # Rates only need to exist here: their size is the benchmark's business, not a timed test's.
    assert benchmark.generated_per_second > 0 and benchmark.delivered_per_second > 0
    assert 0 < benchmark.cpu_seconds_per_100k < 100
    assert len(benchmark.lines()) == 3


def test_cli_refuses_a_bad_topic_name_naming_the_option(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*PRODUCE, "--topic", "no spaces!", "--events", "1"],
        env=producer_env(kafka_bootstrap, "ecommerce-clickstream", tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "--topic must be 1-249 characters" in result.stderr, result.stderr[-2000:]
