"""The fault tests' servers, which they stop and start, and what every fault test checks after its fault.

After each fault: Bronze equals what Kafka holds (no loss, no duplicates, exact accounting);
after the next real dbt build, Gold's daily counts equal counts taken straight from Bronze,
and every Silver and Gold relation equals both a full refresh built elsewhere from the same
Bronze and the independent pandas reference (``dbt/reference_checks.py``). The servers are one
PostgreSQL and one Kafka in a SHOPSTREAM_HOME of their own, never the session's shared ones
(the fixtures handing them out are in this folder's conftest.py).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shopstream.kafka_server import EmbeddedKafka
from shopstream.postgres_server import EmbeddedPostgres
from shopstream_assets_tests.e2e.helpers import (
    CLI,
    Report,
    check_bronze_equals_delivered,
    check_gold_consistent,
    check_silver_and_gold_match,
    fetch,
    manifest_positions,
    read_topic,
    topic_message_count,
    wait_for,
)


def quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class FaultStack:
    """The fault tests' own servers, which they may stop and start."""

    home: Path
    postgres: EmbeddedPostgres
    kafka: EmbeddedKafka
    admin_url: str
    bootstrap: str

    def ensure_running(self) -> None:
        """Bring back whatever a failed test left stopped."""
        if self.postgres.pid() is None:
            self.postgres.start(progress=quiet)
        if self.kafka.pid() is None:
            self.kafka.start(progress=quiet)


def processes_under(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(home) in part for part in (process.info["cmdline"] or [])) and process.pid != os.getpid():
            found.append(process)
    return found


@dataclass(frozen=True)
class FaultCase:
    database_url: str
    reader_url: str
    topic: str
    env: dict[str, str]
    logs: Path
    dbt_target: Path


def committed_batches(database_url: str) -> int:
    try:
        return fetch(database_url, "select count(*) from bronze.ingest_batches")[0][0]
    except Exception:  # noqa: BLE001 -- PostgreSQL may be the thing that is down
        return -1


def log_text(case: FaultCase, name: str) -> str:
    path = case.logs / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def check_manifest(report: Report, case: FaultCase, manifest: Path, delivered: list[tuple[int, int, Any]]) -> None:
    positions, failed = manifest_positions(manifest)
    report.held("the producer lost no message (every send acknowledged)", failed == 0, f"{failed} failed")
    report.held(
        "the topic holds exactly the producer's acknowledged messages",
        positions == {(partition, offset) for partition, offset, _ in delivered},
        f"{len(positions)} acknowledged vs {len(delivered)} in the topic",
    )


def run_producer(spawn_process: Any, case: FaultCase, manifest: Path, *, rate: int, seed: int) -> Any:
    """`shopstream produce` until SIGTERM, so it is still sending whenever the (slow to start) stream is ready."""
    command = [
        *CLI, "produce", "--rate", str(rate), "--seed", str(seed),
        "--bad-ratio", "0.05", "--manifest", str(manifest), "--quiet",
    ]  # fmt: skip
    return spawn_process(command, env=case.env, name="producer")


def stop_producer(report: Report, case: FaultCase, producer: Any) -> None:
    os.killpg(producer.pid, signal.SIGTERM)  # flushes what it queued, then exits
    report.held("the producer flushed and stopped cleanly", producer.wait(120) == 0, log_text(case, "producer")[-1500:])


def consumed_messages(database_url: str) -> int:
    return fetch(database_url, "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches")[0][0]


def finish_and_check(
    report: Report, case: FaultCase, fault_stack: FaultStack, stream: Any, producer: Any | None, manifest: Path | None
) -> None:
    if producer is not None:
        stop_producer(report, case, producer)
    in_topic = topic_message_count(fault_stack.bootstrap, case.topic)
    wait_for(
        lambda: consumed_messages(case.database_url) >= in_topic,
        timeout=420,
        what=f"Bronze to account for the topic's {in_topic:,} messages",
        alive=stream,
    )
    # A clean stop: the stream runs without --until-idle here, so it cannot leave early while the
    # producer starts slowly on a busy machine. SIGTERM to the driver only: signalling the whole
    # group also stops Spark's JVM under the driver, whose spark.stop() then ends in a py4j error.
    os.kill(stream.pid, signal.SIGTERM)
    stream.wait(120)
    report.held("the stream stopped cleanly", stream.returncode == 0, log_text(case, "stream")[-3000:])
    delivered = read_topic(fault_stack.bootstrap, case.topic)
    if manifest is not None:
        check_manifest(report, case, manifest, delivered)
    state = check_bronze_equals_delivered(report, case.database_url, case.topic, delivered)
    report.note(
        f"{state.consumed:,} messages -> {state.rows_written:,} rows + {state.ledger_rejects:,} rejects"
        f" + {state.duplicates:,} duplicates in {state.batches} batches"
    )
    report.tried("ran the real dbt build of every model")
    check_gold_consistent(report, case.database_url, case.dbt_target)
    check_silver_and_gold_match(report, case.database_url, case.dbt_target.parent)
