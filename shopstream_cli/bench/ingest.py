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
    It follows (e) on the same topic and stream.
(d) yardstick: the machine's own ceiling, measured as the issue that set the targets measured
    it (its figure is in the performance notes): Spark alone reads ``--yardstick-events`` from Kafka in
    batch mode, parses them with ``from_json`` to typed columns and collects them with
    ``toArrow()``, once cold and three times warm; the median warm rate is printed with the
    drain's share of it. It runs last, so its JIT warm-up cannot speed up the drain's first
    batch. Figures from machines of different speeds compare through that share.
(e) quiet: a steady ``--quiet-rate`` (100 events/s) before (c), measured as (c) is: what the
    stream costs when there is little to do.

Producers run as ``streaming.produce_command`` subprocesses (their own CPU, as in production); the
stream runs in this process with one SparkSession for all phases.

The box is shared, so every figure carries the 1-minute load average during its phase and
the load-independent cost: CPU-seconds per 100k events of the stream (this Python process
plus its Spark JVM) and of the PostgreSQL server (when it is the embedded one), and the
stream's share of a core while the phase's load lasted (the producer ran, or the drain).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shopstream import database, services
from shopstream.command import finite
from shopstream.kafka_admin import ensure_topic
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.settings import Settings, SettingsError, load_settings
from shopstream_cli.bench import ingest_phases as phases
from shopstream_cli.bench.measure import CpuMeter
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
    quiet_rate: Annotated[
        float, typer.Option("--quiet-rate", min=1, callback=finite, help="Steady events/s in phase (e).")
    ] = 100,
    quiet_seconds: Annotated[
        float, typer.Option("--quiet-seconds", min=5, callback=finite, help="Length of phase (e).")
    ] = 30.0,
    max_offsets_per_trigger: Annotated[
        int, typer.Option("--max-offsets-per-trigger", min=1, help="Most messages one micro-batch reads.")
    ] = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    yardstick_events: Annotated[
        int, typer.Option("--yardstick-events", min=1_000, help="Messages Spark alone reads in phase (d).")
    ] = 300_000,
    keep_database: Annotated[bool, typer.Option("--keep-database", help="Keep the scratch database.")] = False,
) -> None:
    """Measure Kafka -> Bronze: drain, sustained rate beside the producer, quiet and latency; then Spark alone."""
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
        figures["drain"], drain_rate = phases.drain(run, events)
        figures["sustained"] = phases.sustained(run, sustained_seconds, sustained_rate)
        figures["quiet"], figures["latency"] = phases.steady(
            run,
            [
                phases.SteadyPhase("e", "quiet", quiet_rate, quiet_seconds),
                phases.SteadyPhase("c", "latency", latency_rate, latency_seconds),
            ],
        )
        figures["yardstick"] = phases.yardstick(run, yardstick_events, drain_rate)
    finally:
        run.spark.stop()
        if not keep_database:
            database.drop_database(database_url, run.bench_database)
    _report(run, figures)


@dataclasses.dataclass(frozen=True)
class BenchRun:
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


def _prepare_run(settings: Settings, database_url: str, kafka_bootstrap: str, max_offsets_per_trigger: int) -> BenchRun:
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
    return BenchRun(
        settings, run_id, bench_database, bench_url, kafka_bootstrap, env, spark, checkpoints, max_offsets_per_trigger
    )


def _report(run: BenchRun, figures: dict[str, str]) -> None:
    typer.echo(
        f"Kafka -> Bronze benchmark ({os.cpu_count()} cores, Spark {run.spark.version},"
        f" master {run.settings.spark_master})"
    )
    for name, text in figures.items():
        typer.echo(f"  {name:9} {text}")
