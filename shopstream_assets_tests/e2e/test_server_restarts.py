"""Faults with real processes: PostgreSQL, then the Kafka broker, stopped and started under a running
producer and stream. After each: the checks of fault_stack.finish_and_check (Bronze = Kafka, Gold = Bronze)."""

from __future__ import annotations

import time

import pytest

from shopstream_assets_tests.e2e.fault_stack import (
    FaultCase,
    FaultStack,
    committed_batches,
    finish_and_check,
    log_text,
    quiet,
    run_producer,
)
from shopstream_assets_tests.e2e.helpers import CLI, Report, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.same_worker("fault_stack"), pytest.mark.timeout(900)]

# Messages keep arriving through the outage at any rate; every check after it (the stream's
# batches, the dbt builds, the pandas reference) costs in proportion to what was sent.
RATE = 100


def test_postgresql_restarted_during_streaming(fault_stack: FaultStack, fault_case: FaultCase, spawn_process) -> None:
    report = Report("fault: PostgreSQL stopped and started while the producer sends and the stream writes")
    case = fault_case
    stream = spawn_process([*CLI, "stream"], env=case.env, name="stream")
    manifest = case.logs.parent / "manifest.jsonl"
    producer = run_producer(spawn_process, case, manifest, rate=RATE, seed=501)
    report.tried(f"`shopstream stream` and `shopstream produce --rate {RATE}` running")
    wait_for(lambda: committed_batches(case.database_url) >= 1, timeout=360, what="a committed batch", alive=stream)
    before = committed_batches(case.database_url)
    report.held("the producer was still sending when the fault hit", producer.poll() is None)
    fault_stack.postgres.stop(progress=quiet)
    stopped_at = time.monotonic()
    report.tried(f"pg_ctl stop -m fast after {before} committed batches")
    # Down until the stream has felt it (a batch's write failed and backs off), at least 6 s.
    wait_for(
        lambda: "retry" in log_text(case, "stream"), timeout=240, what="the stream to notice and retry", alive=stream
    )
    time.sleep(max(0.0, 6 - (time.monotonic() - stopped_at)))
    fault_stack.postgres.start(progress=quiet)
    report.tried(f"PostgreSQL started again after {time.monotonic() - stopped_at:.1f} s down")
    report.held("the stream process survived the outage", stream.poll() is None)
    report.held("the stream said so in its log", "retry" in log_text(case, "stream"))
    wait_for(
        lambda: committed_batches(case.database_url) > before, timeout=180, what="a batch committed after the restart"
    )
    after = committed_batches(case.database_url)
    report.held("batches commit again after the restart", after > before, f"{before} -> {after} batches")
    finish_and_check(report, case, fault_stack, stream, producer, manifest)
    report.finish()


def test_kafka_broker_restarted_while_producing_and_streaming(
    fault_stack: FaultStack, fault_case: FaultCase, spawn_process
) -> None:
    report = Report("fault: the Kafka broker stopped and started while producing and streaming")
    case = fault_case
    stream = spawn_process([*CLI, "stream"], env=case.env, name="stream")
    manifest = case.logs.parent / "manifest.jsonl"
    producer = run_producer(spawn_process, case, manifest, rate=RATE, seed=502)
    report.tried(f"`shopstream stream` and `shopstream produce --rate {RATE}` running")
    wait_for(lambda: committed_batches(case.database_url) >= 1, timeout=360, what="a committed batch", alive=stream)
    before = committed_batches(case.database_url)
    report.held("the producer was still sending when the fault hit", producer.poll() is None)
    fault_stack.kafka.stop(progress=quiet)
    stopped_at = time.monotonic()
    report.tried(f"stopped the broker (SIGTERM) after {before} committed batches")
    time.sleep(5)  # the outage itself; nothing is asserted on time
    fault_stack.kafka.start(progress=quiet)
    report.tried(f"broker started again after {time.monotonic() - stopped_at:.1f} s down")
    report.held("the stream process survived the outage", stream.poll() is None)
    report.held("the producer survived the outage", producer.poll() in (None, 0))
    wait_for(
        lambda: committed_batches(case.database_url) > before, timeout=240, what="a batch committed after the restart"
    )
    finish_and_check(report, case, fault_stack, stream, producer, manifest)
    report.finish()
