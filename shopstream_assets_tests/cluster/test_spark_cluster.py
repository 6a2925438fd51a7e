"""`shopstream stream` on a Spark standalone cluster from pyspark's own distribution
(`services start --spark-workers N`): the executor JVM killed with `kill -9` mid-stream, the driver
killed with `kill -9` and restarted; and the Bronze replay asset (dagster-pyspark) run on the cluster.

The worker starts another executor and Spark retries the lost tasks; Bronze still holds every
message once (a row, a reject or a counted duplicate), by the same accounting as the e2e tests.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from shopstream.spark_cluster import SparkStandalone
from shopstream_assets_tests.cluster.clusters import (
    ClusterCase,
    ClusterStack,
    committed_batches,
    consumed_messages,
    log_text,
    stack_case,
)
from shopstream_assets_tests.e2e.helpers import (
    CLI,
    Report,
    check_bronze_equals_delivered,
    kill_group,
    read_topic,
    wait_for,
)
from shopstream_assets_tests.streaming.conftest import produce_messages
from streaming.simulator import Simulator

pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.same_worker, pytest.mark.timeout(600)]

STREAM_APP = "shopstream-bronze"
REPLAY_APP = "shopstream-dagster-replay"  # the asset's resource (defs/resources.py) names its session so


@pytest.fixture
def case(spark_cluster: ClusterStack, tmp_path: Path) -> Iterator[ClusterCase]:
    with stack_case(spark_cluster, tmp_path, prefix="spark") as made:
        yield made


def applications(spark: SparkStandalone, name: str = STREAM_APP) -> list[dict[str, Any]]:
    state = spark.master_json()
    return [app for app in state.get("activeapps", []) + state.get("completedapps", []) if app["name"] == name]


STREAM_ON_THE_CLUSTER = [*CLI, "stream", "--max-offsets-per-trigger", "3000"]


def busy(process: psutil.Process, window: float = 0.3) -> bool:
    """More than a third of a core in ``window`` seconds."""
    before = sum(process.cpu_times()[:2])
    time.sleep(window)
    return sum(process.cpu_times()[:2]) - before > window / 3


def stream_on_a_prefilled_topic(
    spark_cluster: ClusterStack,
    case: ClusterCase,
    spawn_process: Any,
    report: Report,
    *,
    total: int,
    seed: int,
    name: str,
) -> tuple[Any, set[str]]:
    """``total`` simulator messages (5% bad) in the case's topic, then `shopstream stream` on the cluster
    until its first batch commits: (the stream's process, the master's applications before it)."""
    batch = Simulator(seed=seed, bad_ratio=0.05).take(total)
    produce_messages(spark_cluster.bootstrap, case.topic, batch.values, keys=batch.keys)
    report.tried(f"pre-filled the topic with {total:,} messages (5% bad, duplicates included)")
    before_apps = {app["id"] for app in applications(spark_cluster.spark)}
    stream = spawn_process(STREAM_ON_THE_CLUSTER, env=case.env, name=name)
    wait_for(
        lambda: committed_batches(case.database_url) >= 1, timeout=300, what="a first committed batch", alive=stream
    )
    return stream, before_apps


def test_executor_killed_mid_stream_on_the_standalone_cluster(
    spark_cluster: ClusterStack, case: ClusterCase, spawn_process: Any
) -> None:
    report = Report("cluster: kill -9 of the executor JVM while `shopstream stream` runs on Spark standalone")
    total = 12_000
    stream, before_apps = stream_on_a_prefilled_topic(
        spark_cluster, case, spawn_process, report, total=total, seed=3202, name="stream"
    )
    executors = spark_cluster.spark.executor_pids()
    report.held("the stream's tasks run in an executor of the cluster's worker", len(executors) == 1, str(executors))
    victim = psutil.Process(executors[0])
    # Mid-batch: the executor busy (its tasks read Kafka and parse), not idle between two batches.
    wait_for(lambda: busy(victim), timeout=60, interval=0, what="the executor to run a batch's tasks")
    consumed_at_kill = consumed_messages(case.database_url)
    victim.kill()
    victim.wait(30)
    report.tried(f"kill -9 of executor pid {victim.pid} with {consumed_at_kill:,} of {total:,} messages in Bronze")
    report.held("the kill landed mid-stream", 0 < consumed_at_kill < total, f"{consumed_at_kill} of {total}")
    replacement = wait_for(
        lambda: [pid for pid in spark_cluster.spark.executor_pids() if pid != victim.pid],
        timeout=120,
        what="the worker to start another executor",
    )
    report.tried(f"the worker started executor pid {replacement[0]}")
    wait_for(lambda: "Lost task" in log_text(case, "stream"), timeout=60, what="the driver to retry the lost tasks")
    report.held("the driver saw tasks lost with the executor and retried them", "Lost task" in log_text(case, "stream"))
    wait_for(
        lambda: consumed_messages(case.database_url) >= total,
        timeout=300,
        what=f"Bronze to account for the topic's {total:,} messages",
        alive=stream,
    )
    report.held("the stream's driver survived the executor's loss", stream.poll() is None)
    new_apps = [app for app in applications(spark_cluster.spark) if app["id"] not in before_apps]
    report.held(
        "the master lists the stream's application, still running",
        [app["state"] for app in new_apps] == ["RUNNING"],
        str(new_apps),
    )
    os.kill(stream.pid, signal.SIGTERM)
    report.held("the stream stopped cleanly", stream.wait(120) == 0, log_text(case, "stream")[-3000:])
    delivered = read_topic(spark_cluster.bootstrap, case.topic)
    state = check_bronze_equals_delivered(report, case.database_url, case.topic, delivered)
    report.note(
        f"{state.consumed:,} messages -> {state.rows_written:,} rows + {state.ledger_rejects:,} rejects"
        f" + {state.duplicates:,} duplicates in {state.batches} batches"
    )
    report.finish()


def test_driver_killed_and_restarted_on_the_standalone_cluster(
    spark_cluster: ClusterStack, case: ClusterCase, spawn_process: Any
) -> None:
    report = Report("cluster: kill -9 of the stream's driver on Spark standalone, then a restart on its checkpoint")
    total = 9_000
    stream, before_apps = stream_on_a_prefilled_topic(
        spark_cluster, case, spawn_process, report, total=total, seed=3203, name="stream-killed"
    )
    executor = psutil.Process(wait_for(spark_cluster.spark.executor_pids, timeout=60, what="an executor")[0])
    wait_for(lambda: busy(executor), timeout=60, interval=0, what="the executor to run a batch's tasks")
    consumed_at_kill = consumed_messages(case.database_url)
    kill_group(stream)
    report.tried(f"kill -9 of the driver's process group with {consumed_at_kill:,} of {total:,} messages in Bronze")
    report.held("the kill landed mid-stream", 0 < consumed_at_kill < total, f"{consumed_at_kill} of {total}")
    wait_for(
        lambda: not {app["id"] for app in spark_cluster.spark.master_json().get("activeapps", [])} - before_apps,
        timeout=120,
        what="the master to see the dead driver's application end",
    )
    report.tried("the master ended the dead driver's application")
    restarted = spawn_process(STREAM_ON_THE_CLUSTER, env=case.env, name="stream")
    report.tried("restarted `shopstream stream` on the same checkpoint")
    wait_for(
        lambda: consumed_messages(case.database_url) >= total,
        timeout=300,
        what=f"Bronze to account for the topic's {total:,} messages",
        alive=restarted,
    )
    new_apps = [app for app in applications(spark_cluster.spark) if app["id"] not in before_apps]
    report.held(
        "the master lists both drivers' applications: the killed one ended, the new one running",
        sorted(app["state"] for app in new_apps) in (["FINISHED", "RUNNING"], ["KILLED", "RUNNING"]),
        str([(app["id"], app["state"]) for app in new_apps]),
    )
    os.kill(restarted.pid, signal.SIGTERM)
    report.held("the stream stopped cleanly", restarted.wait(120) == 0, log_text(case, "stream")[-3000:])
    delivered = read_topic(spark_cluster.bootstrap, case.topic)
    state = check_bronze_equals_delivered(report, case.database_url, case.topic, delivered)
    report.note(
        f"{state.consumed:,} messages -> {state.rows_written:,} rows + {state.ledger_rejects:,} rejects"
        f" + {state.duplicates:,} duplicates in {state.batches} batches"
    )
    report.finish()


def test_bronze_replay_asset_materialized_on_the_standalone_cluster(
    spark_cluster: ClusterStack, case: ClusterCase, spawn_process: Any
) -> None:
    """The dagster-pyspark asset `bronze/clickstream_events` with SHOPSTREAM_SPARK_MASTER set to the
    cluster's: its replay's tasks run in the worker's executor and Bronze accounts for every message."""
    report = Report("cluster: the Bronze replay asset materialized through Dagster on Spark standalone")
    total = 6_000
    batch = Simulator(seed=3205, bad_ratio=0.05).take(total)
    produce_messages(spark_cluster.bootstrap, case.topic, batch.values, keys=batch.keys)
    report.tried(f"pre-filled the topic with {total:,} messages (5% bad, duplicates included)")
    before_apps = {app["id"] for app in applications(spark_cluster.spark, REPLAY_APP)}
    result_path = case.logs.parent / "materialized.json"
    command = [sys.executable, "-m", "shopstream_assets_tests.cluster.materialize_bronze", str(result_path)]
    materializing = spawn_process(command, env=case.env, name="materialize")
    seen_executors = wait_for(
        spark_cluster.spark.executor_pids, timeout=300, what="an executor for the replay", alive=materializing
    )
    report.tried(f"`dagster.materialize` of bronze/clickstream_events; the worker started executor {seen_executors}")
    report.held("the materialization succeeded", materializing.wait(300) == 0, log_text(case, "materialize")[-3000:])
    outcome = json.loads(result_path.read_text())
    report.held("the asset's session ran on the cluster's master", outcome["spark_master"] == spark_cluster.master)
    metadata = outcome["metadata"]
    report.held("the asset replayed every message", metadata.get("messages") == total, str(metadata))
    report.held(
        "its metadata accounts for each: rows + rejects + duplicates",
        metadata.get("rows_written", 0) + metadata.get("rejects", 0) + metadata.get("duplicates", 0) == total,
        str(metadata),
    )
    new_apps = [app for app in applications(spark_cluster.spark, REPLAY_APP) if app["id"] not in before_apps]
    if report.held("the master lists the replay's application", len(new_apps) == 1, str(new_apps)):
        replay_app = new_apps[0]["id"]

        def ended() -> list[str]:
            completed = spark_cluster.spark.master_json().get("completedapps", [])
            return [app["state"] for app in completed if app["id"] == replay_app]

        wait_for(ended, timeout=120, what="the master to end the replay's application with its process")
        report.tried(f"the master ended application {replay_app} with its process: {ended()[0]}")
    delivered = read_topic(spark_cluster.bootstrap, case.topic)
    state = check_bronze_equals_delivered(report, case.database_url, case.topic, delivered)
    report.held("Bronze's rows are the asset's", state.rows_written == metadata.get("rows_written"), str(state))
    report.note(
        f"{state.consumed:,} messages -> {state.rows_written:,} rows + {state.ledger_rejects:,} rejects"
        f" + {state.duplicates:,} duplicates in {state.batches} batches"
    )
    report.finish()
