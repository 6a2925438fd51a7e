"""Shared by the cluster tests: real local clusters (three KRaft nodes, a Spark standalone master and
worker) in a SHOPSTREAM_HOME of their own, started once per test session (``conftest.py``) beside the
session's PostgreSQL and stopped at the end whatever happens, and per test a fresh database and topic."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from shopstream import database
from shopstream.kafka_admin import ensure_topic
from shopstream.kafka_cluster import KafkaCluster
from shopstream.kafka_server import EmbeddedKafka
from shopstream.services import Endpoints
from shopstream.settings import Settings, load_settings
from shopstream.spark_cluster import SparkStandalone
from shopstream_assets_tests.conftest import TEST_PARTITIONS, make_test_home
from shopstream_assets_tests.e2e.helpers import fetch, wait_for
from streaming.migrations import migrate


def quiet(message: str) -> None:
    pass


def processes_under(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(home) in part for part in (process.info["cmdline"] or [])) and process.pid != os.getpid():
            found.append(process)
    return found


@contextmanager
def cluster_home(prefix: str) -> Iterator[tuple[Path, Settings]]:
    """A home outside pytest's basetemp (as the session's servers' is); every process left under it is
    killed and the folder removed at the end."""
    home = make_test_home(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        yield home, load_settings({"SHOPSTREAM_HOME": str(home)})
    finally:
        for process in processes_under(home):  # anything a failed stop left behind
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class ClusterStack:
    """A cluster test's servers: the session's PostgreSQL, a broker or a KRaft cluster, a Spark cluster or none."""

    admin_url: str
    reader_url: str
    kafka: EmbeddedKafka | KafkaCluster | None  # None: the session's own broker, not this stack's
    spark: SparkStandalone | None
    bootstrap: str
    master: str


@contextmanager
def cluster_stack(
    prefix: str, postgres: tuple[str, str], *, kafka_nodes: int = 3, bootstrap: str | None = None,
    spark_workers: int = 0,
) -> Iterator[ClusterStack]:  # fmt: skip
    """A KRaft cluster of ``kafka_nodes`` (or the given ``bootstrap``) and a Spark cluster of ``spark_workers``
    (or none), started in a home of their own (:func:`cluster_home`), stopped in reverse order."""
    with cluster_home(prefix) as (_, settings):
        kafka = None if bootstrap else KafkaCluster(settings, kafka_nodes)
        spark = SparkStandalone(settings, spark_workers) if spark_workers else None
        try:
            bootstrap = kafka.start(progress=quiet) if kafka else bootstrap
            assert bootstrap is not None
            master = spark.start(progress=quiet) if spark else "local[2]"
            yield ClusterStack(postgres[0], postgres[1], kafka, spark, bootstrap, master)
        finally:
            if spark:
                spark.stop(progress=quiet)
            if kafka:
                kafka.stop(progress=quiet)


@contextmanager
def stack_case(stack: ClusterStack, tmp_path: Path, *, prefix: str) -> Iterator[ClusterCase]:
    """:func:`cluster_case` on ``stack``, every node running and no earlier test's application on its master."""
    if stack.kafka is not None:
        stack.kafka.start(progress=quiet)  # whatever an earlier test left stopped
    if stack.spark is not None:
        spark = stack.spark
        wait_for(lambda: not spark.master_json().get("activeapps"), timeout=120, what="earlier applications to end")
    with cluster_case(
        stack.admin_url, stack.reader_url, stack.bootstrap, tmp_path, spark_master=stack.master,
        prefix=prefix,
    ) as made:  # fmt: skip
        yield made


@dataclass(frozen=True)
class ClusterCase:
    database_url: str
    topic: str
    env: dict[str, str]
    logs: Path


@contextmanager
def cluster_case(
    admin_url: str, reader_url: str, bootstrap: str, tmp_path: Path, *, spark_master: str, prefix: str
) -> Iterator[ClusterCase]:
    """A fresh database and topic on the stack's servers, and the env a `shopstream` child needs."""
    name = f"t_{prefix}_{uuid.uuid4().hex[:8]}"
    database.ensure_database(admin_url, name)
    database_url = database.with_database(admin_url, name)
    migrate(database_url)
    topic = f"t-{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, TEST_PARTITIONS)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update(Endpoints(database_url, database.with_database(reader_url, name), bootstrap).environment())
    env.update(
        {
            "SHOPSTREAM_HOME": str(make_test_home(tmp_path / "home")),
            "SHOPSTREAM_TOPIC": topic,
            "SHOPSTREAM_TOPIC_PARTITIONS": str(TEST_PARTITIONS),
            "SHOPSTREAM_SPARK_MASTER": spark_master,
        }
    )
    try:
        yield ClusterCase(database_url, topic, env, tmp_path / "logs")
    finally:
        database.drop_database(admin_url, name)


def committed_batches(database_url: str) -> int:
    return fetch(database_url, "select count(*) from bronze.ingest_batches")[0][0]


def consumed_messages(database_url: str) -> int:
    return fetch(database_url, "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches")[0][0]


def log_text(case: ClusterCase, name: str) -> str:
    path = case.logs / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""
