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
    it (its figure is in the performance notes): Spark alone reads ``--yardstick-events`` from Kafka in
    batch mode, parses them with ``from_json`` to typed columns and collects them with
    ``toArrow()``, once cold and three times warm; the median warm rate is printed with the
    drain's share of it. It runs last, so its JIT warm-up cannot speed up the drain's first
    batch. Figures from machines of different speeds compare through that share.

Producers run as ``streaming.produce_command`` subprocesses (their own CPU, as in production); the
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

import psycopg
import typer

from shopstream import database, services
from shopstream.command import finite
from shopstream.kafka_admin import ensure_topic
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.settings import Settings, SettingsError, load_settings
from shopstream_cli.bench.measure import CpuMeter
from streaming import ledger
from streaming.job import DEFAULT_MAX_OFFSETS_PER_TRIGGER
from streaming.migrations import migrate

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PRODUCER = "import typer; from streaming.produce_command import produce_command; typer.run(produce_command)"


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


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def ingest_benchmark_command(
    events: Annotated[
        int, typer.Option("--events", min=1_000, help="Messages pre-filled for the drain phase (a).")
    ] = 1_000_000,
    sustained_seconds: Annotated[
        float, typer.Option("--sustained-seconds", min=5, callback=finite, help="Length of the sustained phase (b).")
    ] = 60.0,
    sustained_rate: Annotated[
        float,
        typer.Option("--sustained-rate", min=0, callback=finite, help="Producer events/s in phase (b); 0 = flat out."),
    ] = 22_000,
    latency_rate: Annotated[
        float, typer.Option("--latency-rate", min=1, callback=finite, help="Steady events/s in phase (c).")
    ] = 2_000,
    latency_seconds: Annotated[
        float, typer.Option("--latency-seconds", min=5, callback=finite, help="Length of phase (c).")
    ] = 30.0,
    max_offsets_per_trigger: Annotated[
        int, typer.Option("--max-offsets-per-trigger", min=1, help="Most messages one micro-batch reads.")
    ] = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    yardstick_events: Annotated[
        int, typer.Option("--yardstick-events", min=1_000, help="Messages Spark alone reads in phase (d).")
    ] = 300_000,
    keep_database: Annotated[bool, typer.Option("--keep-database", help="Keep the scratch database.")] = False,
) -> None:
    """Measure Kafka -> Bronze: drain, sustained rate beside the producer, latency; then Spark alone as a yardstick."""
    from streaming.spark_session import configure_logging

    try:
        settings = load_settings()
    except SettingsError as error:
        raise typer.BadParameter(str(error)) from None
    configure_logging(dataclasses.replace(settings, log_level="WARNING"))
    # A scratch database of its own: creating one takes the admin, not the pipeline's owner role.
    database_url = services.admin_database_url(settings)
    run = _prepare_run(settings, database_url, services.kafka_bootstrap(settings), max_offsets_per_trigger)
    figures: dict[str, str] = {}
    try:
        figures["drain"], drain_rate = _drain(run, events)
        figures["sustained"] = _sustained(run, sustained_seconds, sustained_rate)
        figures["latency"] = _latency(run, latency_seconds, latency_rate)
        figures["yardstick"] = _yardstick(run, yardstick_events, drain_rate)
    finally:
        run.spark.stop()
        if not keep_database:
            database.drop_database(database_url, run.bench_database)
    _report(run, figures)


@dataclasses.dataclass(frozen=True)
class _BenchRun:
    """What every phase shares: the scratch database, the servers, one SparkSession, the run's id."""

    settings: Settings
    run_id: str
    bench_database: str
    bench_url: str
    kafka_bootstrap: str
    env: dict[str, str]
    spark: SparkSession
    checkpoints: Path
    max_offsets_per_trigger: int

    def topic(self, phase: str) -> str:
        """A fresh topic for ``phase``: no phase sees another's messages."""
        topic = f"bench-{phase}-{self.run_id}"
        ensure_topic(self.kafka_bootstrap, topic, self.settings.topic_partitions)
        return topic

    def meter(self) -> CpuMeter:
        """A CPU meter from now on; PostgreSQL's share only when the server is the embedded one."""
        postgres_pid = EmbeddedPostgres(self.settings).pid() if services.postgres_is_embedded(self.settings) else None
        return CpuMeter(postgres_pid)

    def producer(self, topic: str, *options: str) -> subprocess.Popen[bytes]:
        return _producer(self.settings, self.env, topic, *options)

    def stream(self, topic: str, until_idle: float = 3.0) -> int:
        """Stream ``topic`` into the scratch Bronze until ``until_idle`` seconds pass without data;
        return the number of micro-batches."""
        from streaming.job import run_stream

        # Checkpoints in a scratch folder; jars and the session come from the real home.
        bench_settings = dataclasses.replace(self.settings, topic=topic, home=self.checkpoints / topic)
        return run_stream(
            self.spark, bench_settings, database_url=self.bench_url, kafka_bootstrap=self.kafka_bootstrap,
            until_idle=until_idle, max_offsets_per_trigger=self.max_offsets_per_trigger,
        ).batches  # fmt: skip

    def stream_in_background(self, topic: str, producer_done: threading.Event) -> threading.Thread:
        """A started thread streaming ``topic`` while a producer fills it, until it has been idle a while
        after ``producer_done`` is set.

        On a loaded machine the producer can take longer to send its first event than the stream
        waits idle; the query then ends early and starts again from its checkpoint, so no event
        is left behind. Only a run that began after the producer was done is the last one.
        """

        def stream_until_the_producer_is_done() -> None:
            while True:
                producer_was_done = producer_done.is_set()
                self.stream(topic, until_idle=5.0)
                if producer_was_done:
                    return

        runner = threading.Thread(target=stream_until_the_producer_is_done)
        runner.start()
        return runner


def _prepare_run(
    settings: Settings, database_url: str, kafka_bootstrap: str, max_offsets_per_trigger: int
) -> _BenchRun:
    """A migrated scratch database beside the real one, the producers' environment, the SparkSession."""
    from streaming.spark_session import build_spark_session

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
    return _BenchRun(
        settings, run_id, bench_database, bench_url, kafka_bootstrap, env, spark, checkpoints, max_offsets_per_trigger
    )


def _drain(run: _BenchRun, events: int) -> tuple[str, float]:
    """(a) A pre-filled topic streamed into Bronze: the figure, and the rate the yardstick compares."""
    topic = run.topic("drain")
    _echo(f"(a) pre-filling {topic} with {events:,} events ...")
    _wait_producer(run.producer(topic, "--rate", "0", "--events", str(events)), "pre-fill")
    _echo(f"(a) draining into Bronze ... (load {os.getloadavg()[0]:.1f})")
    meter = run.meter()
    batches = run.stream(topic)
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
    _echo(f"(a) drain: {figure}")
    return figure, consumed / float(seconds)


def _sustained(run: _BenchRun, seconds: float, rate: float) -> str:
    """(b) The producer at ``rate`` (0: flat out) while the stream runs on the same cores, the lag watched."""
    topic = run.topic("sustained")
    pace = "full speed" if rate == 0 else f"{rate:,.0f} events/s"
    _echo(f"(b) producer at {pace} for {seconds:.0f} s while the stream runs ...")
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
    _wait_producer(producer, "sustained")
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
    _echo(f"(b) sustained: {figure}")
    return figure


def _latency(run: _BenchRun, seconds: float, rate: float) -> str:
    """(c) A steady ``rate``; per event, its batch's commit time minus the producer's send time."""
    topic = run.topic("latency")
    _echo(f"(c) producer at {rate:,.0f} events/s for {seconds:.0f} s ...")
    producer_done = threading.Event()
    runner = run.stream_in_background(topic, producer_done)
    time.sleep(3)  # the query is up before the first event is sent
    meter = run.meter()
    _wait_producer(run.producer(topic, "--rate", str(rate), "--duration", str(seconds)), "latency")
    producer_done.set()
    runner.join()
    with database.connect(run.bench_url) as conn:
        count, p50, p95, p99, worst = ledger.commit_latency_percentiles(conn, topic)
    if not count:
        raise RuntimeError(f"(c) latency: no event of {topic} reached Bronze with its send time")
    figure = (
        f"{count:,} events at {rate:,.0f}/s: p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s, "
        f"max {worst:.2f} s {meter.text(count)}"
    )
    _echo(f"(c) latency: {figure}")
    return figure


def _yardstick(run: _BenchRun, events: int, drain_rate: float) -> str:
    """(d) Spark alone on this machine, and the drain's share of it."""
    topic = run.topic("yardstick")
    _wait_producer(run.producer(topic, "--rate", "0", "--events", str(events)), "yardstick pre-fill")
    _echo(f"(d) Spark alone: Kafka batch read, from_json, toArrow of {events:,} events ...")
    rates = spark_alone_rates(run.spark, run.kafka_bootstrap, topic, runs=4)
    warm = statistics.median(rates[1:])
    figure = (
        f"Spark alone (Kafka batch read, from_json to typed columns, toArrow) on {events:,} events: "
        f"{warm:,.0f} rows/s warm (median of {', '.join(f'{rate:,.0f}' for rate in rates[1:])}; "
        f"cold {rates[0]:,.0f}); the drain ran at {drain_rate / warm:.0%} of it"
    )
    _echo(f"(d) yardstick: {figure}")
    return figure


def _report(run: _BenchRun, figures: dict[str, str]) -> None:
    typer.echo(
        f"Kafka -> Bronze benchmark ({os.cpu_count()} cores, Spark {run.spark.version},"
        f" master {run.settings.spark_master})"
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
                    _echo(f"(b) lag sample skipped: {error}")
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
