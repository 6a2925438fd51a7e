"""The whole loop through real Dagster processes: stream -> Bronze -> sensor -> dbt -> Gold, and a
Gold materialization launched through the webserver's GraphQL API as the UI's button does, on the
fast run path. The stock run path (SHOPSTREAM_FAST_RUNS=0) is exercised, as a deployment runs it, by
``runtime/test_code_server.py``: its sensor-driven refresh and on-demand replay through a code server.

Once each loop has caught up, every Silver and Gold relation the sensor's runs built equals a full
refresh built elsewhere from the same Bronze and the independent pandas reference
(``dbt/reference_checks.py``). Tried with mart_product_daily left out of incremental updates (then
reverted): the loop test fails before that comparison, when the UI-launched run's dbt checks
(assert_revenue_reconciles, assert_segments_reconcile_with_daily_marts) fail; the same break fails
both comparisons in ``e2e/test_dbt_fault.py``."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from shopstream.embedded import free_port
from shopstream.processes import stop_group
from shopstream.settings import Settings, load_settings
from shopstream_assets.defs.dbt.project import DBT_TIMING_TAG_PREFIX
from shopstream_assets.defs.streaming.sensors import BATCH_RANGE_TAG
from shopstream_assets.runtime.dagster_instance import (
    daemon_command,
    webserver_command,
    webserver_url,
)
from shopstream_assets.runtime.warm_run_launcher import PID_TAG
from shopstream_assets_tests.dbt.reference_checks import assert_silver_and_gold_match
from shopstream_assets_tests.defs.dagster_processes import (
    DAILY_METRICS,
    LOCATIONS,
    LOOP_TIMEOUT_S,
    STAGING,
    STREAM,
    caught_up,
    dbt_step_span,
    gold_events,
    graphql,
    launch_to_success_s,
    materialize_through_the_ui,
    prepared_dagster_environment,
    sensor_runs,
    wait,
    wait_for_gold_after_a_successful_run,
)


def was_queued(instance: dg.DagsterInstance, run_id: str) -> bool:
    return bool(instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records)


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
    env = prepared_dagster_environment(
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
    first_gold = wait_for_gold_after_a_successful_run(
        "a successful sensor-launched dbt run and Gold rows", dagster_instance, database_url, logs
    )
    # Events keep arriving: a later run moves Gold on.
    wait("Gold to change", lambda: gold_events(database_url) > first_gold, LOOP_TIMEOUT_S / 2, logs)

    runs = sorted(sensor_runs(dagster_instance), key=lambda record: record.create_timestamp)
    finished = [record for record in runs if record.end_time is not None]
    # A run may start while the previous one stores its models' events (the sensor requests it once
    # that run's dbt has ended); its dbt step waits for the dbt pool, so dbt never runs twice at once.
    spans = [dbt_step_span(dagster_instance, record) for record in finished]
    for (_, earlier_end), (later_start, _) in zip(spans, spans[1:], strict=False):
        assert later_start >= earlier_end, "two dbt runs overlapped"
    ranges = [tuple(map(int, record.dagster_run.tags[BATCH_RANGE_TAG].split("-"))) for record in runs]
    for (_, last), (first, _) in zip(ranges, ranges[1:], strict=False):
        assert first == last + 1, f"batch ranges are not contiguous: {ranges}"
    # Models only: the dbt tests stay off the refresh's critical path (defs/quality.py runs them).
    assert all(not record.dagster_run.asset_check_selection for record in runs)
    # The refreshes skip the run queue (runtime/immediate_run_coordinator.py); the UI's run below waits in it.
    assert not any(was_queued(dagster_instance, record.dagster_run.run_id) for record in runs)
    # Each refresh ran dbt in its run worker on the project parsed before Dagster started (a
    # parse costs seconds per run) and recorded where its time went.
    succeeded = [record for record in runs if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    assert succeeded and all(
        record.dagster_run.tags.get(f"{DBT_TIMING_TAG_PREFIX}manifest_reused") == "true" for record in succeeded
    ), [record.dagster_run.tags for record in succeeded]
    print(
        "fast run path, launch -> SUCCESS s:",
        [round(launch_to_success_s(dagster_instance, record), 1) for record in succeeded],
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
    locations = wait(
        "the webserver to load the code location",
        lambda: [
            entry["name"]
            for entry in graphql(url, LOCATIONS)["workspaceOrError"].get("locationEntries", [])
            if entry["loadStatus"] == "LOADED"
        ],
        120,
        logs,
    )
    run_id, status = materialize_through_the_ui(url, locations[0], DAILY_METRICS, 180, logs)
    assert status == "SUCCESS"
    run = dagster_instance.get_run_by_id(run_id)
    assert run is not None and run.asset_selection == {DAILY_METRICS}
    assert was_queued(dagster_instance, run_id)
    # The model's dbt tests ran with it, as asset checks.
    checks = dagster_instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    assert checks
    assert {record.event_log_entry.dagster_event.event_specific_data.asset_key for record in checks} == {DAILY_METRICS}

    # The producer and the stream stop (SIGKILL: a batch cut short rolls back); once the sensor's runs
    # have folded in every committed batch, the incremental runs' Silver and Gold must be exactly
    # what a full refresh from the same Bronze and the pandas reference give, every relation.
    for process in (producer, stream):
        stop_group(process, sig=signal.SIGKILL)
    wait("the sensor's runs to fold in every Bronze batch", lambda: caught_up(dagster_instance, database_url),
          LOOP_TIMEOUT_S, logs)  # fmt: skip
    check = assert_silver_and_gold_match(database_url, tmp_path)
    print("every Silver and Gold relation compared:", check.timing())
