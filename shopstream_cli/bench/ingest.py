"""`shopstream bench ingest`: how fast the Spark stream fills Bronze, and how late it gets there.

Four phases, each on a topic of its own and a scratch database (dropped at the end):

(a) drain: a topic pre-filled with ``--events`` (default 1,000,000) is streamed into Bronze;
    rate = messages / (first batch start -> last batch commit), from ``bronze.ingest_batches``.
(b) sustained: the producer sends ``--sustained-rate`` events/s (default 22,000; 0 = as fast
    as it can) for ``--sustained-seconds`` while the stream runs on the same cores; rate =
    messages committed in that window / window, with the consumer lag sampled each second.
    The stream sustains the rate when the lag does not grow: its mean over the last quarter
    of the window stays below its peak over the first half.
(c) latency: the producer sends a steady ``--latency-rate`` (2,000 events/s); per event,
    latency = its batch's ``committed_at`` - the producer's ``sent_at_ms`` header; p50/p95/p99.
(d) yardstick: the machine's own ceiling, measured as the issue that set the targets measured
    it (91,000 rows/s on its machine): Spark alone reads ``--yardstick-events`` from Kafka in
    batch mode, parses them with ``from_json`` to typed columns and collects them with
    ``toArrow()``, once cold and three times warm; the median warm rate is printed with the
    drain's share of it. It runs last, so its JIT warm-up cannot speed up the drain's first
    batch. Figures from machines of different speeds compare through that share.

Producers run as ``streaming.producer`` subprocesses (their own CPU, as in production); the
stream runs in this process with one SparkSession for all phases.

The box is shared, so every figure carries the 1-minute load average during its phase and
the load-independent cost: CPU-seconds per 100k events of the stream (this Python process
plus its Spark JVM) and of the PostgreSQL server (when it is the embedded one).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import psutil
import psycopg
import typer

from shopstream import database, services
from shopstream.kafka_admin import ensure_topic
from shopstream.settings import Settings, SettingsError, load_settings
from streaming.job import DEFAULT_MAX_OFFSETS_PER_TRIGGER
from streaming.migrations import migrate

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PRODUCER = "import typer; from streaming.producer import produce_command; typer.run(produce_command)"


def _producer(settings: Settings, env: dict[str, str], topic: str, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", PRODUCER, "--topic", topic, "--quiet", *options],
        env={**env, "SHOPSTREAM_TOPIC": topic},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_producer(process: subprocess.Popen[bytes], what: str) -> None:
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{what} producer failed (exit {process.returncode}): {stderr.decode()[-2000:]}")


def _fetch_one(url: str, query: str, params: tuple = ()) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()


class _CpuMeter:
    """CPU-seconds of the stream (this process + its JVM) and of the embedded PostgreSQL, and the load."""

    def __init__(self, settings: Settings) -> None:
        self._me = psutil.Process()
        postgres_pid = services.EmbeddedPostgres(settings).pid() if services.postgres_is_embedded(settings) else None
        self._postgres = psutil.Process(postgres_pid) if postgres_pid else None
        self._start = self._read()
        self._load: list[float] = []

    @staticmethod
    def _seconds(members: list[psutil.Process]) -> float:
        total = 0.0
        for member in members:
            try:
                times = member.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def _read(self) -> tuple[float, float]:
        # This process and its JVM only: the producers are children of this process too.
        jvms = [child for child in self._me.children(recursive=True) if "java" in child.name()]
        stream = self._seconds([self._me, *jvms])
        if self._postgres is None:
            return stream, float("nan")
        # Backends that already exited (the sink's closes when a phase ends) are in the
        # postmaster's children_* times once reaped; live ones are read directly. A backend
        # reaped between the two reads would be in neither (read right after a drain's
        # connections closed, that lost nearly all of the drain's PostgreSQL time), so the
        # two are read again until the set of backends did not change around them.
        for _ in range(100):
            try:
                before = {child.pid for child in self._postgres.children(recursive=True)}
                reaped = self._postgres.cpu_times()
                live = self._seconds(self._postgres.children(recursive=True))
                after = {child.pid for child in self._postgres.children(recursive=True)}
            except psutil.Error:
                return stream, float("nan")
            if after == before:
                break
            time.sleep(0.01)
        return stream, reaped.user + reaped.system + reaped.children_user + reaped.children_system + live

    def sample_load(self) -> None:
        self._load.append(os.getloadavg()[0])

    def text(self, events: int) -> str:
        self.sample_load()
        stream, postgres = (now - then for now, then in zip(self._read(), self._start, strict=True))
        per = 100_000 / max(events, 1)
        load = sum(self._load) / len(self._load)
        postgres_text = "" if postgres != postgres else f", PostgreSQL {postgres * per:.2f}"
        return f"[load {load:.1f}; CPU-s per 100k events: stream {stream * per:.2f}{postgres_text}]"


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def ingest_benchmark_command(
    events: Annotated[
        int, typer.Option("--events", min=1_000, help="Messages pre-filled for the drain phase (a).")
    ] = 1_000_000,
    sustained_seconds: Annotated[
        float, typer.Option("--sustained-seconds", min=5, help="Length of the sustained phase (b).")
    ] = 60.0,
    sustained_rate: Annotated[
        float, typer.Option("--sustained-rate", min=0, help="Producer events/s in phase (b); 0 = flat out.")
    ] = 22_000,
    latency_rate: Annotated[float, typer.Option("--latency-rate", min=1, help="Steady events/s in phase (c).")] = 2_000,
    latency_seconds: Annotated[float, typer.Option("--latency-seconds", min=5, help="Length of phase (c).")] = 30.0,
    max_offsets_per_trigger: Annotated[
        int, typer.Option("--max-offsets-per-trigger", min=1, help="Most messages one micro-batch reads.")
    ] = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    yardstick_events: Annotated[
        int, typer.Option("--yardstick-events", min=1_000, help="Messages Spark alone reads in phase (d).")
    ] = 300_000,
    keep_database: Annotated[bool, typer.Option("--keep-database", help="Keep the scratch database.")] = False,
) -> None:
    """Measure Kafka -> Bronze: drain, sustained rate beside the producer, latency; then Spark alone as a yardstick."""
    from streaming.job import run_stream
    from streaming.spark_session import build_spark_session, configure_logging

    try:
        settings = load_settings()
    except SettingsError as error:
        raise typer.BadParameter(str(error)) from None
    configure_logging(dataclasses.replace(settings, log_level="WARNING"))
    database_url = services.database_urls(settings)[0]
    kafka_bootstrap = services.kafka_bootstrap(settings)
    run_id = f"{int(time.time())}"
    bench_database = f"shopstream_bench_ingest_{run_id}"
    database.ensure_database(database_url, bench_database)
    bench_url = database.with_database(database_url, bench_database)
    migrate(bench_url)
    env = {
        **os.environ,
        "SHOPSTREAM_DATABASE_URL": bench_url,
        "SHOPSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
    }
    spark = build_spark_session(settings)
    checkpoints = Path(tempfile.mkdtemp(prefix="shopstream-bench-checkpoints-"))
    figures: dict[str, str] = {}
    try:

        def stream(topic: str, stop: threading.Event | None = None, until_idle: float = 3.0):
            # Checkpoints in a scratch folder; jars and the session come from the real home.
            bench_settings = dataclasses.replace(settings, topic=topic, home=checkpoints / topic)
            return run_stream(
                spark, bench_settings, database_url=bench_url, kafka_bootstrap=kafka_bootstrap,
                until_idle=until_idle, max_offsets_per_trigger=max_offsets_per_trigger, stop=stop,
            )  # fmt: skip

        # (a) drain
        topic = f"bench-drain-{run_id}"
        ensure_topic(kafka_bootstrap, topic, settings.topic_partitions)
        _echo(f"(a) pre-filling {topic} with {events:,} events ...")
        _wait_producer(_producer(settings, env, topic, "--rate", "0", "--events", str(events)), "pre-fill")
        _echo(f"(a) draining into Bronze ... (load {os.getloadavg()[0]:.1f})")
        meter = _CpuMeter(settings)
        summary = stream(topic)
        consumed, seconds, first_batch, first_messages = _fetch_one(
            bench_url,
            "select sum(messages_consumed), extract(epoch from max(committed_at) - min(started_at)),"
            " extract(epoch from min(committed_at) - min(started_at)),"
            " (array_agg(messages_consumed order by batch_id))[1]"
            " from bronze.ingest_batches where kafka_topic = %s",
            (topic,),
        )
        # The first batch runs on a cold JVM (class loading, code generation, JIT): the rate
        # after it is what a longer backlog drains at.
        after_first = f"{(consumed - first_messages) / (seconds - first_batch):,.0f}" if seconds > first_batch else "-"
        drain_rate = consumed / float(seconds)
        figures["drain"] = (
            f"{consumed:,} events in {seconds:.1f} s = {consumed / seconds:,.0f} events/s "
            f"({summary.batches} batches; first batch {first_batch:.1f} s, {after_first} events/s after it) "
            f"{meter.text(consumed)}"
        )
        _echo(f"(a) drain: {figures['drain']}")

        # (b) sustained, producer as fast as it goes
        topic = f"bench-sustained-{run_id}"
        ensure_topic(kafka_bootstrap, topic, settings.topic_partitions)
        pace = "full speed" if sustained_rate == 0 else f"{sustained_rate:,.0f} events/s"
        _echo(f"(b) producer at {pace} for {sustained_seconds:.0f} s while the stream runs ...")
        stop = threading.Event()
        lag_samples: list[tuple[float, int]] = []
        meter = _CpuMeter(settings)
        window_started = time.time()
        producer = _producer(settings, env, topic, "--rate", str(sustained_rate), "--duration", str(sustained_seconds))
        sampler = threading.Thread(
            target=_sample_lag,
            # At least 16 samples however short the window, so the verdict has quarters to compare.
            args=(kafka_bootstrap, bench_url, topic, producer, lag_samples, window_started, meter),
            kwargs={"interval": min(1.0, sustained_seconds / 16)},
            daemon=True,
        )
        sampler.start()
        result: dict[str, object] = {}
        runner = threading.Thread(target=lambda: result.update(summary=stream(topic, stop, until_idle=5.0)))
        runner.start()
        _wait_producer(producer, "sustained")
        window_ended = time.time()
        sampler.join()
        runner.join()
        (in_window,) = _fetch_one(
            bench_url,
            "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches"
            " where kafka_topic = %s and committed_at <= to_timestamp(%s)",
            (topic, window_ended),
        )
        (produced,) = _fetch_one(
            bench_url, "select sum(messages_consumed) from bronze.ingest_batches where kafka_topic = %s", (topic,)
        )
        window = window_ended - window_started
        quarters = [lag for _, lag in lag_samples[:: max(1, len(lag_samples) // 4)]]
        figures["sustained"] = (
            f"{in_window:,} of {produced:,} produced events committed during the {window:.0f} s window = "
            f"{in_window / window:,.0f} events/s (producer {produced / window:,.0f} events/s); "
            f"lag through the window: {', '.join(f'{lag:,}' for lag in quarters)} "
            f"({_lag_verdict(lag_samples)}) {meter.text(produced)}"
        )
        _echo(f"(b) sustained: {figures['sustained']}")

        # (c) latency at a steady rate
        topic = f"bench-latency-{run_id}"
        ensure_topic(kafka_bootstrap, topic, settings.topic_partitions)
        _echo(f"(c) producer at {latency_rate:,.0f} events/s for {latency_seconds:.0f} s ...")
        stop = threading.Event()
        runner = threading.Thread(target=lambda: result.update(summary=stream(topic, stop, until_idle=5.0)))
        runner.start()
        time.sleep(3)  # the query is up before the first event is sent
        meter = _CpuMeter(settings)
        producer = _producer(settings, env, topic, "--rate", str(latency_rate), "--duration", str(latency_seconds))
        _wait_producer(producer, "latency")
        runner.join()
        count, p50, p95, p99, worst = _fetch_one(
            bench_url,
            "select count(*),"
            " percentile_cont(0.50) within group (order by seconds),"
            " percentile_cont(0.95) within group (order by seconds),"
            " percentile_cont(0.99) within group (order by seconds), max(seconds)"
            " from (select extract(epoch from b.committed_at - e.sent_at) as seconds"
            "  from bronze.clickstream_events e join bronze.ingest_batches b using (batch_id)"
            "  where e.kafka_topic = %s) latencies",
            (topic,),
        )
        figures["latency"] = (
            f"{count:,} events at {latency_rate:,.0f}/s: p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s, "
            f"max {worst:.2f} s {meter.text(count)}"
        )
        _echo(f"(c) latency: {figures['latency']}")

        # (d) yardstick
        topic = f"bench-yardstick-{run_id}"
        ensure_topic(kafka_bootstrap, topic, settings.topic_partitions)
        _wait_producer(
            _producer(settings, env, topic, "--rate", "0", "--events", str(yardstick_events)), "yardstick pre-fill"
        )
        _echo(f"(d) Spark alone: Kafka batch read, from_json, toArrow of {yardstick_events:,} events ...")
        rates = spark_alone_rates(spark, kafka_bootstrap, topic, runs=4)
        warm = statistics.median(rates[1:])
        figures["yardstick"] = (
            f"Spark alone (Kafka batch read, from_json to typed columns, toArrow) on {yardstick_events:,} events: "
            f"{warm:,.0f} rows/s warm (median of {', '.join(f'{rate:,.0f}' for rate in rates[1:])}; "
            f"cold {rates[0]:,.0f}); the drain ran at {drain_rate / warm:.0%} of it"
        )
        _echo(f"(d) yardstick: {figures['yardstick']}")
    finally:
        spark.stop()
        if not keep_database:
            database.drop_database(database_url, bench_database)
    typer.echo(
        f"Kafka -> Bronze benchmark ({os.cpu_count()} cores, Spark {spark.version}, master {settings.spark_master})"
    )
    for name, text in figures.items():
        typer.echo(f"  {name:9} {text}")


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
    meter: _CpuMeter,
    *,
    interval: float = 1.0,
) -> None:
    """Messages in Kafka not yet in Bronze, every ``interval`` seconds while the producer runs.

    One consumer and one connection for the whole phase: a new one per sample would add its
    own load to the broker and the server being measured.
    """
    from confluent_kafka import KafkaException

    from shopstream.kafka_admin import offset_reader, read_watermarks
    from streaming.ledger import committed_offsets, messages_behind

    consumer = offset_reader(kafka_bootstrap)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while producer.poll() is None:
                try:
                    marks = read_watermarks(consumer, topic, timeout=2)
                except KafkaException as error:
                    # A topic created a moment ago may have no partition leader yet
                    # (NOT_LEADER_FOR_PARTITION): skip this sample, not the whole watch.
                    _echo(f"(b) lag sample skipped: {error}")
                    marks = {}
                if not marks:  # nor may this consumer see the topic yet; a lag of 0 would be a lie
                    time.sleep(0.2)
                    continue
                lag = sum(messages_behind(marks, committed_offsets(conn, topic)).values())
                samples.append((time.time() - started, lag))
                meter.sample_load()
                time.sleep(interval)
    finally:
        consumer.close()
