"""Kafka I/O around the shopper model; the command itself is ``streaming.produce_command``.

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
from functools import partial
from types import FrameType
from typing import IO, Any

from confluent_kafka import KafkaError, Message, Producer

from shopstream.kafka_clients import client_config
from streaming.bad_messages import Label, expected_outcome
from streaming.events import SENT_AT_HEADER
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
        **client_config(bootstrap),  # the address and SHOPSTREAM_KAFKA_* security settings
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
