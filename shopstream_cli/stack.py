"""`shopstream up`: the whole pipeline in one terminal, stopped whole by Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psycopg
import typer

from shopstream.database import connect, redact
from shopstream.embedded import ServiceError
from shopstream.kafka_admin import ensure_topic, watermarks
from shopstream.processes import LogRotation, spawn, stop_group
from shopstream.services import (
    Endpoints,
    migrate_as_admin,
    running_servers,
    start_services,
    stop_servers_started_since,
)
from shopstream.settings import Settings
from streaming.ledger import committed_offsets, messages_behind, rows_written
from streaming.migrations import migrate

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Child:
    name: str
    command: list[str]
    url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    # The Endpoints.environment() variables this child gets: its own credential and nothing else.
    variables: tuple[str, ...] = ()


@dataclass
class StackPlan:
    """The processes `up` runs beside the servers, in start order (stopped in reverse)."""

    children: list[Child] = field(default_factory=list)


# Which credential each child gets: the producer none, the stream the owner, the dashboard the
# reader, Dagster its own storage role and the owner (SHOPSTREAM_DB_*) for dbt.
PRODUCER_VARIABLES = ("SHOPSTREAM_KAFKA_BOOTSTRAP",)
# SHOPSTREAM_SPARK_MASTER only when `services start --spark-workers N` runs a local Spark cluster.
STREAM_VARIABLES = ("SHOPSTREAM_KAFKA_BOOTSTRAP", "SHOPSTREAM_DATABASE_URL", "SHOPSTREAM_SPARK_MASTER")
DASHBOARD_VARIABLES = ("SHOPSTREAM_KAFKA_BOOTSTRAP", "SHOPSTREAM_DASHBOARD_DATABASE_URL")
DAGSTER_VARIABLES = (
    "SHOPSTREAM_KAFKA_BOOTSTRAP",
    "SHOPSTREAM_DATABASE_URL",
    "SHOPSTREAM_DB_HOST",
    "SHOPSTREAM_DB_PORT",
    "SHOPSTREAM_DB_USER",
    "SHOPSTREAM_DB_PASSWORD",
    "SHOPSTREAM_DB_NAME",
    "SHOPSTREAM_DAGSTER_DB_USER",
    "SHOPSTREAM_DAGSTER_DB_PASSWORD",
)

DEFAULT_PRODUCER_RATE = 100.0
SHOPSTREAM = [sys.executable, "-m", "shopstream_cli.cli"]


def plan_children(settings: Settings, *, producer_rate: float = DEFAULT_PRODUCER_RATE) -> StackPlan:
    """Pipeline processes, each one a `shopstream` sub-command in its own process group.

    The consumer side starts before the producer so the first events are picked up at once;
    the dashboard last, when there is something to show.
    """
    from shopstream_assets.runtime.dagster_instance import webserver_url

    children = [
        Child("stream", [*SHOPSTREAM, "stream"], variables=STREAM_VARIABLES),
        # Each prepares the instance and the dbt manifest, then becomes the Dagster process.
        Child("dagster-daemon", [*SHOPSTREAM, "dagster", "daemon"], variables=DAGSTER_VARIABLES),
        Child("dagster", [*SHOPSTREAM, "dagster", "webserver"], webserver_url(settings), variables=DAGSTER_VARIABLES),
    ]
    if producer_rate > 0:
        children.append(
            Child(
                "producer",
                [*SHOPSTREAM, "produce", "--rate", f"{producer_rate:g}", "--quiet"],
                variables=PRODUCER_VARIABLES,
            )
        )
    children.append(
        Child(
            "dashboard",
            [*SHOPSTREAM, "dashboard", "--port", str(settings.dashboard_port)],
            f"http://{settings.bind_address}:{settings.dashboard_port}",
            variables=DASHBOARD_VARIABLES,
        )
    )
    return StackPlan(children=children)


def _status_line(
    endpoints: Endpoints, topic: str, previous: tuple[float, int] | None
) -> tuple[str, tuple[float, int] | None]:
    """The live line and the (time, messages in the topic) the next line's rate starts from.

    When the brokers give no end offsets (none answers, or on a cluster a partition whose leader's
    broker is down until another leads it), the topic's size, the rate and the lag are shown as
    unknown, not as zero, and the next known figure's rate is taken over the whole gap.
    """
    now = time.monotonic()
    marks: dict[int, tuple[int, int]] | None = None
    with contextlib.suppress(Exception):  # a status line must never take the stack down
        marks = watermarks(endpoints.kafka_bootstrap, topic, timeout=5)
    in_topic = sum(high for _, high in marks.values()) if marks is not None else None
    rate = "?"
    if in_topic is not None:
        rate = "0"
        if previous and now > previous[0]:
            rate = f"{(in_topic - previous[1]) / (now - previous[0]):,.0f}"
    bronze_rows = "?"
    lag = "?" if marks is not None else "unknown (no end offsets from Kafka: a broker down?)"
    last_gold = "-"
    with contextlib.suppress(Exception), connect(endpoints.database_url) as conn:
        bronze_rows = f"{rows_written(conn, topic):,}"
        if marks is not None:
            lag = f"{sum(messages_behind(marks, committed_offsets(conn, topic)).values()):,}"
        # The start of the last dbt run that refreshed Gold (absent until the first one).
        (refreshed,) = conn.execute("select max(refreshed_at) from gold.refresh_log").fetchone()
        if refreshed is not None:
            last_gold = refreshed.astimezone().strftime("%H:%M:%S")
    shown_topic = f"{in_topic:,}" if in_topic is not None else "?"
    line = f"in {rate} ev/s | topic {shown_topic} | bronze {bronze_rows} rows | lag {lag} | gold refreshed {last_gold}"
    return line, ((now, in_topic) if in_topic is not None else previous)


def start_servers(settings: Settings, progress: Callable[[str], None]) -> Endpoints:
    """Start (or find) the servers, migrate Bronze, create the topic: what `services start` and `up` share."""
    endpoints = start_services(settings, progress=progress)
    try:
        migrate_as_admin(settings, migrate, progress)
    except psycopg.OperationalError as error:
        raise ServiceError(f"cannot reach PostgreSQL at {redact(endpoints.database_url)}: {error}") from None
    if ensure_topic(endpoints.kafka_bootstrap, settings.topic, settings.topic_partitions):
        progress(f"created topic {settings.topic} ({settings.topic_partitions} partitions)")
    return endpoints


def child_environments(endpoints: Endpoints, settings: Settings) -> Callable[[Child], dict[str, str]]:
    """Each child's environment: ours without any endpoint variable, then the child's own ones.

    The children find the embedded servers' state under SHOPSTREAM_HOME as well; what is kept
    out of their environment is what their process (a crash page, a log of its settings) could show.
    """
    exported = endpoints.environment()
    base = {name: value for name, value in os.environ.items() if name not in exported}
    base["SHOPSTREAM_HOME"] = str(settings.home)

    def for_child(child: Child) -> dict[str, str]:
        return {**base, **{name: exported[name] for name in child.variables if name in exported}}

    return for_child


def run_stack(
    settings: Settings,
    *,
    live_status: bool = True,
    producer_rate: float = DEFAULT_PRODUCER_RATE,
    echo: Callable[[str], None] = typer.echo,
) -> int:
    """Start servers and pipeline processes; on Ctrl-C or SIGTERM stop all of them. Returns an exit code."""
    from shopstream_assets.runtime.run_path import run_path

    # The installed Dagster, dagster-dbt and dbt against the tested ones: the run path, said once.
    echo(run_path(settings.fast_runs).message)
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    # Servers already running before `up` are left running when it stops; those it starts, it stops.
    already_running = running_servers(settings)
    plan = plan_children(settings, producer_rate=producer_rate)
    exit_code = 0
    try:
        endpoints = start_servers(settings, progress=echo)
        env = child_environments(endpoints, settings)
        for child in plan.children:
            if stopping:
                break
            # Each log rotates by size (SHOPSTREAM_LOG_MAX_SIZE, SHOPSTREAM_LOG_KEEP): `up` may run for weeks.
            child.process = spawn(
                child.command,
                env=env(child),
                log_path=settings.logs_dir / f"{child.name}.log",
                cwd=REPO_ROOT,
                rotation=LogRotation.from_settings(settings),
            )
            echo(f"started {child.name} (pid {child.process.pid}, log {settings.logs_dir / (child.name + '.log')})")
        echo("")
        echo(f"PostgreSQL  {redact(endpoints.database_url)}")
        echo(f"Kafka       {endpoints.kafka_bootstrap}  topic {settings.topic}")
        for child in plan.children:
            if child.url:
                echo(f"{child.name:<11} {child.url}")
        echo("Ctrl-C stops everything started here.")
        previous: tuple[float, int] | None = None
        next_status = 0.0
        while not stopping:
            for child in plan.children:
                if child.process is not None and child.process.poll() is not None:
                    echo(f"\n{child.name} exited with code {child.process.returncode}; see {settings.logs_dir}")
                    exit_code = 1
                    stopping = True
            if live_status and time.monotonic() >= next_status:
                line, previous = _status_line(endpoints, settings.topic, previous)
                if sys.stdout.isatty():
                    sys.stdout.write("\r\033[2K" + line)
                    sys.stdout.flush()
                else:
                    echo(line)
                next_status = time.monotonic() + (2 if sys.stdout.isatty() else 10)
            time.sleep(0.2)
    except Exception as error:  # noqa: BLE001 -- report, then still stop what was started
        echo(f"error: {error}")
        exit_code = 2
    finally:
        # A second Ctrl-C while stopping must not leave orphans either.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        echo("\nstopping ...")
        for child in reversed(plan.children):
            if child.process is not None:
                stop_group(child.process, timeout=60)
                echo(f"stopped {child.name}")
        stop_servers_started_since(settings, already_running, progress=echo)
        echo("all stopped")
    return exit_code
