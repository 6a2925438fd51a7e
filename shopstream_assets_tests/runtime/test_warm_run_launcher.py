"""The warm run launcher with real runs on a real instance: runs forked from one warm worker, a
fresh worker once the code it loaded changed, and a cancelled run that stops."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from shopstream.database import connect
from shopstream.services import Endpoints
from shopstream.settings import Settings
from shopstream_assets.defs.dbt.project import DBT_TIMING_TAG_PREFIX
from shopstream_assets.defs.streaming.sensors import refresh_silver_gold_job
from shopstream_assets.runtime.dagster_instance import REPO_ROOT, dbt_profile_environment, prepare_dbt_manifest
from shopstream_assets.runtime.dagster_private import LaunchRunContext, ReconstructableRepository, WorkerStatus
from shopstream_assets.runtime.warm_run_launcher import PID_TAG, WarmRunLauncher
from shopstream_assets_tests.waiting import wait_until

RUN_TIMEOUT_S = 240
# PostgreSQL's backends report their statistics at most about once a second.
STATS_FLUSH_S = 2


@pytest.fixture
def launcher(
    dagster_instance: dg.DagsterInstance,
    process_env: Settings,
    dbt_manifest: Path,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[WarmRunLauncher]:
    """The instance's launcher; its warm worker sees this test's instance and a dbt project
    parsed for this test's database, as `shopstream up` prepares it."""
    target = tmp_path / "dbt-target"
    prepare_dbt_manifest(
        dbt_profile_environment(Endpoints(database_url, database_url, "unused:9092")), target, progress=lambda m: None
    )
    monkeypatch.setenv("DBT_TARGET_PATH", str(target))
    monkeypatch.setenv("DAGSTER_HOME", str(process_env.dagster_home.resolve()))
    launcher = dagster_instance.run_launcher
    assert isinstance(launcher, WarmRunLauncher)
    try:
        yield launcher
    finally:
        launcher.dispose()


def _launch(instance: dg.DagsterInstance, launcher: WarmRunLauncher) -> str:
    repository = ReconstructableRepository.for_module(
        "shopstream_assets.definitions", "defs", working_directory=str(REPO_ROOT)
    )
    job = repository.get_reconstructable_job(refresh_silver_gold_job.name)
    run = instance.create_run_for_job(job_def=job.get_definition(), job_code_origin=job.get_python_origin())
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return run.run_id


def _wait_for(instance: dg.DagsterInstance, run_id: str, statuses: set[dg.DagsterRunStatus]) -> dg.DagsterRun:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in statuses:
            return run
        time.sleep(0.5)
    pytest.fail(f"run {run_id} never reached {statuses}: {run.status if run else 'missing'}")


def _warm_worker_pid(instance: dg.DagsterInstance, run_id: str) -> str:
    messages = [
        record.event_log_entry.dagster_event.message or ""
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    ]
    forked = [message for message in messages if "from the warm worker" in message]
    assert len(forked) == 1, messages
    forked = forked[0]
    return forked.rsplit("(pid ", 1)[1].rstrip(").")


def test_runs_fork_from_a_warm_worker_that_steps_aside_for_new_code_and_can_be_cancelled(
    dagster_instance: dg.DagsterInstance, launcher: WarmRunLauncher, database_url: str
) -> None:
    """The cancel comes once PostgreSQL shows the run's dbt connection waiting on the lock the
    test holds (a fixed pause could cancel the run before dbt started, an earlier path), and the
    worker must be gone before the lock is released. A cancel that reaches dbt only once it
    returns (the interrupt left to Dagster's safe points, not raised in dbt as KeyboardInterrupt)
    fails here: the run stays CANCELING, its worker blocked in dbt (tried)."""
    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    first = _launch(dagster_instance, launcher)
    second = _launch(dagster_instance, launcher)
    for run_id in (first, second):
        run = _wait_for(dagster_instance, run_id, finished)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert int(run.tags[PID_TAG]) != os.getpid()
        # dbt ran in the forked worker on the project parsed beforehand, no parse of its own.
        assert run.tags[f"{DBT_TIMING_TAG_PREFIX}manifest_reused"] == "true"
    assert _warm_worker_pid(dagster_instance, first) == _warm_worker_pid(dagster_instance, second)
    with connect(database_url) as conn:
        assert conn.execute("select to_regclass('gold.mart_daily_metrics')").fetchone()[0] is not None

    # The code location changed under the warm worker (here its dbt manifest): a fresh one runs.
    manifest = Path(os.environ["DBT_TARGET_PATH"]) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes())
    os.utime(manifest, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    third = _launch(dagster_instance, launcher)
    assert _wait_for(dagster_instance, third, finished).status == dg.DagsterRunStatus.SUCCESS
    assert _warm_worker_pid(dagster_instance, third) != _warm_worker_pid(dagster_instance, first)

    # A run stuck on a lock is cancelled as from the UI: it ends CANCELED, its worker gone.
    with connect(database_url) as blocker, connect(database_url, autocommit=True) as observer:
        blocker.execute("lock table gold.mart_daily_metrics in access exclusive mode")
        stuck = _launch(dagster_instance, launcher)
        _wait_for(dagster_instance, stuck, {dg.DagsterRunStatus.STARTED})
        dbt_waiting_on_the_lock = (
            "select count(*) from pg_stat_activity where datname = current_database() and application_name = 'dbt'"
            " and wait_event_type = 'Lock' and %s = any(pg_blocking_pids(pid))"
        )

        def in_the_dbt_step_waiting_on_the_lock() -> bool:
            run = dagster_instance.get_run_by_id(stuck)
            assert run is not None and run.status not in finished, f"the run ended before it met the lock: {run}"
            return observer.execute(dbt_waiting_on_the_lock, (blocker.info.backend_pid,)).fetchone()[0] > 0

        wait_until(in_the_dbt_step_waiting_on_the_lock, what="the run's dbt step waiting on the lock", interval=0.2)
        assert launcher.terminate(stuck)
        cancelled = _wait_for(dagster_instance, stuck, finished)
        assert cancelled.status == dg.DagsterRunStatus.CANCELED
        # Gone while the lock is still held: a worker left blocked in dbt would finish once released.
        wait_until(
            lambda: launcher.check_run_worker_health(cancelled).status != WorkerStatus.RUNNING,
            what="the cancelled run's worker gone while the lock is still held",
            interval=0.2,
        )
        blocker.rollback()


def _sessions(database_url: str) -> int:
    """Connections ever opened to this test's database (Dagster's storage and dbt's share it)."""
    with connect(database_url) as conn:
        return conn.execute("select sessions from pg_stat_database where datname = current_database()").fetchone()[0]


def test_a_forked_run_worker_keeps_its_storage_connections_open(
    dagster_instance: dg.DagsterInstance, launcher: WarmRunLauncher, database_url: str
) -> None:
    """dagster-postgres opens a connection per query unless told otherwise, and a refresh's run
    worker made one for each of its hundreds of queries, each a TCP connect and a SCRAM handshake
    (docs/performance.md has the count). Forked from the warm worker, it keeps one open."""
    from shopstream_assets.runtime.dagster_private import optimize_storage_connections

    # This test's own polling must not count: its instance keeps one connection too.
    optimize_storage_connections(dagster_instance, statement_timeout=0, pool_recycle=3600, max_overflow=2)
    warm_up = _launch(dagster_instance, launcher)  # starts the warm worker, whose own start is not measured
    assert _wait_for(dagster_instance, warm_up, {dg.DagsterRunStatus.SUCCESS}).status == dg.DagsterRunStatus.SUCCESS

    before = _sessions(database_url)
    run_id = _launch(dagster_instance, launcher)
    run = _wait_for(dagster_instance, run_id, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
    assert run.status == dg.DagsterRunStatus.SUCCESS
    wait_until(
        lambda: launcher.check_run_worker_health(run).status != WorkerStatus.RUNNING,
        what="the run worker gone (its connections closed)",
        interval=0.2,
    )
    time.sleep(STATS_FLUSH_S)
    opened = _sessions(database_url) - before - 1  # less the one _sessions itself opened
    # dbt's own, the worker's pooled one and those its threads open beside it, the launcher's:
    # well under half of what one connection per query made (docs/performance.md).
    assert opened <= 100, f"the run opened {opened} connections"
