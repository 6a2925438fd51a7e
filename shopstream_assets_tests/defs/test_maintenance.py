"""Dagster history pruned by age: real runs on the PostgreSQL-backed instance, back-dated, then the job."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from shopstream.database import connect
from shopstream.settings import Settings
from shopstream_assets.defs.maintenance import PRUNE_JOB_NAME, PruneConfig, prune_old_runs, prune_postgres_logs

LINE = "a line of this run's own output"


@dg.op
def say_something() -> None:
    print(LINE, flush=True)


@dg.job
def chatty() -> None:
    say_something()


def _compute_log_folder(instance: dg.DagsterInstance, run_id: str) -> Path:
    """Where the local compute log manager keeps a run's captured output (DAGSTER_HOME/storage/<run id>)."""
    return Path(instance.compute_log_manager.get_captured_local_path([run_id, "x"], "out")).parent


def _captured_output(instance: dg.DagsterInstance, run_id: str) -> str:
    folder = _compute_log_folder(instance, run_id)
    return "".join(path.read_text(errors="replace") for path in folder.rglob("*") if path.is_file())


def _back_date(database_url: str, run_id: str, days: int) -> None:
    """The run's creation time ``days`` earlier, in Dagster's own run table (the only way to age a run)."""
    with connect(database_url) as conn:
        updated = conn.execute(
            "update runs set create_timestamp = create_timestamp - make_interval(days => %s) where run_id = %s",
            (days, run_id),
        ).rowcount
    assert updated == 1


def _events(database_url: str, run_id: str) -> int:
    with connect(database_url) as conn:
        (count,) = conn.execute("select count(*) from event_logs where run_id = %s", (run_id,)).fetchone()
    return count


def test_the_daily_schedule_prunes_finished_runs_older_than_the_retention_age(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    process_env: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOPSTREAM_DAGSTER_RETENTION_DAYS", "5")
    runs = [chatty.execute_in_process(instance=dagster_instance).run_id for _ in range(4)]
    old, older, recent, fresh = runs
    for run_id in runs:
        assert _events(database_url, run_id) > 0
        assert LINE in _captured_output(dagster_instance, run_id)
    _back_date(database_url, old, 6)
    _back_date(database_url, older, 30)
    _back_date(database_url, recent, 4)
    # A run that has not finished is left alone however old it is: it is work still to happen.
    unfinished = dagster_instance.create_run_for_job(chatty, status=dg.DagsterRunStatus.NOT_STARTED)
    _back_date(database_url, unfinished.run_id, 60)

    schedule = defs.resolve_schedule_def("prune_dagster_history_daily")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == PRUNE_JOB_NAME
    pruning = defs.resolve_job_def(PRUNE_JOB_NAME).execute_in_process(instance=dagster_instance)

    assert pruning.success
    assert pruning.output_for_node(prune_old_runs.name) == 2
    for run_id in (old, older):
        assert dagster_instance.get_run_by_id(run_id) is None
        assert _events(database_url, run_id) == 0
        assert not _compute_log_folder(dagster_instance, run_id).exists()
    for run_id in (recent, fresh):
        assert dagster_instance.get_run_by_id(run_id) is not None
        assert _events(database_url, run_id) > 0
        assert _compute_log_folder(dagster_instance, run_id).exists()
    assert dagster_instance.get_run_by_id(unfinished.run_id) is not None

    # The age can be given per run, down to a day; the setting is read when the run starts.
    shorter = defs.resolve_job_def(PRUNE_JOB_NAME).execute_in_process(
        instance=dagster_instance, run_config=dg.RunConfig(ops={prune_old_runs.name: PruneConfig(older_than_days=1)})
    )
    assert shorter.output_for_node(prune_old_runs.name) == 1
    assert dagster_instance.get_run_by_id(recent) is None and dagster_instance.get_run_by_id(fresh) is not None


def test_a_wrong_retention_setting_fails_the_run_naming_it(
    defs: dg.Definitions, dagster_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPSTREAM_DAGSTER_RETENTION_DAYS", "0")
    result = defs.resolve_job_def(PRUNE_JOB_NAME).execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not result.success
    failures = {
        event.step_key: str(event.step_failure_data.error)
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.STEP_FAILURE
    }
    # Both steps read the settings; each failure names the variable to fix.
    assert prune_old_runs.name in failures
    assert all("SHOPSTREAM_DAGSTER_RETENTION_DAYS" in error for error in failures.values()), failures


def test_the_same_job_keeps_the_embedded_postgres_newest_rotated_logs(
    defs: dg.Definitions, dagster_instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL never deletes a rotated log file; the daily job keeps SHOPSTREAM_LOG_KEEP and the current one."""
    home = tmp_path / "embedded-home"
    server_logs = home / "logs" / "postgres"
    server_logs.mkdir(parents=True)
    names = [f"postgresql-20261201-0{hour}0000.log" for hour in range(6)]
    for name in names:
        (server_logs / name).write_text("a rotated server log\n")
    # The embedded server's settings: no SHOPSTREAM_DATABASE_URL (Dagster's own storage is already open).
    monkeypatch.delenv("SHOPSTREAM_DATABASE_URL")
    monkeypatch.setenv("SHOPSTREAM_HOME", str(home))
    monkeypatch.setenv("SHOPSTREAM_LOG_KEEP", "2")

    result = defs.resolve_job_def(PRUNE_JOB_NAME).execute_in_process(instance=dagster_instance)

    assert result.success and result.output_for_node(prune_postgres_logs.name) == 3
    assert sorted(path.name for path in server_logs.iterdir()) == names[-3:]
