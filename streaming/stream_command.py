"""``shopstream stream``: the Kafka -> Bronze stream as a command.

Importing this module is cheap (no pyspark, pyarrow or Kafka client at import time): the
``shopstream`` CLI imports it to register ``stream``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from shopstream.command import fail, finite, settings_or_exit
from streaming.job import DEFAULT_MAX_OFFSETS_PER_TRIGGER, DEFAULT_PACING, run_stream
from streaming.job_errors import StreamJobError
from streaming.kafka_source import BatchPacing
from streaming.spark_session import build_spark_session, configure_logging


def stream_command(
    trigger: Annotated[
        float,
        typer.Option(
            "--trigger",
            min=0,
            callback=finite,
            help="Seconds between micro-batch starts; 0 = paced by --batch-min-messages and --batch-max-wait.",
        ),
    ] = 0,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle",
            min=0,
            callback=finite,
            help="Exit after this many seconds without new data (tests, benchmarks).",
        ),
    ] = None,
    max_offsets_per_trigger: Annotated[
        int,
        typer.Option(
            "--max-offsets-per-trigger",
            min=1,
            help="Most messages one micro-batch reads (fewer if the driver cannot hold that many of the largest rows).",
        ),
    ] = DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    batch_min_messages: Annotated[
        int,
        typer.Option("--batch-min-messages", min=1, help="A micro-batch starts once this many messages wait ..."),
    ] = DEFAULT_PACING.min_messages,
    batch_max_wait: Annotated[
        float,
        typer.Option(
            "--batch-max-wait",
            min=0,
            callback=finite,
            help="... or this many seconds after the last one; 0 = batches back to back, whatever they hold.",
        ),
    ] = DEFAULT_PACING.max_wait_seconds,
    restart_from_bronze: Annotated[
        bool,
        typer.Option(
            "--restart-from-bronze",
            help="If the checkpoint is ahead of Bronze (a reset database), set it aside; read from Bronze's offsets.",
        ),
    ] = False,
) -> None:
    """Stream the clickstream topic into Bronze (PostgreSQL), exactly once."""
    settings = settings_or_exit()
    configure_logging(settings)
    try:
        pacing = (
            BatchPacing(batch_min_messages, batch_max_wait, min(DEFAULT_PACING.check_seconds, batch_max_wait))
            if batch_max_wait > 0
            else None
        )
    except ValueError as error:
        raise fail(f"--batch-min-messages {batch_min_messages} --batch-max-wait {batch_max_wait}: {error}") from None
    from shopstream import services

    try:
        database_url = services.database_urls(settings)[0]
        kafka_bootstrap = services.kafka_bootstrap(settings)
        spark = build_spark_session(settings)
    except (RuntimeError, StreamJobError) as error:
        raise fail(error) from None
    try:
        summary = run_stream(
            spark,
            settings,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            trigger_seconds=trigger,
            until_idle=until_idle,
            max_offsets_per_trigger=max_offsets_per_trigger,
            restart_from_bronze=restart_from_bronze,
            pacing=pacing,
        )
    except StreamJobError as error:
        raise fail(error, code=1) from None
    finally:
        spark.stop()
    rate = summary.messages / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"stream stopped: {summary.batches} batches, {summary.messages} messages -> {summary.rows_written} rows, "
        f"{summary.rejects} rejects, {summary.duplicates} duplicates in {summary.seconds:.1f} s ({rate:,.0f} msg/s)",
        err=True,
    )
