"""The whole loop through real Dagster processes: stream -> Bronze -> sensor -> dbt -> Gold, and a
Gold materialization launched through the webserver's GraphQL API as the UI's button does, on the
fast run path; and a sensor-driven refresh on Dagster's stock run path (SHOPSTREAM_FAST_RUNS=0).

Once each loop has caught up, every Silver and Gold relation the sensor's runs built equals a full
refresh built elsewhere from the same Bronze and the independent pandas reference
(``dbt/reference_checks.py``). Tried with mart_product_daily left out of incremental updates (then
reverted): the loop test fails before that comparison, when the UI-launched run's dbt checks
(assert_revenue_reconciles, assert_segments_reconcile_with_daily_marts) fail; the same break fails
both comparisons in ``e2e/test_dbt_fault.py``."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from shopstream import database
from shopstream.database import connect
from shopstream.embedded import free_port
from shopstream.processes import stop_group
from shopstream.services import Endpoints
from shopstream.settings import Settings, load_settings
from shopstream_assets.defs.dbt.project import DBT_TIMING_TAG_PREFIX
from shopstream_assets.defs.streaming.sensors import BATCH_RANGE_TAG, SENSOR_NAME
from shopstream_assets.runtime.dagster_instance import (
    daemon_command,
    dagster_environment,
    dbt_profile_environment,
    dbt_target_dir,
    prepare_dbt_manifest,
    webserver_command,
    webserver_url,
    write_instance_yaml,
)
from shopstream_assets.runtime.warm_run_launcher import PID_TAG
from shopstream_assets_tests.conftest import produce_events
from shopstream_assets_tests.dbt.reference_checks import assert_silver_and_gold_match
from streaming.job import replay_topic

DAILY_METRICS = dg.AssetKey(["gold", "mart_daily_metrics"])
STAGING = dg.AssetKey(["silver", "stg_clickstream_events"])
# Generous: on the shared 2-core box the Spark stream alone has taken 3 minutes to commit its
# first batch. The timeout only bounds a failing run; a passing one returns as soon as it can.
LOOP_TIMEOUT_S = 420
STREAM = "import typer; from streaming.stream_command import stream_command; typer.run(stream_command)"

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
LOCATIONS = "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus } } } }"
RUN_STATUS = "query Run($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert "errors" not in payload, payload
    return payload["data"]


def _wait(what: str, condition: Callable[[], Any], timeout: float, logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for log in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def _sensor_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME})))


def _launch_to_success_s(instance: dg.DagsterInstance, record: dg.RunRecord) -> float:
    """From the daemon launching the run (RUN_STARTING) to its end: the run path's cost per refresh."""
    (starting,) = instance.get_records_for_run(
        record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING
    ).records
    assert record.end_time is not None
    return record.end_time - starting.event_log_entry.timestamp


def _dbt_step_span(instance: dg.DagsterInstance, record: dg.RunRecord) -> tuple[float, float]:
    """When the run's dbt step started and ended: the span it held the dbt pool's slot."""
    events = instance.get_records_for_run(
        record.dagster_run.run_id,
        of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE},
    ).records
    at = {entry.event_log_entry.dagster_event.event_type: entry.event_log_entry.timestamp for entry in events}
    end = at.get(dg.DagsterEventType.STEP_SUCCESS, at.get(dg.DagsterEventType.STEP_FAILURE))
    assert dg.DagsterEventType.STEP_START in at and end is not None, f"run {record.dagster_run.run_id}: {at}"
    return at[dg.DagsterEventType.STEP_START], end


def _gold_events(database_url: str) -> int:
    with connect(database_url) as conn:
        exists = conn.execute("select to_regclass('gold.mart_daily_metrics')").fetchone()[0]
        if exists is None:
            return 0
        return conn.execute("select coalesce(sum(events), 0) from gold.mart_daily_metrics").fetchone()[0]


def _caught_up(instance: dg.DagsterInstance, database_url: str) -> bool:
    """Every committed Bronze batch is in the range of a successful sensor run, and no sensor run is
    still to finish: the pipeline will not touch Silver or Gold again until a new batch lands."""
    runs = _sensor_runs(instance)
    if not runs or any(not record.dagster_run.is_finished for record in runs):
        return False
    last_batches = [
        record.dagster_run.tags.get(BATCH_RANGE_TAG, "").rpartition("-")[2]
        for record in runs
        if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    ]
    folded_in = max((int(last) for last in last_batches if last.isdigit()), default=0)
    with connect(database_url) as conn:
        (newest_batch,) = conn.execute("select coalesce(max(batch_id), 0) from bronze.ingest_batches").fetchone()
    return folded_in >= newest_batch > 0


def _prepared_dagster_environment(
    process_env: Settings, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, **extra: str
) -> dict[str, str]:
    """What `shopstream up` does before starting Dagster (the manifest for this database), and the
    environment its Dagster processes get, with ``extra`` variables on top."""
    found = Endpoints(database_url, shopstream_env["SHOPSTREAM_DASHBOARD_DATABASE_URL"], kafka_bootstrap)
    prepare_dbt_manifest(dbt_profile_environment(found), dbt_target_dir(process_env), progress=lambda message: None)
    # A tick a second (the daemon's sensor loop follows, see run_daemon): each sensor cycle then
    # starts seconds sooner than at the default 5 s.
    return dagster_environment(process_env, found, base={**shopstream_env, "SHOPSTREAM_SENSOR_INTERVAL": "1", **extra})


def _wait_for_gold_after_a_successful_run(
    what: str, instance: dg.DagsterInstance, database_url: str, logs: Path
) -> int:
    """Gold's event count, once a sensor-launched run has succeeded and Gold holds rows."""
    return _wait(
        what,
        lambda: (
            _gold_events(database_url)
            if any(record.dagster_run.status == dg.DagsterRunStatus.SUCCESS for record in _sensor_runs(instance))
            else 0
        ),
        LOOP_TIMEOUT_S,
        logs,
    )


@pytest.mark.slow
def test_stream_sensor_dbt_loop_and_ui_materialization(
    process_env: Settings,
    shopstream_env: dict[str, str],
    database_url: str,
    kafka_bootstrap: str,
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
    spawn_process: Callable[..., Any],
) -> None:
    env = _prepared_dagster_environment(
        process_env, shopstream_env, database_url, kafka_bootstrap, SHOPSTREAM_DAGSTER_PORT=str(free_port())
    )
    settings = load_settings(env)
    logs = tmp_path / "logs"

    spawn_process(daemon_command(), env=env, name="dagster-daemon")
    spawn_process(webserver_command(settings), env=env, name="dagster-webserver")
    stream = spawn_process([sys.executable, "-c", STREAM], env=env, name="stream")
    producer = spawn_process(
        [
            sys.executable,
            "-m",
            "streaming.produce_command",
            "--rate",
            "100",
            "--duration",
            "240",
            "--quiet",
        ],
        env=env,
        name="producer",
    )

    # The stream writes Bronze, the sensor fires, dbt succeeds, Gold has the events.
    first_gold = _wait_for_gold_after_a_successful_run(
        "a successful sensor-launched dbt run and Gold rows", dagster_instance, database_url, logs
    )
    # Events keep arriving: a later run moves Gold on.
    _wait("Gold to change", lambda: _gold_events(database_url) > first_gold, LOOP_TIMEOUT_S / 2, logs)

    runs = sorted(_sensor_runs(dagster_instance), key=lambda record: record.create_timestamp)
    finished = [record for record in runs if record.end_time is not None]
    # A run may start while the previous one stores its models' events (the sensor requests it once
    # that run's dbt has ended); its dbt step waits for the dbt pool, so dbt never runs twice at once.
    spans = [_dbt_step_span(dagster_instance, record) for record in finished]
    for (_, earlier_end), (later_start, _) in zip(spans, spans[1:], strict=False):
        assert later_start >= earlier_end, "two dbt runs overlapped"
    ranges = [tuple(map(int, record.dagster_run.tags[BATCH_RANGE_TAG].split("-"))) for record in runs]
    for (_, last), (first, _) in zip(ranges, ranges[1:], strict=False):
        assert first == last + 1, f"batch ranges are not contiguous: {ranges}"
    # Models only: the dbt tests stay off the refresh's critical path (defs/quality.py runs them).
    assert all(not record.dagster_run.asset_check_selection for record in runs)
    # Each refresh ran dbt in its run worker on the project parsed before Dagster started (a
    # parse costs seconds per run) and recorded where its time went.
    succeeded = [record for record in runs if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    assert succeeded and all(
        record.dagster_run.tags.get(f"{DBT_TIMING_TAG_PREFIX}manifest_reused") == "true" for record in succeeded
    ), [record.dagster_run.tags for record in succeeded]
    print(
        "fast run path, launch -> SUCCESS s:",
        [round(_launch_to_success_s(dagster_instance, record), 1) for record in succeeded],
    )
    assert "the fast path" in (logs / "dagster-daemon.log").read_text()
    # Every run worker was forked from one warm worker, which had loaded the code once.
    engine_messages = [
        record.event_log_entry.dagster_event.message or ""
        for run in succeeded
        for record in dagster_instance.get_records_for_run(
            run.dagster_run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
        ).records
    ]
    warm_workers = {
        message.rsplit("(pid ", 1)[1].rstrip(").") for message in engine_messages if "from the warm worker" in message
    }
    assert len(warm_workers) == 1 and all(PID_TAG in run.dagster_run.tags for run in succeeded), engine_messages
    staged = dagster_instance.get_latest_materialization_event(STAGING)
    assert staged is not None and staged.asset_materialization.metadata["rows_affected"].value > 0

    # The UI's "Materialize" on gold/mart_daily_metrics: launchPipelineExecution on the asset job.
    url = webserver_url(settings)
    locations = _wait(
        "the webserver to load the code location",
        lambda: [
            entry["name"]
            for entry in _graphql(url, LOCATIONS)["workspaceOrError"].get("locationEntries", [])
            if entry["loadStatus"] == "LOADED"
        ],
        120,
        logs,
    )
    launched = _graphql(
        url,
        LAUNCH,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": locations[0],
                    "repositoryName": "__repository__",
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": [{"path": DAILY_METRICS.path}],
                },
                "mode": "default",
                "executionMetadata": {"tags": []},
                "runConfigData": {},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = _wait(
        "the UI-launched run to finish",
        lambda: (
            (state := _graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"])
            in ("SUCCESS", "FAILURE", "CANCELED")
            and state
        ),
        180,
        logs,
    )
    assert status == "SUCCESS"
    run = dagster_instance.get_run_by_id(run_id)
    assert run is not None and run.asset_selection == {DAILY_METRICS}
    # The model's dbt tests ran with it, as asset checks.
    checks = dagster_instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    assert checks
    assert {record.event_log_entry.dagster_event.event_specific_data.asset_key for record in checks} == {DAILY_METRICS}

    # The producer and the stream stop (SIGKILL: a batch cut short rolls back); once the sensor's runs
    # have folded in every committed batch, the incremental runs' Silver and Gold must be exactly
    # what a full refresh from the same Bronze and the pandas reference give, every relation.
    for process in (producer, stream):
        stop_group(process, sig=signal.SIGKILL)
    _wait("the sensor's runs to fold in every Bronze batch", lambda: _caught_up(dagster_instance, database_url),
          LOOP_TIMEOUT_S, logs)  # fmt: skip
    check = assert_silver_and_gold_match(database_url, tmp_path)
    print("every Silver and Gold relation compared:", check.timing())


@pytest.mark.slow
def test_sensor_refresh_on_the_stock_run_path(
    process_env: Settings,
    shopstream_env: dict[str, str],
    database_url: str,
    kafka_bootstrap: str,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    tmp_path: Path,
    spawn_process: Callable[..., Any],
) -> None:
    """SHOPSTREAM_FAST_RUNS=0: Dagster's DefaultRunLauncher and `dbt.cli(...).stream()` refresh Gold too."""
    env = _prepared_dagster_environment(
        process_env, shopstream_env, database_url, kafka_bootstrap, SHOPSTREAM_FAST_RUNS="0"
    )
    # What the daemon's instance reads: written as `shopstream up` would with SHOPSTREAM_FAST_RUNS=0.
    instance_file = write_instance_yaml(process_env.dagster_home, database.url_parts(database_url).database, fast=False)
    assert "class: DefaultRunLauncher" in instance_file.read_text()
    logs = tmp_path / "logs"

    # One Bronze batch, committed by the real Spark replay (no stream: the sensor needs only Bronze).
    produce_events(kafka_bootstrap, process_env.topic, 500)
    replay_topic(spark, process_env, kafka_bootstrap=kafka_bootstrap)
    spawn_process(daemon_command(), env=env, name="dagster-daemon")

    gold = _wait_for_gold_after_a_successful_run(
        "a successful sensor-launched dbt run on the stock path and Gold rows", dagster_instance, database_url, logs
    )
    assert gold > 0
    _wait("the sensor's runs to fold in every Bronze batch", lambda: _caught_up(dagster_instance, database_url),
          LOOP_TIMEOUT_S, logs)  # fmt: skip
    assert_silver_and_gold_match(database_url, tmp_path)
    assert "as SHOPSTREAM_FAST_RUNS=0 asks" in (logs / "dagster-daemon.log").read_text()
    succeeded = [
        record for record in _sensor_runs(dagster_instance) if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    ]
    print(
        "stock run path, launch -> SUCCESS s:",
        [round(_launch_to_success_s(dagster_instance, record), 1) for record in succeeded],
    )
    for record in succeeded:
        # No warm worker forked it and dbt ran as its own process (no in-process timings).
        assert PID_TAG not in record.dagster_run.tags
        assert not any(name.startswith(DBT_TIMING_TAG_PREFIX) for name in record.dagster_run.tags)
        assert not record.dagster_run.asset_check_selection
    staged = dagster_instance.get_latest_materialization_event(STAGING)
    assert staged is not None and staged.asset_materialization.metadata["rows_affected"].value > 0
