"""The phases of `shopstream bench ingest` (:mod:`shopstream_cli.bench.ingest` runs them)."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import typer

from shopstream import database
from shopstream_cli.bench.measure import CpuMeter, percentile
from streaming import ledger

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from shopstream_cli.bench.ingest import BenchRun


@dataclass(frozen=True)
class SteadyPhase:
    """A steady producer rate for a while: its letter and name in the report."""

    letter: str
    name: str
    rate: float
    seconds: float


def echo(message: str) -> None:
    typer.echo(message, err=True)


def wait_producer(process: subprocess.Popen[bytes], what: str) -> None:
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{what} producer failed (exit {process.returncode}): {stderr.decode()[-2000:]}")


def drain(run: BenchRun, events: int) -> tuple[str, float]:
    """(a) A pre-filled topic streamed into Bronze: the figure, and the rate the yardstick compares."""
    topic = run.topic("drain")
    echo(f"(a) pre-filling {topic} with {events:,} events ...")
    wait_producer(run.producer(topic, "--rate", "0", "--events", str(events)), "pre-fill")
    echo(f"(a) draining into Bronze ... (load {os.getloadavg()[0]:.1f})")
    meter = run.meter()
    batches = run.stream(topic)
    meter.freeze()
    with database.connect(run.bench_url) as conn:
        drain = ledger.drain_timing(conn, topic)
    consumed, seconds, first_batch, first_messages = (
        drain.messages,
        drain.seconds,
        drain.first_batch_seconds,
        drain.first_batch_messages,
    )
    # The first batch runs on a cold JVM (class loading, code generation, JIT): the rate
    # after it is what a longer backlog drains at.
    after_first = f"{(consumed - first_messages) / (seconds - first_batch):,.0f}" if seconds > first_batch else "-"
    figure = (
        f"{consumed:,} events in {seconds:.1f} s = {consumed / seconds:,.0f} events/s "
        f"({batches} batches; first batch {first_batch:.1f} s, {after_first} events/s after it) "
        f"{meter.text(consumed)}"
    )
    echo(f"(a) drain: {figure}")
    return figure, consumed / float(seconds)


def sustained(run: BenchRun, seconds: float, rate: float) -> str:
    """(b) The producer at ``rate`` (0: flat out) while the stream runs on the same cores, the lag watched."""
    topic = run.topic("sustained")
    pace = "full speed" if rate == 0 else f"{rate:,.0f} events/s"
    echo(f"(b) producer at {pace} for {seconds:.0f} s while the stream runs ...")
    lag_samples: list[tuple[float, int]] = []
    meter = run.meter()
    window_started = time.time()
    producer = run.producer(topic, "--rate", str(rate), "--duration", str(seconds))
    sampler = threading.Thread(
        target=_sample_lag,
        # At least 16 samples however short the window, so the verdict has quarters to compare.
        args=(run.kafka_bootstrap, run.bench_url, topic, producer, lag_samples, window_started, meter),
        kwargs={"interval": min(1.0, seconds / 16)},
        daemon=True,
    )
    sampler.start()
    producer_done = threading.Event()
    runner = run.stream_in_background(topic, producer_done)
    wait_producer(producer, "sustained")
    meter.freeze()
    producer_done.set()
    window_ended = time.time()
    sampler.join()
    runner.join()
    with database.connect(run.bench_url) as conn:
        in_window = ledger.messages_consumed(conn, topic, committed_by=window_ended)
        produced = ledger.messages_consumed(conn, topic)
    window = window_ended - window_started
    quarters = [lag for _, lag in lag_samples[:: max(1, len(lag_samples) // 4)]]
    figure = (
        f"{in_window:,} of {produced:,} produced events committed during the {window:.0f} s window = "
        f"{in_window / window:,.0f} events/s (producer {produced / window:,.0f} events/s); "
        f"lag through the window: {', '.join(f'{lag:,}' for lag in quarters)} "
        f"({_lag_verdict(lag_samples)}) {meter.text(produced)}"
    )
    echo(f"(b) sustained: {figure}")
    return figure


def steady(run: BenchRun, phases: list[SteadyPhase]) -> list[str]:
    """(c) and (e): steady rates one after another on one topic and one stream; per event, its batch's
    commit time minus the producer's send time, and the stream's CPU while each producer ran."""
    topic = run.topic("steady")
    producer_done = threading.Event()
    runner = run.stream_in_background(topic, producer_done)
    time.sleep(3)  # the query is up before the first event is sent
    windows: list[tuple[SteadyPhase, float, float, CpuMeter]] = []
    for phase in phases:
        echo(f"({phase.letter}) producer at {phase.rate:,.0f} events/s for {phase.seconds:.0f} s ...")
        meter = run.meter()
        began = time.time()
        wait_producer(run.producer(topic, "--rate", str(phase.rate), "--duration", str(phase.seconds)), phase.name)
        meter.freeze()
        windows.append((phase, began, time.time(), meter))
    producer_done.set()
    runner.join()
    with database.connect(run.bench_url) as conn:
        events = ledger.events_with_commit_time(conn, topic, windows[0][1] - 1)
    figures = []
    for phase, began, ended, meter in windows:
        latencies = [float(committed - sent) for _, _, sent, committed in events if began - 1 <= float(sent) < ended]
        if not latencies:
            raise RuntimeError(f"({phase.letter}) {phase.name}: no event of {topic} reached Bronze with its send time")
        p50, p95, p99 = (percentile(latencies, fraction) for fraction in (0.50, 0.95, 0.99))
        figure = (
            f"{len(latencies):,} events at {phase.rate:,.0f}/s: p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s, "
            f"max {max(latencies):.2f} s {meter.text(len(latencies))}"
        )
        echo(f"({phase.letter}) {phase.name}: {figure}")
        figures.append(figure)
    return figures


def yardstick(run: BenchRun, events: int, drain_rate: float) -> str:
    """(d) Spark alone on this machine, and the drain's share of it."""
    topic = run.topic("yardstick")
    wait_producer(run.producer(topic, "--rate", "0", "--events", str(events)), "yardstick pre-fill")
    echo(f"(d) Spark alone: Kafka batch read, from_json, toArrow of {events:,} events ...")
    rates = spark_alone_rates(run.spark, run.kafka_bootstrap, topic, runs=4)
    warm = statistics.median(rates[1:])
    figure = (
        f"Spark alone (Kafka batch read, from_json to typed columns, toArrow) on {events:,} events: "
        f"{warm:,.0f} rows/s warm (median of {', '.join(f'{rate:,.0f}' for rate in rates[1:])}; "
        f"cold {rates[0]:,.0f}); the drain ran at {drain_rate / warm:.0%} of it"
    )
    echo(f"(d) yardstick: {figure}")
    return figure


def spark_alone_rates(spark: SparkSession, kafka_bootstrap: str, topic: str, *, runs: int) -> list[float]:
    """Rows/s of Spark reading the whole topic in batch mode, ``from_json`` to the event schema, ``toArrow()``."""
    from pyspark.sql import functions as F

    from streaming.events import spark_schema

    messages = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
    events = messages.select(F.from_json(F.col("value").cast("string"), spark_schema()).alias("event")).select(
        "event.*"
    )
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = events.toArrow().num_rows
        rates.append(rows / (time.perf_counter() - started))
    return rates


def _lag_verdict(samples: list[tuple[float, int]]) -> str:
    """Steady when the lag over the last quarter of the window stays below the first half's peak.

    The lag saws up and down by a micro-batch as the stream catches up; a stream that keeps
    up stays within the range it had early on, one that does not climbs above it.
    """
    lags = [lag for _, lag in samples]
    if len(lags) < 4:
        return "too few lag samples"
    quarter = len(lags) // 4
    early_peak, late_mean = max(lags[: len(lags) // 2]), sum(lags[-quarter:]) / quarter
    verdict = "steady" if late_mean <= early_peak else "GROWING"
    return f"lag {verdict}: last quarter's mean {late_mean:,.0f}, first half's peak {early_peak:,}"


def _sample_lag(
    kafka_bootstrap: str,
    database_url: str,
    topic: str,
    producer: subprocess.Popen[bytes],
    samples: list[tuple[float, int]],
    started: float,
    meter: CpuMeter,
    *,
    interval: float = 1.0,
) -> None:
    """Messages in Kafka not yet in Bronze, every ``interval`` seconds while the producer runs.

    One consumer and one connection for the whole phase: a new one per sample would add its
    own load to the broker and the server being measured.
    """
    from confluent_kafka import KafkaException

    from shopstream.kafka_admin import offset_reader, read_watermarks

    consumer = offset_reader(kafka_bootstrap)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while producer.poll() is None:
                try:
                    marks = read_watermarks(consumer, topic, timeout=2)
                except KafkaException as error:
                    # A topic created a moment ago may have no partition leader yet
                    # (NOT_LEADER_FOR_PARTITION): skip this sample, not the whole watch.
                    echo(f"(b) lag sample skipped: {error}")
                    marks = {}
                if not marks:  # nor may this consumer see the topic yet; a lag of 0 would be a lie
                    time.sleep(0.2)
                    continue
                lag = sum(ledger.messages_behind(marks, ledger.committed_offsets(conn, topic)).values())
                samples.append((time.time() - started, lag))
                meter.sample_load()
                time.sleep(interval)
    finally:
        consumer.close()
