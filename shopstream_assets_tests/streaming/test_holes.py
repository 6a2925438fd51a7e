"""Holes are refused, not written over: the ledger records the offsets Spark planned, each batch is
checked against Bronze's position, transactions are read committed, compacted topics are refused.
Against the real broker, Spark and PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from shopstream.kafka_admin import TopicRefusedError, ensure_topic, watermarks
from shopstream.settings import load_settings
from shopstream_assets_tests.streaming.conftest import (
    assert_every_batch_accounted,
    delete_batch_from_bronze,
    expected_bronze,
    fetch,
    produce_messages,
    produce_simulated,
)
from shopstream_assets_tests.waiting import wait_until
from streaming.batch_writer import StreamSummary
from streaming.events import SENT_AT_HEADER, encode_event
from streaming.job import run_stream
from streaming.job_errors import StreamJobError
from streaming.ledger import committed_offsets
from streaming.simulator import Simulator


def _bronze_event_ids(database_url: str) -> list[str]:
    return [row[0] for row in fetch(database_url, "select event_id from bronze.clickstream_events")]


def _bronze_offsets(database_url: str, topic: str) -> dict[int, int]:
    with psycopg.connect(database_url) as conn:
        return committed_offsets(conn, topic)


def _high_watermarks(kafka_bootstrap: str, topic: str) -> dict[int, int]:
    return {partition: high for partition, (_, high) in watermarks(kafka_bootstrap, topic).items() if high}


def _events(seed: int, count: int, prefix: str) -> list[bytes]:
    """``count`` valid events with ids of their own (``prefix``), as the simulator shapes them."""
    events = []
    for index, value in enumerate(Simulator(seed=seed, bad_ratio=0.0).take(count).values):
        event = json.loads(value)
        event["event_id"] = f"{prefix}_{index:06d}"
        events.append(encode_event(event))
    return events


def _produce_in_transaction(kafka_bootstrap: str, topic: str, values: list[bytes], *, commit: bool) -> None:
    """One transaction over every partition (keys spread it), committed or aborted."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic}-{commit}"})
    producer.init_transactions(60)
    producer.begin_transaction()
    headers = [(SENT_AT_HEADER, b"1767450225500")]
    for index, value in enumerate(values):
        producer.produce(topic, value=value, key=str(index).encode(), headers=headers)
    producer.flush(60)  # every record written before the transaction ends, so an abort drops them all
    if commit:
        producer.commit_transaction(60)
    else:
        producer.abort_transaction(60)


def _run_until_idle(spark, settings, **options: object) -> StreamSummary:
    """run_stream until idle, stopped (and failed) if it never sees itself idle: Bronze's offsets
    short of the broker's end (a ledger ending at the last message, before a marker) looked like lag forever."""
    give_up = threading.Event()
    timer = threading.Timer(120, give_up.set)
    timer.start()
    try:
        summary = run_stream(spark, settings, stop=give_up, **options)
    finally:
        timer.cancel()
    assert not give_up.is_set(), "the stream did not exit when idle"
    return summary


def test_only_committed_transactions_reach_bronze_and_the_ledger_ends_past_their_markers(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """Plain events, a committed transaction, an aborted one: only committed events land, each once,
    and the ledger ends at the offsets Spark planned, past the transactions' markers. Ending at the
    last message read instead left Bronze behind the checkpoint, and the next start was refused as
    a database reset; reading uncommitted let the aborted events in."""
    settings = load_settings(shopstream_env)
    plain = _events(51, 300, "PLAIN")
    committed = _events(52, 200, "COMMITTED")
    aborted = _events(53, 200, "ABORTED")
    produce_messages(kafka_bootstrap, topic, plain, keys=[str(i).encode() for i in range(len(plain))])
    _produce_in_transaction(kafka_bootstrap, topic, committed, commit=True)
    _produce_in_transaction(kafka_bootstrap, topic, aborted, commit=False)
    options = {"database_url": database_url, "kafka_bootstrap": kafka_bootstrap, "until_idle": 1.5}

    first = _run_until_idle(spark, settings, max_offsets_per_trigger=150, **options)
    assert first.batches >= 3
    expected = {json.loads(value)["event_id"] for value in plain + committed}
    assert sorted(_bronze_event_ids(database_url)) == sorted(expected)
    assert assert_every_batch_accounted(database_url) == (500, 500, 0, 0)
    # The topic ends with the abort's markers: Bronze's position is the broker's end, not the last message.
    assert _bronze_offsets(database_url, topic) == _high_watermarks(kafka_bootstrap, topic)

    more_committed = _events(54, 100, "LATER")
    _produce_in_transaction(kafka_bootstrap, topic, more_committed, commit=True)
    second = _run_until_idle(spark, settings, max_offsets_per_trigger=150, **options)  # not refused as a reset
    assert second.messages == 100
    expected |= {json.loads(value)["event_id"] for value in more_committed}
    assert sorted(_bronze_event_ids(database_url)) == sorted(expected)
    assert assert_every_batch_accounted(database_url) == (600, 600, 0, 0)
    assert _bronze_offsets(database_url, topic) == _high_watermarks(kafka_bootstrap, topic)
    # Each ledger row starts where the one before it ended, partition by partition: no gap, no overlap.
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select start_offsets, end_offsets from bronze.ingest_batches where kafka_topic = %s order by batch_id",
            (topic,),
        ).fetchall()
    position: dict[str, int] = {}
    for start, end in rows:
        for partition, offset in start.items():
            assert offset == position.get(partition, offset)
        position.update(end)
    assert {int(p): o for p, o in position.items()} == _high_watermarks(kafka_bootstrap, topic)


def _undo_newest_batch(database_url: str, topic: str) -> dict[int, tuple[int, int]]:
    """As PostgreSQL losing its newest commit leaves Bronze: the newest batch's rows, rejects and ledger
    row gone, the positions back at the batch before. Returns that batch's {partition: (start, end)}."""
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('shopstream.bronze')::bigint)")
        newest, start, end = conn.execute(
            "select batch_id, start_offsets, end_offsets from bronze.ingest_batches where kafka_topic = %s"
            " order by batch_id desc limit 1",
            (topic,),
        ).fetchone()
        delete_batch_from_bronze(conn, topic, newest)
    return {int(partition): (start[partition], end[partition]) for partition in end}


def test_a_batch_lost_from_bronze_while_the_stream_runs_stops_it_and_the_restart_fills_the_hole(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """The newest batch vanishes from Bronze (as a failover to an asynchronous replica loses it) while
    the stream runs; the next batch starts where the lost one ended. Writing it would move Bronze past
    messages it no longer holds: the stream stops, naming the topic, partitions and missing offsets,
    and `--restart-from-bronze` reads them from Kafka, so Bronze ends with every event exactly once."""
    settings = load_settings(shopstream_env)
    first = produce_simulated(kafka_bootstrap, topic, 600, seed=61, bad_ratio=0.2)
    stop = threading.Event()
    outcome: list[BaseException | object] = []

    def stream() -> None:
        try:
            outcome.append(
                run_stream(
                    spark,
                    settings,
                    database_url=database_url,
                    kafka_bootstrap=kafka_bootstrap,
                    max_offsets_per_trigger=250,
                    stop=stop,
                )
            )
        except BaseException as error:  # noqa: BLE001 -- handed to the test below
            outcome.append(error)

    runner = threading.Thread(target=stream, name="test-stream")
    runner.start()
    try:
        wait_until(
            lambda: (
                fetch(database_url, "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches") == [(600,)]
            ),
            what="the stream writing the first 600 messages",
            timeout=180,
        )
        assert fetch(database_url, "select count(*) >= 2 from bronze.ingest_batches") == [(True,)]
        lost = _undo_newest_batch(database_url, topic)
        second = produce_simulated(kafka_bootstrap, topic, 300, seed=62, bad_ratio=0.2)
        runner.join(180)
        assert not runner.is_alive(), "the stream went on past the hole"
    finally:
        stop.set()
        runner.join(60)

    (error,) = outcome
    assert isinstance(error, StreamJobError), error
    named = "; ".join(
        f"partition {partition} offsets {start}-{end - 1}" for partition, (start, end) in sorted(lost.items())
    )
    message = str(error)
    assert f"Bronze lacks messages of topic {topic!r} before Spark batch" in message
    assert ": " + named.replace("; ", ", ") + " (" in message
    assert "--restart-from-bronze" in message
    # The refused batch wrote nothing: Bronze is as the loss left it.
    assert fetch(database_url, "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches") == [
        (600 - sum(end - start for start, end in lost.values()),)
    ]

    run_stream(
        spark,
        settings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        until_idle=1.5,
        restart_from_bronze=True,
    )
    event_ids, rejects, duplicates = expected_bronze(first.values + second.values)
    assert sorted(_bronze_event_ids(database_url)) == sorted(event_ids)
    assert assert_every_batch_accounted(database_url) == (900, len(event_ids), rejects.total(), duplicates)
    assert fetch(database_url, "select count(*) from bronze.clickstream_rejects") == [(rejects.total(),)]
    assert _bronze_offsets(database_url, topic) == _high_watermarks(kafka_bootstrap, topic)


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_a_compacted_topic_is_refused(
    policy: str, spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """Compaction keeps the newest message per key (session_id): one event per session. The topic is
    refused by name, with its policy and the setting to change, before anything is read."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([resource])[resource].result(30)
    refused = rf"topic '{topic}' .* has cleanup\.policy={policy}: .* Set cleanup\.policy=delete .* SHOPSTREAM_TOPIC"
    wait_until(  # the broker applies the new policy asynchronously
        lambda: _refused(kafka_bootstrap, topic), what=f"the broker reporting cleanup.policy={policy}"
    )
    with pytest.raises(TopicRefusedError, match=refused):
        ensure_topic(kafka_bootstrap, topic, 6)
    settings = load_settings(shopstream_env)
    with pytest.raises(StreamJobError, match=refused):
        run_stream(spark, settings, database_url=database_url, kafka_bootstrap=kafka_bootstrap, until_idle=1.5)
    assert fetch(database_url, "select count(*) from bronze.ingest_batches") == [(0,)]
    produced = subprocess.run(
        [sys.executable, "-m", "shopstream_cli.cli", "produce", "--events", "1", "--topic", topic],
        env=shopstream_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert produced.returncode == 2, produced.stdout + produced.stderr
    assert re.search(rf"error: {refused}", produced.stderr) and "could not reach Kafka" not in produced.stderr


def _refused(kafka_bootstrap: str, topic: str) -> bool:
    try:
        ensure_topic(kafka_bootstrap, topic, 6)
    except TopicRefusedError:
        return True
    return False
