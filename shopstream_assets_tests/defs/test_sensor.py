"""The Bronze sensor against a real ledger (Spark replays into PostgreSQL) and a real instance."""

from __future__ import annotations

import dagster as dg

from shopstream.settings import Settings
from shopstream_assets.defs.streaming.sensors import BATCH_RANGE_TAG, SENSOR_NAME, retry_wait_seconds
from shopstream_assets_tests.conftest import produce_events
from streaming.job import replay_topic

BRONZE = dg.AssetKey(["bronze", "clickstream_events"])


def _dbt_keys(defs: dg.Definitions) -> set[dg.AssetKey]:
    return {key for key in defs.resolve_asset_graph().get_all_asset_keys() if key.path[0] in ("silver", "gold")}


def _new_batch(spark: object, settings: Settings, kafka_bootstrap: str, events: int, seed: int) -> int:
    """Put ``events`` messages on the topic and commit them as one Bronze batch; return its batch_id."""
    produce_events(kafka_bootstrap, settings.topic, events, seed=seed)
    summary = replay_topic(spark, settings, kafka_bootstrap=kafka_bootstrap)
    (batch_id,) = summary.batch_ids
    return batch_id


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=cursor)
    return sensor.evaluate_tick(context)


def _report(instance: dg.DagsterInstance, run: dg.DagsterRun, event_type: dg.DagsterEventType) -> None:
    """Move ``run`` through its lifecycle as the run worker would."""
    instance.report_dagster_event(dg.DagsterEvent(event_type.value, job_name=run.job_name), run_id=run.run_id)


def test_sensor_skips_without_batches_and_requests_one_run_per_batch_range(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    process_env: Settings,
    kafka_bootstrap: str,
) -> None:
    empty = _tick(defs, dagster_instance, None)
    assert not empty.run_requests and "no new batches" in empty.skip_message
    assert empty.cursor is None

    first = _new_batch(spark, process_env, kafka_bootstrap, 300, seed=1)
    second = _new_batch(spark, process_env, kafka_bootstrap, 300, seed=2)
    data = _tick(defs, dagster_instance, None)

    (request,) = data.run_requests
    assert request.run_key == f"bronze-{first}-{second}"
    assert request.tags[BATCH_RANGE_TAG] == f"{first}-{second}"
    # No asset_selection on the request: the run covers the sensor's whole target.
    assert request.asset_selection is None
    sensor_job = defs.resolve_job_def(defs.resolve_sensor_def(SENSOR_NAME).job_name)
    assert sensor_job.asset_layer.selected_asset_keys == _dbt_keys(defs)
    (materialization,) = data.asset_events
    assert materialization.asset_key == BRONZE
    assert materialization.metadata["batches"].value == 2
    assert materialization.metadata["messages"].value == 600
    assert set(materialization.metadata["end_offsets"].value) == {str(p) for p in range(6)}
    assert data.cursor == str(second)

    assert "no new batches" in _tick(defs, dagster_instance, data.cursor).skip_message


def test_sensor_waits_for_its_dbt_run_then_covers_the_backlog_in_one_run(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    process_env: Settings,
    kafka_bootstrap: str,
) -> None:
    first = _new_batch(spark, process_env, kafka_bootstrap, 200, seed=3)
    (request,) = _tick(defs, dagster_instance, None).run_requests
    cursor = str(first)
    # What the daemon does with the request: a run tagged with the sensor's name. (QUEUED needs a
    # code location origin only a daemon has; test_daemon_loop sees that state for real.)
    run = dagster_instance.create_run_for_job(
        job_def=defs.resolve_implicit_global_asset_job_def(),
        asset_selection=_dbt_keys(defs),
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={
            **request.tags,
            "dagster/sensor_name": SENSOR_NAME,
            "dagster/run_key": request.run_key,
        },
    )

    backlog_start = _new_batch(spark, process_env, kafka_bootstrap, 200, seed=4)
    queued = _tick(defs, dagster_instance, cursor)
    assert not queued.run_requests and not queued.asset_events
    assert queued.cursor == cursor  # not advanced
    assert f"dbt run {run.run_id[:8]} for batches {first}-{first} is NOT_STARTED" in queued.skip_message

    _report(dagster_instance, run, dg.DagsterEventType.RUN_START)
    backlog_end = _new_batch(spark, process_env, kafka_bootstrap, 200, seed=5)
    started = _tick(defs, dagster_instance, cursor)
    assert not started.run_requests and started.cursor == cursor
    assert "is STARTED" in started.skip_message and f"({backlog_start}-{backlog_end})" in started.skip_message

    _report(dagster_instance, run, dg.DagsterEventType.RUN_SUCCESS)
    caught_up = _tick(defs, dagster_instance, cursor)
    (catch_up,) = caught_up.run_requests
    assert catch_up.run_key == f"bronze-{backlog_start}-{backlog_end}"
    assert caught_up.asset_events[0].metadata["batches"].value == 2
    assert caught_up.cursor == str(backlog_end)


def test_sensor_starts_over_when_bronze_was_recreated(
    defs: dg.Definitions, dagster_instance: dg.DagsterInstance, process_env: Settings
) -> None:
    data = _tick(defs, dagster_instance, "12345")
    assert not data.run_requests and data.cursor == "0"


def test_a_failed_run_is_retried_at_once_then_with_a_doubling_wait() -> None:
    waits = [retry_wait_seconds(attempt, interval_seconds=5) for attempt in range(1, 9)]
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]
