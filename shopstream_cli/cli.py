"""The ``shopstream`` command line: one entry for services, pipeline parts and benchmarks."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated

import typer

from dashboard.cli import dashboard_command
from shopstream.command import fail, finite, settings_or_exit
from shopstream_cli.bench.dashboard import dashboard_benchmark_command
from shopstream_cli.bench.dbt import dbt_benchmark_command
from shopstream_cli.bench.e2e import e2e_benchmark_command
from shopstream_cli.bench.freshness import freshness_benchmark_command
from shopstream_cli.bench.ingest import ingest_benchmark_command
from shopstream_cli.bench.produce import produce_benchmark_command
from streaming.produce_command import produce_command
from streaming.stream_command import stream_command

app = typer.Typer(
    help="ShopStream: real-time e-commerce analytics on Kafka, Spark, PostgreSQL, dbt, Dagster and Streamlit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(
    help="The embedded PostgreSQL and Apache Kafka servers (and local Kafka and Spark clusters).", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)
app.add_typer(services_app, name="services")


@app.callback()
def private_files() -> None:
    """ShopStream: real-time e-commerce analytics on Kafka, Spark, PostgreSQL, dbt, Dagster and Streamlit."""
    import os

    from shopstream.embedded import PRIVATE_UMASK

    # Everything `shopstream` and the servers and processes it starts create is private to its user.
    os.umask(PRIVATE_UMASK)


app.add_typer(bench_app, name="bench")

app.command("produce")(produce_command)
bench_app.command("produce")(produce_benchmark_command)
bench_app.command("dbt")(dbt_benchmark_command)
app.command("dashboard")(dashboard_command)
bench_app.command("dashboard")(dashboard_benchmark_command)
app.command("stream")(stream_command)
bench_app.command("ingest")(ingest_benchmark_command)
bench_app.command("freshness")(freshness_benchmark_command)
bench_app.command("e2e")(e2e_benchmark_command)

dagster_app = typer.Typer(
    help="Dagster's webserver and daemon on this project's instance, and the code location's own server.",
    no_args_is_help=True,
)
app.add_typer(dagster_app, name="dagster")

CodeServerOption = Annotated[
    str | None,
    typer.Option(
        "--code-server",
        metavar="HOST:PORT",
        help="Load the code location from this `shopstream dagster code-server` instead of importing it"
        " (as on Kubernetes: docs/orchestration.md).",
    ),
]


def _serve_with_code_server(process: str, code_server: str) -> None:
    from shopstream_assets.runtime.code_server import CodeServerAddress, CodeServerError, serve_with_code_server

    try:
        address = CodeServerAddress.parse(code_server)
    except CodeServerError as error:
        raise fail(str(error)) from None
    serve_with_code_server(process, address)


@dagster_app.command("webserver")
def dagster_webserver_command(code_server: CodeServerOption = None) -> None:
    """Write dagster.yaml, prepare the dbt manifest, then become dagster-webserver (the UI)."""
    if code_server is not None:
        _serve_with_code_server("webserver", code_server)
    from shopstream_assets.runtime.dagster_instance import main

    main(["webserver"])


@dagster_app.command("daemon")
def dagster_daemon_command(code_server: CodeServerOption = None) -> None:
    """Write dagster.yaml, prepare the dbt manifest, then become dagster-daemon (sensors, schedules, run queue)."""
    if code_server is not None:
        _serve_with_code_server("daemon", code_server)
    from shopstream_assets.runtime.dagster_instance import main

    main(["daemon"])


@dagster_app.command("code-server")
def dagster_code_server_command(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default SHOPSTREAM_BIND_ADDRESS).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port to serve on (default 3030, the Dagster Helm chart's)."),
    ] = None,
) -> None:
    """Prepare the dbt manifest, then become `dagster api grpc` serving the code location (as a deployment does).

    The webserver and daemon then load it with `--code-server HOST:PORT`; with
    SHOPSTREAM_FAST_RUNS=0 on all three, every run is a process of this server's.
    """
    from shopstream_assets.runtime.code_server import serve_code

    serve_code(host, port)


def _progress(message: str) -> None:
    typer.echo(message, err=True)


@services_app.command("start")
def services_start(
    kafka_nodes: Annotated[
        int | None,
        typer.Option(
            "--kafka-nodes",
            min=1,
            max=9,
            help="Run a local Kafka cluster of this many KRaft nodes (1: the single embedded broker). Kept for"
            " later starts under SHOPSTREAM_HOME.",
        ),
    ] = None,
    spark_workers: Annotated[
        int | None,
        typer.Option(
            "--spark-workers",
            min=0,
            max=8,
            help="Run a local Spark standalone master and this many workers (0: none, the stream runs in"
            " local mode). Kept for later starts under SHOPSTREAM_HOME.",
        ),
    ] = None,
) -> None:
    """Start (or find) the embedded servers; print the line that sources their settings.

    The settings (URLs with passwords) go to SHOPSTREAM_HOME/env.sh, mode 600, as `export`
    lines; what is printed is `. '<that file>'`, so `eval "$(shopstream services start)"`
    points the current shell at the servers and no password reaches a terminal or a log.
    """
    from shopstream.database import redact
    from shopstream.embedded import ServiceError
    from shopstream.services import save_cluster_options, write_environment_file
    from shopstream_cli.stack import start_servers

    settings = settings_or_exit()
    try:
        save_cluster_options(settings, kafka_nodes=kafka_nodes, spark_workers=spark_workers)
        endpoints = start_servers(settings, progress=_progress)
        path = write_environment_file(settings, endpoints)
    except (ServiceError, RuntimeError, OSError) as error:
        raise fail(str(error)) from None
    typer.echo(f". {shlex.quote(str(path))}")
    _progress(f"PostgreSQL: {redact(endpoints.database_url)}")
    _progress(f"Kafka:      {endpoints.kafka_bootstrap}")
    if endpoints.spark_master:
        _progress(f"Spark:      {endpoints.spark_master}")


@services_app.command("reset-passwords")
def services_reset_passwords() -> None:
    """New passwords for the embedded PostgreSQL's roles, set through its local admin access and saved.

    For a lost or unreadable credentials.json: the server is stopped for the change (and started
    again if it ran); run `services start` afterwards for the new settings.
    """
    from shopstream.embedded import ServiceError
    from shopstream.postgres_server import EmbeddedPostgres
    from shopstream.services import postgres_is_embedded

    settings = settings_or_exit()
    if not postgres_is_embedded(settings):
        raise fail("SHOPSTREAM_DATABASE_URL names a server ShopStream does not run: change its passwords there")
    try:
        EmbeddedPostgres(settings).reset_passwords(progress=_progress)
    except ServiceError as error:
        raise fail(str(error)) from None
    typer.echo('passwords reset: run `shopstream services start` (or `eval "$(shopstream services start)"`)')


@services_app.command("setup-sql")
def services_setup_sql() -> None:
    """Print the SQL a DBA runs on an external PostgreSQL to create ShopStream's roles by duty.

    The roles are the users of SHOPSTREAM_DATABASE_URL (the owner), of the dashboard's URL (the
    reader) and of Dagster's URL; their passwords are psql variables the DBA sets, never printed.
    Then `shopstream migrate` with SHOPSTREAM_ADMIN_DATABASE_URL set makes the schemas and hands
    them to the owner (docs/security-external-postgres.md).
    """
    from shopstream.embedded import ServiceError
    from shopstream.postgres_roles import setup_sql
    from shopstream.services import external_duty_roles, postgres_is_embedded

    settings = settings_or_exit()
    if postgres_is_embedded(settings):
        raise fail("the embedded PostgreSQL sets its roles up itself: set SHOPSTREAM_DATABASE_URL to the owner's URL")
    try:
        typer.echo(setup_sql(external_duty_roles(settings)), nl=False)
    except ServiceError as error:
        raise fail(str(error)) from None


@services_app.command("stop")
def services_stop() -> None:
    """Stop the embedded servers, the local Kafka and Spark clusters among them (SIGTERM, then wait)."""
    from shopstream.services import stop_services

    stopped = stop_services(settings_or_exit(), progress=_progress)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@services_app.command("status")
def services_status_command() -> None:
    """Show whether each server runs, where, and its resident memory."""
    from shopstream.services import services_status

    statuses = services_status(settings_or_exit())
    width = max([12, *(len(status.name) + 1 for status in statuses)])
    for status in statuses:
        state = "running" if status.running else "stopped"
        kind = "embedded" if status.embedded else "external"
        memory = f"  {status.rss_mb:.0f} MB" if status.rss_mb is not None else ""
        pid = f"  pid {status.pid}" if status.pid else ""
        typer.echo(f"{status.name:<{width}}{state:<8} {kind:<9} {status.address or '-'}{pid}{memory}")
    if not all(status.running for status in statuses):
        raise typer.Exit(code=1)


@app.command("jars")
def jars_command() -> None:
    """Resolve the Kafka broker and Spark connector jars with Maven (needs network once)."""
    from shopstream.jars import KAFKA_BROKER, SPARK_CONNECTOR, ToolMissingError, resolve_jars

    settings = settings_or_exit()
    try:
        for profile in (KAFKA_BROKER, SPARK_CONNECTOR):
            jars = resolve_jars(profile, settings.jars_dir, progress=_progress)
            typer.echo(f"{profile}: {len(jars)} jars in {settings.jars_dir / profile}")
    except ToolMissingError as error:
        raise fail(str(error)) from None


@app.command("migrate")
def migrate_command() -> None:
    """Create the bronze/silver/gold schemas and the Bronze tables (idempotent)."""
    from shopstream.embedded import ServiceError
    from shopstream.services import migrate_as_admin
    from streaming.migrations import migrate

    try:
        # PostgreSQL alone: a migration must not need the broker to be up. As the admin: the
        # pipeline's owner role may not create schemas.
        applied = migrate_as_admin(settings_or_exit(), migrate, progress=_progress)
    except ServiceError as error:
        raise fail(str(error)) from None
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database already up to date")


@app.command("up")
def up_command(
    rate: Annotated[
        float, typer.Option("--rate", min=0, callback=finite, help="Simulated events per second; 0 starts no producer.")
    ] = 100.0,
    no_status: Annotated[bool, typer.Option("--no-status", help="Print no live status line.")] = False,
) -> None:
    """Start the whole pipeline: servers, topic, producer, Spark stream, Dagster, dashboard.

    Ctrl-C (or SIGTERM) stops everything it started; what was delivered to Kafka is in
    Bronze after the next start.
    """
    from shopstream_cli.stack import run_stack

    sys.exit(run_stack(settings_or_exit(), live_status=not no_status, producer_rate=rate))


@app.command("test-setup", hidden=True)
def test_setup_command() -> None:
    """Install what the test suite needs beyond Python packages (Debian's chromium), and train the
    JVMs' class-data archives the suite's hundreds of JVM starts then map (shopstream/jvm_archive.py)."""
    from shopstream_cli.jvm_training import train_class_data_archives
    from shopstream_cli.test_setup import MissingPrerequisite, ensure_test_prerequisites

    try:
        ensure_test_prerequisites(progress=_progress)
    except MissingPrerequisite as error:
        raise fail(error) from None
    train_class_data_archives(settings_or_exit(), progress=_progress)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
