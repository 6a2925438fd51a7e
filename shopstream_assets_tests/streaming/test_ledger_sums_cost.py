"""The running sums' triggers (migrations 0007 and 0008) do not slow a micro-batch's write.

Small batches through the stream's own writer into the real PostgreSQL, alternately with the
sums' triggers disabled and enabled in the same database, in the same run: the median write
times side by side. Figures go to docs/exactly-once.md.
"""

from __future__ import annotations

import statistics
import time

import pyarrow as pa

from shopstream.database import connect
from streaming.bronze_batch import SOURCE_STREAM, write_batch
from streaming.bronze_load import KafkaPositions, validated_table
from streaming.producer import UNPACED_CLOCK_RATE
from streaming.simulator import Simulator

TOPIC = "clicks"
BATCHES_EACH = 300
EVENTS_PER_BATCH = 20
ROUNDS = 12
# The sums' triggers a micro-batch can fire (its ledger row's insert, a change of its counts, its rejects' COPY).
SUM_TRIGGERS = {
    "bronze.ingest_batches": (
        "ingest_batches_totals_on_insert",
        "ingest_batches_totals_on_update",
        "ingest_batches_event_time_so_far",  # migration 0008: the running newest event time
    ),
    "bronze.clickstream_rejects": ("clickstream_rejects_totals_on_insert",),
}
# Wider than the noise of two shared cores; a per-row trigger on the events would be far past it.
MAX_RATIO = 1.5


def _set_sum_triggers(database_url: str, enabled: bool) -> None:
    verb = "enable" if enabled else "disable"
    with connect(database_url) as conn:
        for table, triggers in SUM_TRIGGERS.items():
            for trigger in triggers:
                conn.execute(f"alter table {table} {verb} trigger {trigger}")


def test_a_micro_batch_writes_as_fast_with_the_running_sums(database_url: str) -> None:
    positions = KafkaPositions(TOPIC, partitions=3)
    # One shopper model for every batch: creating one costs far more than a batch's write.
    simulator = Simulator(1_000, events_per_second=UNPACED_CLOCK_RATE, bad_ratio=0.1)
    batches: list[pa.Table] = []
    for _ in range(2 * BATCHES_EACH):
        sample = simulator.take(EVENTS_PER_BATCH)
        batches.append(validated_table(sample.keys, sample.values, positions))
    seconds: dict[bool, list[float]] = {False: [], True: []}
    per_round = BATCHES_EACH // (ROUNDS // 2)
    with connect(database_url) as conn:
        for round_index in range(ROUNDS):
            enabled = round_index % 2 == 1
            _set_sum_triggers(database_url, enabled)
            for _ in range(per_round):
                table = batches.pop(0)
                started = time.perf_counter()
                write_batch(conn, table, topic=TOPIC, source=SOURCE_STREAM)
                seconds[enabled].append(time.perf_counter() - started)
    without, with_sums = statistics.median(seconds[False]), statistics.median(seconds[True])
    ratio = with_sums / without
    print(
        f"median write of a {EVENTS_PER_BATCH}-message batch over {len(seconds[True])} batches each: "
        f"without the sums' triggers {without * 1000:.2f} ms, with {with_sums * 1000:.2f} ms, ratio {ratio:.3f}; "
        f"p90 {statistics.quantiles(seconds[False], n=10)[-1] * 1000:.2f} ms vs "
        f"{statistics.quantiles(seconds[True], n=10)[-1] * 1000:.2f} ms"
    )
    assert ratio < MAX_RATIO
