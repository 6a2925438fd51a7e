"""The fault tests' own PostgreSQL and Kafka (fault_stack.py), and a fresh database and topic on them per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopstream import database
from shopstream.kafka_admin import ensure_topic
from shopstream.kafka_server import EmbeddedKafka
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.services import Endpoints
from shopstream.settings import load_settings
from shopstream_assets_tests.conftest import TEST_PARTITIONS, make_test_home
from shopstream_assets_tests.e2e.fault_stack import FaultCase, FaultStack, processes_under, quiet
from streaming.migrations import migrate

FAULT_DATABASE = "t_fault_case"


# Once per worker, not per module: the fault tests of several modules share it (their
# `same_worker("fault_stack")` mark keeps them on one worker), each on a database and topic of its own.
@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    # Outside pytest's basetemp, as the session's servers are (conftest.session_home).
    home = make_test_home(Path(tempfile.mkdtemp(prefix="shopstream-e2e-faults-")))
    settings = load_settings({"SHOPSTREAM_HOME": str(home)})
    postgres, kafka = EmbeddedPostgres(settings), EmbeddedKafka(settings)
    try:
        admin_url = postgres.start(progress=quiet)
        bootstrap = kafka.start(progress=quiet)
        yield FaultStack(home, postgres, kafka, admin_url, bootstrap)
    finally:
        # Killed, not stopped: their data is deleted next, and a SIGTERM's grace (up to a minute each)
        # fell at the end of the worker's run, on the suite's wall clock.
        kafka.stop(progress=quiet, immediate=True)
        postgres.stop(progress=quiet, immediate=True)
        for process in processes_under(home):  # anything a failed stop left behind
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fault_case(fault_stack: FaultStack, tmp_path: Path) -> Iterator[FaultCase]:
    """A fresh database and topic on the fault servers, and the env a `shopstream` child needs."""
    fault_stack.ensure_running()
    # A fresh database per test, always under one name: the fault server is this worker's alone,
    # and dbt keys its parse on the database, so one parse serves every fault test's dbt build.
    name = FAULT_DATABASE
    database.drop_database(fault_stack.admin_url, name)  # what an interrupted test left
    database.ensure_database(fault_stack.admin_url, name)
    database_url = database.with_database(fault_stack.admin_url, name)
    migrate(database_url)
    reader_url = database.with_database(fault_stack.postgres.reader_url(), name)
    topic = f"t-fault-{uuid.uuid4().hex[:8]}"
    ensure_topic(fault_stack.bootstrap, topic, TEST_PARTITIONS)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update(Endpoints(database_url, reader_url, fault_stack.bootstrap).environment())
    env.update(
        {
            "SHOPSTREAM_HOME": str(make_test_home(tmp_path / "home")),
            "SHOPSTREAM_TOPIC": topic,
            "SHOPSTREAM_TOPIC_PARTITIONS": str(TEST_PARTITIONS),
            "SHOPSTREAM_SPARK_MASTER": "local[2]",
        }
    )
    yield FaultCase(database_url, reader_url, topic, env, tmp_path / "logs", tmp_path / "dbt-target")
    fault_stack.ensure_running()
    database.drop_database(fault_stack.admin_url, name)
