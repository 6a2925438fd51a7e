"""The Bronze sensor: new ingestion batches -> one Bronze materialization + one dbt run.

The Spark stream writes Bronze outside Dagster, one ``bronze.ingest_batches`` row per
committed micro-batch; ``batch_id`` grows in commit order, so the last one seen is the
sensor's whole cursor. On each tick:

* no batch after the cursor: skip;
* a dbt run this sensor launched is still queued or running: skip WITHOUT moving the
  cursor, so the next run covers every batch that landed meanwhile (one catch-up run,
  not a queue of them);
* otherwise: record a Bronze materialization for the batch range (rows, rejects,
  duplicates, end offsets), request one run of every Silver and Gold model (job
  ``refresh_silver_gold``) with run key ``bronze-<first>-<last>``, and move the cursor to
  ``<last>``. The incremental models read Bronze by their own ``batch_id`` cursor, so a
  run covers whatever committed before it starts, and a failed run is made good by the next;
* no new batch, but the newest run this sensor launched failed (or was canceled): request
  it again under a new run key ``bronze-<first>-<last>-retry-<n>`` (the daemon drops a run
  key it has seen, whatever that run's outcome), so a quiet stream does not leave Gold
  behind Bronze. The first retry goes out on the next tick; each further failure in a row
  doubles the wait, up to ``MAX_RETRY_WAIT_S``.

A tick does not only look once: while it has nothing to request it keeps looking, every
``WAIT_POLL_S``, for as long as the daemon would take to evaluate it again
(:func:`tick_wait_seconds`), and requests as soon as a batch lands or the run it waits on has
finished dbt. A batch then waits for a poll, not for the next tick: the daemon looks at a sensor
no more often than its loop (5 s on Dagster's stock path), and each tick it records is a few
writes to Dagster's storage, while a poll is one index probe of the ledger.

A run counts as in flight until its dbt command has ended (the ``shopstream/dbt_finished_at``
tag the fast path writes as dbt returns), not until the run ends: Dagster then still stores each model's
materialization, and the next run is launched meanwhile. Its dbt step waits for the ``dbt``
pool's one slot, which the previous run holds until its step ends, so dbt never runs twice at once.

Why not ``AutomationCondition.eager()`` on the dbt assets: it requests a run when Bronze
changes, but a change that lands while that run is in progress is folded into the run
already under way and is lost (dagster issue 24650) -- Gold then waits for the next
batch. The ``dbt`` pool (limit 1 in dagster.yaml) is the hard guard against two dbt runs
at once whatever starts them (this sensor, the schedule, the UI).
"""

import time

import dagster as dg
import psycopg

from shopstream.settings import load_settings
from shopstream_assets.defs.dbt.project import DBT_TIMING_TAG_PREFIX
from shopstream_assets.defs.resources import KafkaResource, PostgresResource
from shopstream_assets.defs.streaming.assets import BRONZE_KEY
from shopstream_assets.runtime.immediate_run_coordinator import LAUNCH_IMMEDIATELY, LAUNCH_TAG
from streaming.ledger import BatchRange, batches_after, latest_batch_id

SENSOR_NAME = "bronze_sensor"
# Every dbt model (keys silver/<model> and gold/<model>, see defs/dbt/assets.py), without
# the dbt tests: they scan whole tables and would hold every refresh; defs/quality.py runs them.
refresh_silver_gold_job = dg.define_asset_job(
    name="refresh_silver_gold",
    selection=dg.AssetSelection.key_prefixes("silver", "gold").without_checks(),
    description="Every Silver and Gold dbt model, incrementally, without the dbt tests (the Bronze sensor's runs).",
)
BATCH_RANGE_TAG = "shopstream/bronze_batches"
RETRY_ATTEMPT_TAG = "shopstream/retry_attempt"
# A refresh skips the run queue (runtime/immediate_run_coordinator.py): the sensor already waits its turn.
LAUNCH_NOW = {LAUNCH_TAG: LAUNCH_IMMEDIATELY}
# A lasting fault (a lock, a permission, a bad deploy) then costs one failed run every few
# minutes, not one per tick.
MAX_RETRY_WAIT_S = 300
# dagster-daemon looks at its sensors once per loop (MIN_INTERVAL_LOOP_TIME in
# dagster/_daemon/sensor.py) and evaluates one only if its minimum interval has fully elapsed
# since the last tick started. A minimum equal to the loop time is then a hair short on every
# other loop, so the sensor would tick at twice the interval. A second of slack lands on every loop.
DAEMON_LOOP_SLACK_S = 1
# Written on a run as its `dbt run` returns (defs/dbt/assets.py): from then on the run only
# stores what dbt did, and the next one may be launched (see the module's docstring).
DBT_FINISHED_TAG = f"{DBT_TIMING_TAG_PREFIX}finished_at"
# How often a waiting tick looks at the ledger and at the run it waits on: one index probe each.
WAIT_POLL_S = 0.2
# The longest a tick keeps looking, well inside the time the daemon gives a sensor's evaluation
# (60 s by default): a longer interval asks for ticks far apart, not for one long tick.
MAX_TICK_WAIT_S = 10.0
# Statuses of a run that has not finished; NOT_STARTED is a run the daemon is launching.
IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# A run that ended without folding its batches into Gold.
UNSUCCESSFUL_STATUSES = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def run_key(batch_range: BatchRange) -> str:
    return f"bronze-{batch_range.first_batch_id}-{batch_range.last_batch_id}"


def bronze_materialization(batch_range: BatchRange, topic: str) -> dg.AssetMaterialization:
    metadata: dict[str, dg.RawMetadataValue] = {
        "source": "stream" if batch_range.stream_batches == batch_range.batches else "stream and replay",
        "topic": topic,
        "batch_range": f"{batch_range.first_batch_id}-{batch_range.last_batch_id}",
        "batches": batch_range.batches,
        "messages": batch_range.messages,
        "rows_written": batch_range.rows_written,
        "rejects": batch_range.rejects,
        "duplicates": batch_range.duplicates,
        "end_offsets": dg.MetadataValue.json(batch_range.end_offsets),
        "last_committed_at": dg.MetadataValue.timestamp(batch_range.last_committed_at),
    }
    if batch_range.min_event_time is not None and batch_range.max_event_time is not None:
        metadata["event_time_range"] = (
            f"{batch_range.min_event_time.isoformat()} .. {batch_range.max_event_time.isoformat()}"
        )
    return dg.AssetMaterialization(
        asset_key=BRONZE_KEY,
        description=f"{batch_range.batches} ingestion batches committed to bronze.clickstream_events",
        metadata=metadata,
    )


def sensor_minimum_interval(interval_seconds: int) -> int:
    """The ``minimum_interval_seconds`` that makes the daemon tick every ``interval_seconds``."""
    return max(1, interval_seconds - DAEMON_LOOP_SLACK_S)


def tick_wait_seconds(interval_seconds: int) -> float:
    """How long a tick with nothing to request keeps looking: until the daemon's next evaluation."""
    return min(MAX_TICK_WAIT_S, float(interval_seconds - DAEMON_LOOP_SLACK_S))


def dbt_runs_in_flight(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """Runs this sensor launched whose dbt has not ended (the daemon tags them with the sensor's name)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=IN_FLIGHT_STATUSES, tags={"dagster/sensor_name": SENSOR_NAME}),
        limit=5,
    )
    return [record for record in records if DBT_FINISHED_TAG not in record.dagster_run.tags]


def failed_run(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    """The newest run this sensor launched, if it failed or was canceled: its batches are not in Gold."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}), limit=1)
    if records and records[0].dagster_run.status in UNSUCCESSFUL_STATUSES:
        return records[0]
    return None


def retry_wait_seconds(attempt: int, interval_seconds: int) -> int:
    """How long after the failed run ended retry ``attempt`` (1 = the first) waits."""
    return 0 if attempt <= 1 else min(MAX_RETRY_WAIT_S, interval_seconds * 2 ** (attempt - 1))


def retry_request(failed: dg.RunRecord, interval_seconds: int) -> dg.RunRequest | dg.SkipReason:
    run = failed.dagster_run
    covering = run.tags.get(BATCH_RANGE_TAG, "unknown")
    attempt = int(run.tags.get(RETRY_ATTEMPT_TAG, "0")) + 1
    ended_at = failed.end_time or failed.update_timestamp.timestamp()
    wait_left = retry_wait_seconds(attempt, interval_seconds) - (time.time() - ended_at)
    if wait_left > 0:
        return dg.SkipReason(
            f"dbt run {run.run_id[:8]} for batches {covering} is {run.status.value}; "
            f"retry {attempt} in {wait_left:.0f} s"
        )
    return dg.RunRequest(
        run_key=f"bronze-{covering}-retry-{attempt}",
        tags={BATCH_RANGE_TAG: covering, RETRY_ATTEMPT_TAG: str(attempt), **LAUNCH_NOW},
    )


@dg.sensor(
    name=SENSOR_NAME,
    description=(
        "Polls bronze.ingest_batches; when batches have committed and no dbt run it launched is still "
        "queued or running, records a Bronze materialization and requests one run of every dbt model "
        "(run key bronze-<first>-<last>). While a run is in flight it skips without moving its cursor, "
        "so the next run covers the backlog. A failed run with no new batch after it is retried "
        "(run key bronze-<first>-<last>-retry-<n>), waiting longer after each failure in a row."
    ),
    job=refresh_silver_gold_job,
    minimum_interval_seconds=sensor_minimum_interval(load_settings().sensor_interval_seconds),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def bronze_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, kafka: KafkaResource
) -> dg.SensorResult | dg.SkipReason:
    last_seen = int(context.cursor) if context.cursor else 0
    topic = kafka.topic_name()
    interval_seconds = load_settings().sensor_interval_seconds
    deadline = time.monotonic() + tick_wait_seconds(interval_seconds)
    with postgres.connect() as conn:
        # Identity values are never reused, so a cursor beyond the ledger means Bronze was
        # recreated (a new database) while Dagster's storage kept the old cursor.
        if last_seen > latest_batch_id(conn, topic):
            context.log.warning(f"cursor {last_seen} is beyond bronze.ingest_batches for {topic}: starting over")
            if batches_after(conn, topic, 0) is None:
                return dg.SensorResult(
                    skip_reason=dg.SkipReason(
                        f"no new batches in bronze.ingest_batches for topic {topic} after batch 0"
                    ),
                    cursor="0",
                )
            last_seen = 0
        while True:
            outcome, worth_waiting = _look(context, conn, topic, last_seen, interval_seconds)
            if not worth_waiting or not _waited_for_a_batch(conn, topic, last_seen, deadline):
                return outcome


def _waited_for_a_batch(conn: psycopg.Connection, topic: str, last_seen: int, deadline: float) -> bool:
    """After a poll's sleep, True once a batch after ``last_seen`` is in the ledger (at once if one
    already was: the tick then looks again at the run it waits on); False when the tick's time is up."""
    while time.monotonic() + WAIT_POLL_S <= deadline:
        time.sleep(WAIT_POLL_S)
        if latest_batch_id(conn, topic) > last_seen:
            return True
    return False


def _look(
    context: dg.SensorEvaluationContext, conn: psycopg.Connection, topic: str, last_seen: int, interval_seconds: int
) -> tuple[dg.SensorResult | dg.SkipReason | dg.RunRequest, bool]:
    """One look at the ledger and the runs: what the tick would return now, and whether waiting
    for a batch or for the run in flight could change that (not for a failed run's retry: its
    wait is minutes, and the next tick looks again)."""
    batch_range = batches_after(conn, topic, last_seen)
    if batch_range is None:
        skip = dg.SkipReason(f"no new batches in bronze.ingest_batches for topic {topic} after batch {last_seen}")
        failed = failed_run(context.instance)
        if failed is None:
            return skip, True
        retry = retry_request(failed, interval_seconds)
        if isinstance(retry, dg.RunRequest):
            context.log.info(
                f"dbt run {failed.dagster_run.run_id[:8]} {failed.dagster_run.status.value}, no new batch: "
                f"-> dbt run {retry.run_key}"
            )
        return retry, False
    in_flight = dbt_runs_in_flight(context.instance)
    if in_flight:
        run = in_flight[0].dagster_run
        covering = run.tags.get(BATCH_RANGE_TAG, "?")
        return dg.SkipReason(
            f"{batch_range.batches} new batches ({batch_range.first_batch_id}-{batch_range.last_batch_id}) wait: "
            f"dbt run {run.run_id[:8]} for batches {covering} is {run.status.value}; "
            "the next run will cover them all"
        ), True
    context.log.info(
        f"batches {batch_range.first_batch_id}-{batch_range.last_batch_id}: {batch_range.rows_written:,} rows, "
        f"{batch_range.rejects:,} rejects, {batch_range.duplicates:,} duplicates -> dbt run {run_key(batch_range)}"
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key(batch_range),
                tags={BATCH_RANGE_TAG: f"{batch_range.first_batch_id}-{batch_range.last_batch_id}", **LAUNCH_NOW},
            )
        ],
        asset_events=[bronze_materialization(batch_range, topic)],
        cursor=str(batch_range.last_batch_id),
    ), False
