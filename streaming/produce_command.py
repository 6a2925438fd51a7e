"""``shopstream produce``: the shopper model into Kafka (``python -m streaming.produce_command`` runs it alone)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from shopstream.command import fail, finite
from streaming.events import EARLIEST_EVENT_TIME, MAX_AHEAD_OF_BROKER
from streaming.producer import (
    UNPACED_CLOCK_RATE,
    ClickstreamProducer,
    ProgressLine,
    StopFlag,
    run,
    stop_on_signals,
    summary_line,
)
from streaming.simulator import Simulator

START_FORMAT = "an ISO 8601 time with a time zone, e.g. 2026-01-01T00:00:00Z"


def parse_start(value: str) -> datetime:
    """``--start``'s time: zoned, and one the stream accepts events at (so not a run of rejects)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"must be {START_FORMAT}: got {value!r}") from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"needs a time zone (Z or +01:00), as in {START_FORMAT}: got {value!r}")
    moment = moment.astimezone(UTC)
    if moment < EARLIEST_EVENT_TIME:
        raise typer.BadParameter(f"is before 2000-01-01T00:00:00Z, where the stream rejects events: got {value!r}")
    if moment > datetime.now(UTC) + MAX_AHEAD_OF_BROKER:
        raise typer.BadParameter(
            f"is more than a day ahead of now; the stream rejects events a day after their send time: got {value!r}"
        )
    return moment


def _checked_start(value: str | None) -> str | None:
    if value is not None:
        parse_start(value)
    return value


def produce_command(
    rate: Annotated[
        float,
        typer.Option(
            "--rate", min=0.0, callback=finite, help="Events per second; 0 = as fast as the broker takes them."
        ),
    ] = 20.0,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.0, callback=finite, help="Stop after this many seconds.")
    ] = None,
    events: Annotated[int | None, typer.Option("--events", min=0, help="Stop after this many messages.")] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Alone: the same keys and values, except event_timestamp and the time part of event_id "
            "(its first 12 hex digits), which follow the start (with --diurnal the messages differ too). "
            "With --start: the same bytes (key, value, header names); the sent_at_ms header and the record "
            "timestamp are the wall clock of sending and differ. Same other options assumed (--rate, "
            "--bad-ratio, --diurnal).",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            callback=_checked_start,
            help="Event time of the first event (and the time part of ids), e.g. 2026-01-01T00:00:00Z; "
            "paced runs advance from it at --rate, not with the wall clock. Default: now.",
        ),
    ] = None,
    bad_ratio: Annotated[
        float,
        typer.Option(
            "--bad-ratio",
            min=0.0,
            max=1.0,
            callback=finite,
            help="Share of deliberately broken messages (kinds and reasons: docs/data-model.md).",
        ),
    ] = 0.0,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="Write one JSON line per delivered message: kind, expected outcome, partition, offset."
        ),
    ] = None,
    diurnal: Annotated[
        bool, typer.Option("--diurnal", help="Follow the time-of-day traffic shape; --rate is then the daily mean.")
    ] = False,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions", min=1, help="Partitions if the topic is created (default SHOPSTREAM_TOPIC_PARTITIONS)."
        ),
    ] = None,
    topic: Annotated[str | None, typer.Option("--topic", help="Topic (default SHOPSTREAM_TOPIC).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live progress line.")] = False,
) -> None:
    """Send simulated shoppers' clickstream to Kafka; with neither --duration nor --events, until Ctrl-C."""
    from shopstream.embedded import ServiceError
    from shopstream.kafka_admin import TopicRefusedError, ensure_topic
    from shopstream.services import kafka_bootstrap
    from shopstream.settings import SettingsError, load_settings, parse_topic

    try:
        settings = load_settings()
        topic = parse_topic("--topic", topic) if topic is not None else settings.topic
        bootstrap = kafka_bootstrap(settings)
    except (SettingsError, ServiceError) as error:
        raise fail(str(error)) from None
    partitions = partitions or settings.topic_partitions
    try:
        created = ensure_topic(bootstrap, topic, partitions)
    except TopicRefusedError as error:  # reachable, but the topic would lose events
        raise fail(str(error)) from None
    except Exception as error:  # the broker's own message says what is wrong
        raise fail(f"could not reach Kafka at {bootstrap} to create topic {topic!r}: {error}") from None
    paced = rate > 0
    simulator = Simulator(
        seed,
        start=parse_start(start) if start is not None else None,
        events_per_second=rate if paced else UNPACED_CLOCK_RATE,
        diurnal=diurnal,
        bad_ratio=bad_ratio,
    )
    until = f"{events:,} messages" if events is not None else f"{duration:g} s" if duration is not None else "Ctrl-C"
    where = f"new topic {topic} ({partitions} partitions)" if created else f"topic {topic}"
    pace = f"{rate:g} events/s" if paced else "unthrottled"
    typer.echo(
        f"producing to {where} at {bootstrap}: {pace}, bad ratio {bad_ratio:g}, seed {simulator.seed}, "
        f"start {simulator.start.isoformat().replace('+00:00', 'Z')}, until {until}",
        err=True,
    )
    manifest_file = manifest.open("w", encoding="utf-8") if manifest is not None else None
    try:
        producer = ClickstreamProducer(bootstrap, topic, manifest=manifest_file)
        with stop_on_signals(StopFlag()) as stop:
            result = run(
                simulator,
                producer,
                paced=paced,
                duration=duration,
                events=events,
                stop=stop,
                progress=ProgressLine(enabled=not quiet),
            )
    finally:
        if manifest_file is not None:
            manifest_file.close()
    typer.echo(summary_line(result))
    if result.counts.failed or result.pending:
        raise typer.Exit(code=1)


def main() -> None:
    """``python -m streaming.produce_command`` runs the command without the whole CLI."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(produce_command)
    app()


if __name__ == "__main__":
    main()
