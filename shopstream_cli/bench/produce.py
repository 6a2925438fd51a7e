"""``shopstream bench produce``: how fast the simulator generates and the producer delivers.

Three figures: events/s generated (the shopper model alone, no I/O), events/s delivered
to the broker (acked, idempotent, lz4, 6 partitions) and the producer process's CPU
seconds per 100k events, which is what it takes from the broker, Spark and PostgreSQL
when they share the machine. The run uses a topic of its own and deletes it afterwards.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated

import typer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from shopstream.command import fail
from shopstream.kafka_clients import client_config
from streaming.producer import TURN_LIMIT, UNPACED_CLOCK_RATE, ClickstreamProducer, DeliveryCounts, run
from streaming.simulator import Simulator

TARGET_EVENTS_PER_SECOND = 100_000
WARM_UP_EVENTS = 2_000


@dataclass(frozen=True)
class ProduceBenchmark:
    events: int
    generated_per_second: float
    delivered: int
    failed: int
    delivered_per_second: float
    cpu_seconds_per_100k: float
    partitions: int

    def lines(self) -> list[str]:
        verdict = "meets" if self.delivered_per_second >= TARGET_EVENTS_PER_SECOND else "BELOW"
        return [
            f"generated: {self.generated_per_second:,.0f} events/s (shopper model alone, {self.events:,} events)",
            f"delivered: {self.delivered_per_second:,.0f} events/s to the broker "
            f"({self.delivered:,} acked, {self.failed:,} failed, {self.partitions} partitions, lz4, idempotent; "
            f"{verdict} the {TARGET_EVENTS_PER_SECOND:,} events/s target)",
            f"producer CPU: {self.cpu_seconds_per_100k:.2f} s per 100k events (all threads of this process)",
        ]


def measure_generation(events: int, seed: int) -> float:
    """Events/s of the shopper model alone, in the producer's turn size."""
    # Warm up outside the measurement, as the delivery run does: first calls pay for imports and caches.
    Simulator(seed + 1, events_per_second=UNPACED_CLOCK_RATE).take(WARM_UP_EVENTS)
    simulator = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE)
    started = time.perf_counter()
    made = 0
    while made < events:
        made += len(simulator.take(min(TURN_LIMIT, events - made)))
    return made / (time.perf_counter() - started)


def measure_delivery(bootstrap: str, events: int, seed: int, partitions: int) -> ProduceBenchmark:
    """Generate and deliver ``events`` unthrottled to a fresh topic, then delete it."""
    from shopstream.kafka_admin import ensure_topic

    generated_per_second = measure_generation(events, seed)
    topic = f"shopstream-bench-produce-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, partitions)
    try:
        producer = ClickstreamProducer(bootstrap, topic)
        # Warm up outside the measurement: metadata, the idempotent producer id, connections.
        warm_up = Simulator(seed + 1, events_per_second=UNPACED_CLOCK_RATE)
        producer.send(warm_up.take(WARM_UP_EVENTS))
        producer.flush()
        producer.counts = DeliveryCounts()
        simulator = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE)
        cpu_started = time.process_time()
        result = run(simulator, producer, paced=False, events=events)
        cpu_seconds = time.process_time() - cpu_started
    finally:
        _delete_topic(bootstrap, topic)
    return ProduceBenchmark(
        events=events,
        generated_per_second=generated_per_second,
        delivered=result.counts.delivered,
        failed=result.counts.failed + result.pending,
        delivered_per_second=result.events_per_second,
        cpu_seconds_per_100k=cpu_seconds / max(result.counts.delivered, 1) * 100_000,
        partitions=partitions,
    )


def _delete_topic(bootstrap: str, topic: str) -> None:
    # The admin client must outlive the future: a collected client cancels its requests.
    admin = AdminClient(client_config(bootstrap))
    try:
        admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    except KafkaException as error:
        typer.echo(f"warning: could not delete benchmark topic {topic}: {error}", err=True)


def produce_benchmark_command(
    events: Annotated[int, typer.Option("--events", min=1_000, help="Events to generate and deliver.")] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed", help="Simulator seed.")] = 1,
    partitions: Annotated[
        int | None, typer.Option("--partitions", min=1, help="Partitions of the benchmark topic (default: settings).")
    ] = None,
) -> None:
    """Events/s generated, events/s delivered to Kafka, and producer CPU seconds per 100k events."""
    from shopstream.embedded import ServiceError
    from shopstream.services import kafka_bootstrap
    from shopstream.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        bootstrap = kafka_bootstrap(settings)
    except (SettingsError, ServiceError) as error:
        raise fail(error) from None
    typer.echo(f"benchmarking the producer against {bootstrap} with {events:,} events ...", err=True)
    benchmark = measure_delivery(bootstrap, events, seed, partitions or settings.topic_partitions)
    for line in benchmark.lines():
        typer.echo(line)
    if benchmark.failed:
        raise typer.Exit(code=1)
