"""Real Dagster processes for the loop tests: the environment they run in, the webserver's GraphQL
API as the UI calls it, and waits on what the sensor's runs have done (``defs/test_daemon_loop.py``,
``runtime/test_code_server.py``)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from shopstream.database import connect
from shopstream.services import Endpoints
from shopstream.settings import Settings
from shopstream_assets.defs.streaming.sensors import BATCH_RANGE_TAG, SENSOR_NAME
from shopstream_assets.runtime.dagster_instance import (
    dagster_environment,
    dbt_profile_environment,
    dbt_target_dir,
    prepare_dbt_manifest,
)

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


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert "errors" not in payload, payload
    return payload["data"]


def wait(what: str, condition: Callable[[], Any], timeout: float, logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for log in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def sensor_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME})))


def launch_to_success_s(instance: dg.DagsterInstance, record: dg.RunRecord) -> float:
    """From the daemon launching the run (RUN_STARTING) to its end: the run path's cost per refresh."""
    (starting,) = instance.get_records_for_run(
        record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING
    ).records
    assert record.end_time is not None
    return record.end_time - starting.event_log_entry.timestamp


def dbt_step_span(instance: dg.DagsterInstance, record: dg.RunRecord) -> tuple[float, float]:
    """When the run's dbt step started and ended: the span it held the dbt pool's slot."""
    events = instance.get_records_for_run(
        record.dagster_run.run_id,
        of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE},
    ).records
    at = {entry.event_log_entry.dagster_event.event_type: entry.event_log_entry.timestamp for entry in events}
    end = at.get(dg.DagsterEventType.STEP_SUCCESS, at.get(dg.DagsterEventType.STEP_FAILURE))
    assert dg.DagsterEventType.STEP_START in at and end is not None, f"run {record.dagster_run.run_id}: {at}"
    return at[dg.DagsterEventType.STEP_START], end


def gold_events(database_url: str) -> int:
    with connect(database_url) as conn:
        exists = conn.execute("select to_regclass('gold.mart_daily_metrics')").fetchone()[0]
        if exists is None:
            return 0
        return conn.execute("select coalesce(sum(events), 0) from gold.mart_daily_metrics").fetchone()[0]


def caught_up(instance: dg.DagsterInstance, database_url: str) -> bool:
    """Every committed Bronze batch is in the range of a successful sensor run, and no sensor run is
    still to finish: the pipeline will not touch Silver or Gold again until a new batch lands."""
    runs = sensor_runs(instance)
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


def prepared_dagster_environment(
    process_env: Settings, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, **extra: str
) -> dict[str, str]:
    """What `shopstream up` does before starting Dagster (the manifest for this database), and the
    environment its Dagster processes get, with ``extra`` variables on top."""
    found = Endpoints(database_url, shopstream_env["SHOPSTREAM_DASHBOARD_DATABASE_URL"], kafka_bootstrap)
    prepare_dbt_manifest(dbt_profile_environment(found), dbt_target_dir(process_env), progress=lambda message: None)
    # A tick a second (the daemon's sensor loop follows, see run_daemon): each sensor cycle then
    # starts seconds sooner than at the default 5 s.
    return dagster_environment(process_env, found, base={**shopstream_env, "SHOPSTREAM_SENSOR_INTERVAL": "1", **extra})


def wait_for_gold_after_a_successful_run(what: str, instance: dg.DagsterInstance, database_url: str, logs: Path) -> int:
    """Gold's event count, once a sensor-launched run has succeeded and Gold holds rows."""
    return wait(
        what,
        lambda: (
            gold_events(database_url)
            if any(record.dagster_run.status == dg.DagsterRunStatus.SUCCESS for record in sensor_runs(instance))
            else 0
        ),
        LOOP_TIMEOUT_S,
        logs,
    )


def materialize_through_the_ui(
    url: str, location: str, asset_key: dg.AssetKey, timeout: float, logs: Path
) -> tuple[str, str]:
    """(run id, final status) of a materialization of ``asset_key`` launched as the UI's button does:
    launchPipelineExecution on the location's asset job, then the run's status until it ends."""
    launched = graphql(
        url,
        LAUNCH,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": location,
                    "repositoryName": "__repository__",
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": [{"path": asset_key.path}],
                },
                "mode": "default",
                "executionMetadata": {"tags": []},
                "runConfigData": {},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = wait(
        f"the UI-launched run of {asset_key.to_user_string()} to finish",
        lambda: (
            (state := graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"])
            in ("SUCCESS", "FAILURE", "CANCELED")
            and state
        ),
        timeout,
        logs,
    )
    return run_id, status
