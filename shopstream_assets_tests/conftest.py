"""Real servers for the whole test session: one PostgreSQL and one Kafka broker.

``SHOPSTREAM_TEST_DATABASE_URL`` / ``SHOPSTREAM_TEST_KAFKA_BOOTSTRAP`` point the suite at
existing servers; otherwise it starts the embedded ones in a temporary SHOPSTREAM_HOME and
stops them when the session ends, pass or fail. Each test gets its own database and its
own topic, so no test depends on another's leftovers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from shopstream import database
from shopstream.kafka_admin import ensure_topic
from shopstream.kafka_server import EmbeddedKafka
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.processes import spawn, stop_group
from shopstream.services import Endpoints
from shopstream.settings import Settings, load_settings
from shopstream_assets.runtime.dagster_instance import (
    dbt_profile_environment,
    default_dbt_target_dir,
    prepare_dbt_manifest,
    write_instance_yaml,
)
from streaming.migrations import migrate
from streaming.producer import UNPACED_CLOCK_RATE, ClickstreamProducer, run
from streaming.simulator import Simulator

REPO_ROOT = Path(__file__).resolve().parents[1]
# Jars are resolved once into the developer's own home and shared by every test home.
SHARED_JARS = REPO_ROOT / ".shopstream" / "jars"
TEST_PARTITIONS = 6


# Fixtures that start a real server (or a JVM): a test that uses none of them runs in `make check`.
SERVER_FIXTURES = frozenset({"postgres_server", "kafka_bootstrap", "spark", "own_home", "fault_stack"})


def pytest_configure(config: pytest.Config) -> None:
    # Each xdist worker has servers of its own, so a dbt manifest of its own: the manifest's
    # fingerprint holds the database port, and two workers sharing dbt_project/target would
    # parse over each other while the other's Dagster processes read it.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and "DBT_TARGET_PATH" not in os.environ:
        os.environ["DBT_TARGET_PATH"] = str(REPO_ROOT / ".shopstream" / "test-dbt-target" / worker)
    # Every JVM the suite starts (Spark, Kafka, their tools) lives seconds to minutes on a few
    # thousand events: the C1 compiler alone serves it, and leaving out C2 saves much of what the
    # JVMs spend compiling (docs/performance.md). Most of the rest of a JVM's start is loading
    # classes, and verifying the bytecode of jars the project pins (pyspark's, Kafka's) is work
    # repeated in every JVM for nothing a test checks. Inherited by every subprocess, whatever
    # SHOPSTREAM_* variables a test clears; the benchmarks a user runs keep the JVM's defaults.
    java_options = os.environ.get("JAVA_TOOL_OPTIONS", "")
    if "TieredStopAtLevel" not in java_options:
        java_options += " -XX:TieredStopAtLevel=1"
    if "BytecodeVerificationRemote" not in java_options:
        java_options += " -XX:+UnlockDiagnosticVMOptions -XX:-BytecodeVerificationRemote"
    os.environ["JAVA_TOOL_OPTIONS"] = java_options.strip()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    items[:] = slow_tests_first_on_each_worker(items, workers)


# What each long test takes in a fresh-clone `make test` (3 workers on 2 cores; about the mean of
# the two latest such runs), to share them out evenly; a slow-marked test missing here (new or
# renamed) counts as DEFAULT_SLOW_SECONDS.
EXPECTED_SECONDS = {
    "test_up_runs_the_pipeline_and_ctrl_c_leaves_no_process": 145,
    "test_gold_equals_pandas_and_incremental_equals_full_refresh": 75,
    "test_code_server_serves_an_on_demand_replay_and_the_sensor_refresh": 100,
    "test_a_gigabyte_of_rejects_between_good_events_drains_with_the_defaults": 98,
    "test_stream_sensor_dbt_loop_and_ui_materialization": 95,
    "test_kill_9_mid_stream_then_restart_equals_an_uninterrupted_run": 85,
    "test_kill_9_while_a_batch_is_in_its_postgresql_transaction": 88,
    "test_a_short_bench_ingest_prints_its_five_figures": 88,
    "test_a_short_e2e_run_prints_its_line_and_writes_the_report": 75,
    "test_benchmark_small": 85,
    "test_driver_killed_and_restarted_on_the_standalone_cluster": 80,
    "test_partition_leader_killed_and_restarted_while_producing_and_streaming": 72,
    "test_executor_killed_mid_stream_on_the_standalone_cluster": 68,
    "test_bronze_replay_asset_materialized_on_the_standalone_cluster": 68,
    "test_failed_dbt_run_is_made_good_by_the_next_ticks_run": 52,
    "test_postgresql_restarted_during_streaming": 53,
    "test_kafka_broker_restarted_while_producing_and_streaming": 53,
    "test_a_short_bench_freshness_measures_every_event_into_gold": 55,
    "test_dashboard_database_stopped_mid_session_then_back": 35,
    # Below the 55 s of the fifteenth slowest in the latest fresh-clone run: earlier runs' figures.
    "test_start_status_stop_a_three_node_kafka_and_a_spark_cluster": 55,
    "test_hostile_messages_never_crash_and_are_all_accounted_for": 50,
    "test_live_page_and_status_line_lag_across_brokers_and_with_one_down": 45,
    "test_failed_dbt_run_is_retried_on_the_next_tick_when_no_new_batch_lands": 35,
    # The module's three-broker cluster starts in this first test's set-up.
    "test_topics_on_three_nodes_have_three_replicas_two_in_sync": 40,
    "test_fuzz_run_through_a_real_topic_and_stream": 33,
    "test_a_short_bench_dashboard_times_every_query_and_page": 30,
    # Not yet timed in a fresh-clone run: estimates from runs alone.
    "test_producer_stream_and_lag_check_run_with_scram_credentials": 40,
    "test_the_readme_commands_print_and_leave_no_password": 40,
    "test_a_client_without_credentials_or_with_a_wrong_password_is_refused": 15,
    "test_benchmark_short_run": 15,
}
DEFAULT_SLOW_SECONDS = 60


def expected_seconds(item: pytest.Item) -> float:
    """A long test's expected duration; 0 for the others."""
    name = getattr(item, "originalname", None) or item.name
    if name in EXPECTED_SECONDS:
        return EXPECTED_SECONDS[name]
    return DEFAULT_SLOW_SECONDS if item.get_closest_marker("slow") else 0


def same_worker_key(item: pytest.Item) -> object:
    """What ties a long test to others on one worker: its ``same_worker`` group (the mark's argument,
    or its module), or nothing but itself."""
    marker = item.get_closest_marker("same_worker")
    if marker is None:
        return item
    if marker.args:
        return marker.args[0]
    return item.module.__name__ if item.module else item


def slow_tests_first_on_each_worker(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` ordered so that each xdist worker starts with an even share of the long tests.

    pytest-xdist's worksteal scheduler hands worker k the k-th contiguous slice of the
    collection and lets an idle worker steal from the END of the longest queue: with every
    long test at the front of the collection, the first worker kept them all and ran them one
    after another while the others finished early. The long tests, longest first, each go to
    the head of the slice of the worker with the least expected time so far, so they run side
    by side in even shares and the run ends on short ones; a ``same_worker`` group's go
    together. Otherwise the collection's order holds (a module's tests stay together).
    """
    long_tests = [item for item in items if expected_seconds(item)]
    fast = [item for item in items if not expected_seconds(item)]
    if workers <= 1:
        return long_tests + fast  # in collection order: a module's tests keep their module-scoped servers
    # A unit is one test, or a `same_worker` group's long tests together (they share its servers).
    units: dict[object, list[pytest.Item]] = {}
    for item in long_tests:
        units.setdefault(same_worker_key(item), []).append(item)
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for unit in sorted(units.values(), key=lambda tests: sum(map(expected_seconds, tests)), reverse=True):
        least = loads.index(min(loads))
        heads[least] += unit
        loads[least] += sum(map(expected_seconds, unit))
    ordered: list[pytest.Item] = []
    remaining = len(items)
    for worker in range(workers):
        slice_size = remaining // (workers - worker)  # the scheduler's own split
        remaining -= slice_size
        fill = max(0, slice_size - len(heads[worker]))
        ordered += heads[worker] + fast[:fill]
        del fast[:fill]
    return ordered + fast


def make_test_home(path: Path) -> Path:
    """A SHOPSTREAM_HOME whose jars folder is the shared, already-resolved one."""
    path.mkdir(parents=True, exist_ok=True)
    SHARED_JARS.mkdir(parents=True, exist_ok=True)
    jars = path / "jars"
    if not jars.exists():
        jars.symlink_to(SHARED_JARS, target_is_directory=True)
    return path


# A session's end once hung ~120 s in one worker's last teardown, in a different test each run.
SLOW_TEARDOWN_S = 10


@contextmanager
def timed_teardown(what: str) -> Iterator[None]:
    """Say (a warning in the run's summary) when stopping ``what`` takes longer than it should."""
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    if elapsed > SLOW_TEARDOWN_S:
        warnings.warn(f"stopping {what} took {elapsed:.0f} s", stacklevel=1)


@pytest.fixture(scope="session")
def session_home() -> Iterator[Path]:
    # Not under pytest's basetemp: pytest prunes old basetemps when another session starts,
    # which would pull the data folder from under a server that is still running.
    home = Path(tempfile.mkdtemp(prefix="shopstream-test-home-"))
    yield make_test_home(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(session_home: Path) -> Iterator[tuple[str, str]]:
    """(owner URL, read-only URL) of the session's PostgreSQL: a given one, or an embedded one stopped at the end."""
    given = os.environ.get("SHOPSTREAM_TEST_DATABASE_URL")
    if given:
        yield given, given
        return
    postgres = EmbeddedPostgres(load_settings({"SHOPSTREAM_HOME": str(session_home)}))
    try:
        yield postgres.start(progress=lambda message: None), postgres.reader_url()
    finally:
        with timed_teardown("the session's PostgreSQL"):
            postgres.stop(progress=lambda message: None, immediate=True)  # its data is deleted next


@pytest.fixture(scope="session")
def kafka_bootstrap(session_home: Path) -> Iterator[str]:
    """The session's Kafka broker: a given one, or an embedded one stopped at the end."""
    given = os.environ.get("SHOPSTREAM_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    kafka = EmbeddedKafka(load_settings({"SHOPSTREAM_HOME": str(session_home)}))
    try:
        yield kafka.start(progress=lambda message: None)
    finally:
        with timed_teardown("the session's Kafka broker"):
            kafka.stop(progress=lambda message: None, immediate=True)  # its data is deleted next


@pytest.fixture(scope="session")
def servers(postgres_server: tuple[str, str], kafka_bootstrap: str) -> Endpoints:
    return Endpoints(postgres_server[0], postgres_server[1], kafka_bootstrap)


@pytest.fixture(scope="session")
def admin_database_url(postgres_server: tuple[str, str]) -> str:
    return postgres_server[0]


def _slug(request: pytest.FixtureRequest, limit: int) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    return f"{name[:limit]}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, admin_database_url: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own on the session's server."""
    name = "t_" + _slug(request, 40)
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    migrate(url)
    yield url
    database.drop_database(admin_database_url, name)


@pytest.fixture
def dashboard_database_url(database_url: str, postgres_server: tuple[str, str]) -> str:
    """The read-only role's URL for this test's database."""
    return database.with_database(postgres_server[1], database.url_parts(database_url).database)


@pytest.fixture
def topic(request: pytest.FixtureRequest, kafka_bootstrap: str) -> str:
    """A fresh topic of this test's own, created with the default partition count."""
    name = "t-" + _slug(request, 60).replace("_", "-")
    ensure_topic(kafka_bootstrap, name, TEST_PARTITIONS)
    return name


@pytest.fixture
def own_home() -> Iterator[Path]:
    """A SHOPSTREAM_HOME whose own servers the test starts (`services start`, `up`); all stopped at the end."""
    from shopstream_assets_tests.ground.own_servers import own_servers_home

    # Not under pytest's basetemp, for the reason session_home gives, and because a pytest
    # session starting meanwhile makes basetemp's root 0700 again: the embedded PostgreSQL's
    # own system user could then no longer reach its data folder.
    scratch = Path(tempfile.mkdtemp(prefix="shopstream-own-home-"))
    try:
        with own_servers_home(scratch / "own-home") as home:
            yield home
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def test_home(tmp_path: Path) -> Path:
    """A SHOPSTREAM_HOME of this test's own (checkpoints, logs), sharing the resolved jars."""
    return make_test_home(tmp_path / "home")


@pytest.fixture
def shopstream_env(
    test_home: Path, database_url: str, dashboard_database_url: str, kafka_bootstrap: str, topic: str
) -> dict[str, str]:
    """The environment a `shopstream` subprocess needs to use this test's database and topic."""
    endpoints = Endpoints(database_url, dashboard_database_url, kafka_bootstrap)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update(endpoints.environment())
    env.update(
        {
            "SHOPSTREAM_HOME": str(test_home),
            "SHOPSTREAM_TOPIC": topic,
            "SHOPSTREAM_TOPIC_PARTITIONS": str(TEST_PARTITIONS),
            "SHOPSTREAM_SPARK_MASTER": "local[2]",
        }
    )
    return env


Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn_process(tmp_path: Path) -> Iterator[Spawn]:
    """Start processes that are stopped (whole process group) when the test ends, pass or fail."""
    children: list[subprocess.Popen[bytes]] = []

    def start(
        command: Sequence[str], env: Mapping[str, str] | None = None, name: str = "child"
    ) -> subprocess.Popen[bytes]:
        process = spawn(command, env=env, log_path=tmp_path / "logs" / f"{name}.log", cwd=REPO_ROOT)
        children.append(process)
        return process

    yield start
    for child in children:
        stop_group(child, timeout=20)


@pytest.fixture(scope="session")
def spark(session_home: Path) -> Iterator[object]:
    """ONE local[2] SparkSession (with the Kafka connector) for every in-process test of the suite.

    A session is seconds to start and most of a gigabyte while it runs; the Bronze asset's resource reuses
    it too. Subprocess tests (`shopstream stream`) start their own JVM.
    """
    from streaming.spark_session import build_spark_session

    session = build_spark_session(
        load_settings({"SHOPSTREAM_HOME": str(session_home)}), master="local[2]", app_name="shopstream-tests"
    )
    yield session
    with timed_teardown("the session's SparkSession"):
        session.stop()


# The Dagster code location's fixtures (defs/ and runtime/ tests): the manifest, the definitions,
# a PostgreSQL-backed instance of each test's own, events on a topic.


@pytest.fixture(scope="session")
def dbt_manifest(servers: Endpoints) -> Path:
    """dbt_project/target/manifest.json, parsed as `shopstream up` does before Dagster starts."""
    return prepare_dbt_manifest(
        dbt_profile_environment(servers), default_dbt_target_dir(), progress=lambda message: None
    )


@pytest.fixture(scope="session")
def defs(dbt_manifest: Path) -> dg.Definitions:
    from shopstream_assets.definitions import defs as load_defs

    return load_defs()


@pytest.fixture
def process_env(shopstream_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's SHOPSTREAM_* variables in os.environ: resources resolve endpoints from them."""
    for name, value in shopstream_env.items():
        if name.startswith("SHOPSTREAM_"):
            monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def dagster_instance(process_env: Settings, database_url: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance from our dagster.yaml, its storage in this test's own database."""
    home = write_instance_yaml(process_env.dagster_home, database.url_parts(database_url).database).parent
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def produce_events(kafka_bootstrap: str, topic: str, count: int, *, seed: int = 7, bad_ratio: float = 0.0) -> int:
    """``count`` simulator messages through the real producer, unpaced; returns those delivered."""
    simulator = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE, bad_ratio=bad_ratio)
    result = run(simulator, ClickstreamProducer(kafka_bootstrap, topic), paced=False, events=count)
    assert result.counts.failed == 0 and result.pending == 0, result
    return result.counts.delivered
