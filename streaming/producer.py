"""Kafka I/O around the shopper model: ``shopstream produce``.

Messages are keyed by session_id, so a session stays in one partition and in order. The
producer is idempotent (no duplicates from its own retries: the only duplicates on the
topic are the ones ``--bad-ratio`` sends on purpose), lz4-compressed and lingers a few
milliseconds to batch. Each message carries its send time in the ``SENT_AT_HEADER`` header
(epoch ms), so the stream can measure latency without touching the event.

Pacing follows the simulator's clock: each turn of the loop sends the events whose event
time has come, so ``--rate`` is honoured in steps of a few milliseconds, not in bursts of a
second's worth, and event_timestamp matches the send time while the producer keeps up.
With ``--start`` the event clock begins there instead of now and advances at the pacing
rate, whatever the wall clock says; with ``--seed`` too, every message's key, value and
header names repeat byte for byte, and only the send-time header (and the record timestamp
Kafka stamps) carry the wall clock (docs/simulator.md#repeatable-runs).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Annotated, Any

import typer
from confluent_kafka import KafkaError, Message, Producer

from shopstream.command import fail, finite
from streaming.bad_messages import Label, expected_outcome
from streaming.events import EARLIEST_EVENT_TIME, MAX_AHEAD_OF_BROKER, SENT_AT_HEADER
from streaming.simulator import Batch, Simulator

# librdkafka batches for up to this long: it bounds the latency batching adds and still fills
# batches at high rates (docs/performance.md).
LINGER_MS = 20
# At most this many messages per send turn: the sent_at header is read once per turn, so
# this bounds its error.
TURN_LIMIT = 256
# A paced producer waits at least this long between turns: librdkafka's poll() rounds its
# timeout down to whole milliseconds, so shorter waits returned at once and the loop spun.
# Events due within a tick go out together, one tick late at most.
PACING_TICK_S = 0.005
# Unpaced runs (--rate 0) still stamp events on a clock: this many events per simulated second.
UNPACED_CLOCK_RATE = 100_000.0
FLUSH_TIMEOUT_S = 30.0


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "shopstream-producer",
        # Idempotence implies acks=all and bounded in-flight requests: retries neither
        # duplicate nor reorder a partition.
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": LINGER_MS,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        **overrides,
    }


@dataclass
class DeliveryCounts:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


DeliveryListener = Callable[[KafkaError | None, Message], None]


class ClickstreamProducer:
    """Sends simulator batches to one topic and counts the delivery reports."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        manifest: IO[str] | None = None,
        listener: DeliveryListener | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.counts = DeliveryCounts()
        self._producer = Producer(producer_config(bootstrap, **(config or {})))
        self._manifest = manifest
        self._listener = listener

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.counts.delivered += 1
        else:
            self.counts.failed += 1
            self.counts.last_error = str(error)
        if self._listener is not None:
            self._listener(error, message)

    def _on_delivery_recorded(
        self, sequence: int, label: Label | None, error: KafkaError | None, message: Message
    ) -> None:
        self._on_delivery(error, message)
        assert self._manifest is not None
        key = message.key()
        self._manifest.write(
            json.dumps(
                {
                    "seq": sequence,
                    "key": key.decode() if key is not None else None,
                    "kind": label.kind.value if label is not None else "good",
                    "expected": expected_outcome(label),
                    "event_id": label.event_id if label is not None else _good_event_id(message.value()),
                    "partition": message.partition(),
                    "offset": message.offset() if error is None else None,
                    "error": str(error) if error is not None else None,
                }
            )
            + "\n"
        )

    def send(self, batch: Batch) -> None:
        """Queue a batch; when librdkafka's queue is full, serve delivery reports and retry."""
        if not batch.values:
            return
        headers = [(SENT_AT_HEADER, b"%d" % (time.time_ns() // 1_000_000))]
        produce, poll, topic = self._producer.produce, self._producer.poll, self.topic
        if self._manifest is None:
            callbacks: Iterator[Callable[..., None]] | None = None
            on_delivery = self._on_delivery
        else:
            labels = batch.labels or [None] * len(batch.values)
            first = self.counts.sent
            callbacks = (
                partial(self._on_delivery_recorded, first + index, label) for index, label in enumerate(labels)
            )
        for key, value in zip(batch.keys, batch.values, strict=True):
            if callbacks is not None:
                on_delivery = next(callbacks)
            while True:
                try:
                    produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                    break
                except BufferError:
                    # Back-pressure: the local queue is full until the broker acks some batches.
                    poll(0.05)
        self.counts.sent += len(batch.values)
        poll(0)

    def wait(self, seconds: float) -> None:
        """Serve delivery reports for up to ``seconds`` (the loop's sleep)."""
        self._producer.poll(seconds)

    def in_flight(self) -> int:
        return len(self._producer)

    def flush(self, timeout: float = FLUSH_TIMEOUT_S, *, interrupted: Callable[[], bool] = lambda: False) -> int:
        """Wait until every message is acked or failed; return how many are still pending."""
        deadline = time.monotonic() + timeout
        while self.in_flight() and time.monotonic() < deadline and not interrupted():
            self._producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
        return self.in_flight()


def _good_event_id(value: bytes | None) -> str | None:
    # The simulator writes event_id first: {"event_id":"EVT_...","event_timestamp":...
    if value is None or not value.startswith(b'{"event_id":"'):
        return None
    end = value.find(b'"', 13)
    return value[13:end].decode() if end > 13 else None


# ---------------------------------------------------------------------------------------
# The run loop


@dataclass
class RunResult:
    counts: DeliveryCounts
    seconds: float
    pending: int  # messages neither acked nor failed when the flush gave up
    interrupted: bool

    @property
    def events_per_second(self) -> float:
        return self.counts.delivered / self.seconds if self.seconds > 0 else 0.0


class StopFlag:
    """Set by SIGINT/SIGTERM; a second signal asks to stop flushing too."""

    def __init__(self) -> None:
        self.signals = 0

    def __bool__(self) -> bool:
        return self.signals > 0

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1


@contextmanager
def stop_on_signals(stop: StopFlag) -> Iterator[StopFlag]:
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ProgressLine:
    """A live status line on stderr: redrawn on a terminal, a plain line every few s otherwise."""

    def __init__(self, stream: IO[str] = sys.stderr, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.interval = 0.5 if self.tty else 5.0
        self._next = time.monotonic() + self.interval

    def update(self, text: Callable[[], str]) -> None:
        if not self.enabled or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval
        if self.tty:
            self.stream.write("\r\x1b[2K" + text())
        else:
            self.stream.write(text() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def run(
    simulator: Simulator,
    producer: ClickstreamProducer,
    *,
    paced: bool = True,
    duration: float | None = None,
    events: int | None = None,
    stop: StopFlag | None = None,
    progress: ProgressLine | None = None,
) -> RunResult:
    """Send until ``duration`` seconds or ``events`` messages (or a signal), then flush.

    Paced: each turn sends the events whose simulated time has come, on a clock that reads
    the simulator's next event time when the run begins (its start, or the current time) and
    then advances with the wall clock. Unpaced: as fast as the broker takes them.
    """
    stop = stop if stop is not None else StopFlag()
    counts = producer.counts
    started = time.monotonic()
    # The event clock runs behind (or ahead of) the wall clock by this much: by the set-up
    # (connecting, creating the topic) after the simulator's start, which would otherwise go out
    # as one burst, or by all the time since (until) a start given with --start.
    lag_ms = time.time() * 1000.0 - simulator.next_event_ms if paced else 0.0
    deadline = started + duration if duration is not None else float("inf")

    def status() -> str:
        elapsed = max(time.monotonic() - started, 1e-9)
        return (
            f"sent {counts.sent:,}  delivered {counts.delivered:,}  failed {counts.failed:,}  "
            f"in flight {producer.in_flight():,}  {counts.delivered / elapsed:,.0f} events/s"
        )

    while not stop:
        remaining = TURN_LIMIT if events is None else min(TURN_LIMIT, events - counts.sent)
        now = time.monotonic()
        if remaining <= 0 or now >= deadline:
            break
        if paced:
            batch = simulator.take_until(time.time() * 1000.0 - lag_ms, limit=remaining)
            if not batch.values:
                # Sleep until the next event is due (serving delivery reports meanwhile);
                # capped so signals, the deadline and the progress line stay responsive.
                wait_s = (simulator.next_event_ms + lag_ms - time.time() * 1000.0) / 1000.0
                producer.wait(min(max(wait_s, PACING_TICK_S), 0.1, max(deadline - now, 0.0)))
        else:
            batch = simulator.take(remaining)
        producer.send(batch)
        if progress is not None:
            progress.update(status)
    interrupted = bool(stop)
    pending = producer.flush(interrupted=lambda: stop.signals > 1)
    if progress is not None:
        progress.close()
    return RunResult(counts, time.monotonic() - started, pending, interrupted)


def summary_line(result: RunResult) -> str:
    counts = result.counts
    how = "interrupted, flushed" if result.interrupted else "done"
    pending = f", {result.pending:,} undelivered at exit" if result.pending else ""
    error = f" (last error: {counts.last_error})" if counts.last_error else ""
    return (
        f"produce {how}: sent {counts.sent:,}, delivered {counts.delivered:,}, "
        f"failed {counts.failed:,}{pending}, {result.events_per_second:,.0f} events/s "
        f"over {result.seconds:.1f} s{error}"
    )


# ---------------------------------------------------------------------------------------
# The command


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
    """``python -m streaming.producer`` runs the command without the whole CLI."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(produce_command)
    app()


if __name__ == "__main__":
    main()
