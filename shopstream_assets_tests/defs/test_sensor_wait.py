"""The Bronze sensor's tick keeps looking: it requests as soon as a batch lands, or as soon as the
run it waits on has finished dbt, instead of at the next tick. Real ticks on a PostgreSQL-backed
Dagster instance, real batches (Spark replays the topic into Bronze)."""

from __future__ import annotations

import threading
import time

import dagster as dg
import pytest

from shopstream.database import connect
from shopstream.settings import Settings
from shopstream_assets.defs.streaming.sensors import (
    BATCH_RANGE_TAG,
    DBT_FINISHED_TAG,
    MAX_TICK_WAIT_S,
    SENSOR_NAME,
    WAIT_POLL_S,
    tick_wait_seconds,
)
from shopstream_assets_tests.conftest import produce_events
from streaming.job import replay_topic
from streaming.ledger_bench import batch_commit_times

# A tick may wait the longest it ever does: the batch below (a Spark replay) may take that long.
INTERVAL_S = int(MAX_TICK_WAIT_S) + 1
# A poll, plus the time one poll's queries take on a loaded 2-core box.
REACTION_S = WAIT_POLL_S + 1.5


@pytest.fixture
def sensor_env(process_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPSTREAM_SENSOR_INTERVAL", str(INTERVAL_S))


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> tuple[dg.SensorResult, float]:
    """The tick's result and when it returned (epoch seconds)."""
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=cursor)
    result = sensor.evaluate_tick(context)
    return result, time.time()


def test_a_tick_waits_at_most_until_the_daemons_next_look() -> None:
    assert tick_wait_seconds(5) == 4  # the default interval: the daemon evaluates again 5 s after
    assert tick_wait_seconds(1) == 0  # a tick a second already looks every second
    assert tick_wait_seconds(3600) == MAX_TICK_WAIT_S


def test_a_waiting_tick_requests_as_soon_as_a_batch_lands(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    process_env: Settings,
    kafka_bootstrap: str,
    database_url: str,
    sensor_env: None,
) -> None:
    """The batch commits while a tick is under way: that tick requests its run within a poll of the
    commit. The previous sensor (one look per tick) cannot pass: its ticks return a skip at once,
    so the one that requests started after the commit."""
    produce_events(kafka_bootstrap, process_env.topic, 300, seed=11)
    replayed = threading.Thread(
        target=replay_topic, args=(spark, process_env), kwargs={"kafka_bootstrap": kafka_bootstrap}
    )
    ticks: list[tuple[float, float, dg.SensorResult]] = []
    replayed.start()
    try:
        while not (ticks and ticks[-1][2].run_requests):
            started_at = time.time()
            result, returned_at = _tick(defs, dagster_instance, None)
            ticks.append((started_at, returned_at, result))
            assert len(ticks) < 20, "no batch after 20 ticks"
    finally:
        replayed.join()
    started_at, returned_at, result = ticks[-1]
    with connect(database_url) as conn:
        ((batch_id, committed_at),) = batch_commit_times(conn, process_env.topic).items()
    (request,) = result.run_requests
    assert request.run_key == f"bronze-{batch_id}-{batch_id}"
    # The requesting tick was already looking when the batch committed, and saw it within a poll.
    assert started_at < committed_at <= returned_at
    assert returned_at - committed_at <= REACTION_S
    # Every tick before it waited its whole time for a batch rather than returning at once.
    for earlier_start, earlier_return, earlier in ticks[:-1]:
        assert "no new batches" in earlier.skip_message
        assert earlier_return - earlier_start >= tick_wait_seconds(INTERVAL_S) - WAIT_POLL_S


def test_a_waiting_tick_requests_once_the_run_in_flight_has_finished_dbt(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    process_env: Settings,
    kafka_bootstrap: str,
    sensor_env: None,
) -> None:
    """A run the sensor launched is STARTED; a batch waits. The run worker tags the run as its dbt
    command returns (defs/dbt/assets.py), while Dagster still stores its events: the waiting tick
    then requests the next run, which the dbt pool holds until the first run's step ends."""
    produce_events(kafka_bootstrap, process_env.topic, 200, seed=12)
    (first,) = replay_topic(spark, process_env, kafka_bootstrap=kafka_bootstrap).batch_ids
    run = dagster_instance.create_run_for_job(
        job_def=defs.resolve_job_def("refresh_silver_gold"),
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={BATCH_RANGE_TAG: "0-0", "dagster/sensor_name": SENSOR_NAME, "dagster/run_key": "bronze-0-0"},
    )
    dagster_instance.report_dagster_event(
        dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name), run_id=run.run_id
    )

    # Without the tag the run holds the batch for the tick's whole time.
    waited, returned_at = _tick(defs, dagster_instance, None)
    assert not waited.run_requests and f"dbt run {run.run_id[:8]} for batches 0-0 is STARTED" in waited.skip_message

    tagged: list[tuple[float, float]] = []  # (before, after) tagging

    def dbt_finishes() -> None:
        time.sleep(1.0)
        before = time.time()
        dagster_instance.add_run_tags(run.run_id, {DBT_FINISHED_TAG: f"{before:.3f}"})
        tagged.append((before, time.time()))

    finisher = threading.Thread(target=dbt_finishes)
    started_at = time.time()
    finisher.start()
    result, returned_at = _tick(defs, dagster_instance, None)
    finisher.join()
    (request,) = result.run_requests
    assert request.run_key == f"bronze-{first}-{first}"
    ((tagging, tagged_at),) = tagged
    assert started_at < tagging <= returned_at <= tagged_at + REACTION_S
    # The run itself has not ended: only its bookkeeping is left.
    current = dagster_instance.get_run_by_id(run.run_id)
    assert current is not None and current.status == dg.DagsterRunStatus.STARTED
