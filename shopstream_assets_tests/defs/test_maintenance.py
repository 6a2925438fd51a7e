"""Bounded history: Dagster's runs pruned by age (real runs on the PostgreSQL-backed instance, back-dated,
then the job), and the Bronze ledger rolled up by its hourly job while the sensor and the checks read it."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import Producer

from shopstream.database import connect
from shopstream.settings import Settings
from shopstream_assets.defs.maintenance import (
    LEDGER_ROLL_UP_JOB_NAME,
    PRUNE_JOB_NAME,
    LedgerRollUpConfig,
    PruneConfig,
    prune_old_runs,
    prune_postgres_logs,
    roll_up_old_ledger_rows,
)
from shopstream_assets.defs.streaming.sensors import SENSOR_NAME
from shopstream_assets_tests.conftest import TEST_PARTITIONS
from streaming import ledger
from streaming.bronze_load import KafkaPositions, write_messages
from streaming.producer import UNPACED_CLOCK_RATE
from streaming.simulator import Simulator

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


def test_the_same_job_prunes_what_the_sensor_and_the_checks_report_outside_runs(
    defs: dg.Definitions, dagster_instance: dg.DagsterInstance, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Bronze sensor's materializations and the checks' evaluations have no run: they go by age too,
    and the newest evaluation of each check stays whatever its age (the UI's current status)."""
    monkeypatch.setenv("SHOPSTREAM_DAGSTER_RETENTION_DAYS", "5")
    bronze = dg.AssetKey(["bronze", "clickstream_events"])

    def report(batch: int, passed: bool) -> None:
        dagster_instance.report_runless_asset_event(dg.AssetMaterialization(bronze, metadata={"batch": batch}))
        dagster_instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=bronze, check_name="row_count", passed=passed)
        )

    def stored() -> tuple[list[int], int]:
        with connect(database_url) as conn:
            events = conn.execute("select id from event_logs where run_id = '' order by id").fetchall()
            (checks,) = conn.execute("select count(*) from asset_check_executions").fetchone()
        return [event_id for (event_id,) in events], checks

    for batch in range(3):
        report(batch, passed=True)
    # A check evaluated only long ago: its one evaluation is its current status, and stays.
    dagster_instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=bronze, check_name="freshness", passed=True)
    )
    old_events, old_checks = stored()
    assert old_events and old_checks == 4
    with connect(database_url) as conn:  # the only way to age them: Dagster's own tables
        conn.execute("update event_logs set timestamp = timestamp - interval '6 days' where run_id = ''")
        conn.execute("update asset_check_executions set create_timestamp = create_timestamp - interval '6 days'")
    report(3, passed=False)

    result = defs.resolve_job_def(PRUNE_JOB_NAME).execute_in_process(instance=dagster_instance)
    assert result.success and result.output_for_node(prune_old_runs.name) == 0  # no run was old
    events_left, checks_left = stored()
    assert events_left and set(events_left).isdisjoint(old_events), (old_events, events_left)
    assert checks_left == 2  # row_count's newest (fresh) and freshness's only one (old); row_count's 3 old gone
    latest = dagster_instance.get_latest_materialization_event(bronze)
    assert latest is not None and latest.asset_materialization.metadata["batch"].value == 3
    with connect(database_url) as conn:
        kept = conn.execute("select check_name, execution_status from asset_check_executions order by id").fetchall()
    assert kept == [("freshness", "SUCCEEDED"), ("row_count", "FAILED")], kept


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


def _ingest(database_url: str, kafka_bootstrap: str, positions: KafkaPositions, seed: int, count: int) -> int:
    """``count`` simulator messages onto the broker and into Bronze as one batch at the offsets the broker gave."""
    batch = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE, bad_ratio=0.1).take(count)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, value in zip(batch.keys, batch.values, strict=True):
        producer.produce(positions.topic, value, key)
    assert producer.flush(30) == 0
    with connect(database_url) as conn:
        batch_id = write_messages(conn, batch.keys, batch.values, positions)
    assert batch_id is not None
    return batch_id


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=cursor)
    return defs.resolve_sensor_def(SENSOR_NAME).evaluate_tick(context)


def _materialized(result: dg.SensorResult) -> dict[str, object]:
    (materialization,) = result.asset_events
    return {name: value.value for name, value in materialization.metadata.items() if name != "last_committed_at"}


def _checks(defs: dg.Definitions) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("bronze_quality_checks").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def _figures(evaluation: dg.AssetCheckEvaluation) -> dict[str, object]:
    return {name: value.value for name, value in evaluation.metadata.items()}


def test_the_hourly_roll_up_leaves_the_sensor_the_checks_and_the_live_page_reading_the_same(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    process_env: Settings,
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream idle for longer than the keep age: its last hour of batches is rolled up, and the row
    check's window (the last hour of ingest) now spans rolled-up hours and kept rows."""
    monkeypatch.setenv("SHOPSTREAM_LEDGER_KEEP_DAYS", "3")
    positions = KafkaPositions(topic, partitions=TEST_PARTITIONS)
    batches = [_ingest(database_url, kafka_bootstrap, positions, seed, 150) for seed in range(31, 37)]
    with connect(database_url) as conn:
        # Four days ago, eight minutes apart: the span crosses a clock hour whatever the minute now.
        conn.execute(
            "update bronze.ingest_batches set committed_at = now() - interval '4 days'"
            " + (batch_id - %s) * interval '8 minutes', started_at = now() - interval '5 days'",
            (batches[0],),
        )
        # As if they had committed then: the running newest commit time too (the row check's window ends there).
        conn.execute(
            "update bronze.ingest_totals set last_batch_committed_at ="
            " (select max(committed_at) from bronze.ingest_batches) where kafka_topic = %s",
            (topic,),
        )
        totals = ledger.ingest_totals(conn, topic)
        newest_event_time = ledger.newest_event_time_through(conn, batches[-1])
        last_batches = ledger.last_batches(conn, topic, 1)

    sensor_before = _tick(defs, dagster_instance, None)
    checks_before = _checks(defs)
    assert checks_before["row_count"].passed and checks_before["consumer_lag"].passed
    # The window (the last hour of ingest) holds every batch: all forty minutes of them.
    assert _figures(checks_before["row_count"])["batches"] == len(batches)

    schedule = defs.resolve_schedule_def("roll_up_bronze_ledger_hourly")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.job_name == LEDGER_ROLL_UP_JOB_NAME
    job = defs.resolve_job_def(LEDGER_ROLL_UP_JOB_NAME)
    # Four days is within a keep age of five: nothing to fold.
    kept_age = job.execute_in_process(
        instance=dagster_instance,
        run_config=dg.RunConfig(ops={roll_up_old_ledger_rows.name: LedgerRollUpConfig(keep_days=5)}),
    )
    assert kept_age.output_for_node(roll_up_old_ledger_rows.name) == 0
    rolling = job.execute_in_process(instance=dagster_instance)  # SHOPSTREAM_LEDGER_KEEP_DAYS=3
    assert rolling.success
    rolled = rolling.output_for_node(roll_up_old_ledger_rows.name)
    with connect(database_url) as conn:
        kept = [row[0] for row in conn.execute("select batch_id from bronze.ingest_batches order by 1").fetchall()]
        (hours,) = conn.execute("select count(*) from bronze.ingest_batches_hourly").fetchone()
    assert batches[-1] in kept and rolled == len(batches) - len(kept) > 0 and hours >= 1
    assert job.execute_in_process(instance=dagster_instance).output_for_node(roll_up_old_ledger_rows.name) == 0

    # The sensor: the same range and figures from the start, nothing new at its cursor.
    sensor_after = _tick(defs, dagster_instance, None)
    assert _materialized(sensor_after) == _materialized(sensor_before)
    assert sensor_after.cursor == sensor_before.cursor == str(batches[-1])
    assert "no new batches" in _tick(defs, dagster_instance, sensor_after.cursor).skip_message
    # A cursor inside the rolled-up hours (a sensor stopped past the keep age) still sees the newest batch.
    behind = _tick(defs, dagster_instance, str(batches[0]))
    assert behind.cursor == str(batches[-1]) and _materialized(behind)["batches"] >= len(batches) - 1

    # The checks: the same rows against the same ledger sums over the same window.
    checks_after = _checks(defs)
    for name in ("row_count", "consumer_lag"):
        assert checks_after[name].passed, name
        assert _figures(checks_after[name]) == _figures(checks_before[name]), name
    # The Live page's reads.
    with connect(database_url) as conn:
        assert astuple(ledger.ingest_totals(conn, topic))[:-1] == astuple(totals)[:-1]  # all but the clock
        assert ledger.newest_event_time_through(conn, batches[-1]) == newest_event_time
        assert ledger.last_batches(conn, topic, 1) == last_batches

    # A row lost from a rolled-up batch inside the window is still seen.
    with connect(database_url) as conn:
        conn.execute(
            "delete from bronze.clickstream_events where event_id ="
            " (select min(event_id) from bronze.clickstream_events where batch_id = %s)",
            (batches[1],),
        )
    lost = _checks(defs)["row_count"]
    assert not lost.passed and lost.severity == dg.AssetCheckSeverity.ERROR

    # After a new batch the sensor sees exactly that one.
    newer = _ingest(database_url, kafka_bootstrap, positions, 40, 100)
    (request,) = _tick(defs, dagster_instance, sensor_after.cursor).run_requests
    assert request.run_key == f"bronze-{newer}-{newer}"
