"""Bounded history: Dagster's runs older than SHOPSTREAM_DAGSTER_RETENTION_DAYS go, whole, and the
Bronze ledger's per-batch rows older than SHOPSTREAM_LEDGER_KEEP_DAYS are rolled up per hour.

The Bronze sensor starts a dbt run every few seconds while events flow, and each run leaves its
run record, a few hundred event log rows and a compute log folder under DAGSTER_HOME/storage.
Dagster itself prunes only sensor and schedule ticks (``retention`` in dagster.yaml), so a
schedule removes the rest daily through the instance's public API: ``get_run_records`` with
``created_before``, ``delete_run`` (the run and its event log) and the compute log manager's
``delete_logs`` (its captured stdout and stderr). Runs that have not finished are never touched.
What the sensor and the checks report outside runs goes by age too, through Dagster's tables
(``runtime.dagster_private.prune_runless_history``: no public API deletes those by age).

The ledger (``bronze.ingest_batches``) gains a row per micro-batch; an hourly job folds the rows
past the keep age into one row per topic and hour (:func:`streaming.ledger.roll_up_ledger`).
Micro-batches do not wait for it: it takes only a lock of its own, never the Bronze writers',
and deletes only old rows no writer touches (no offset names them, none is a topic's newest),
in chunks of one short transaction each; streaming/ledger_roll_up.py says why no row lock is shared.
Hourly, so each run folds about an hour of rows, not a day's.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from shopstream.postgres_server import EmbeddedPostgres
from shopstream.settings import load_settings
from shopstream_assets.defs.resources import PostgresResource
from shopstream_assets.runtime.dagster_private import PRIVATE_FOR_MAINTENANCE, prune_runless_history
from streaming.ledger import roll_up_ledger

PRUNE_JOB_NAME = "prune_dagster_history"
# Runs that have finished; a queued or running run is someone's work in progress, however old.
FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
# Runs fetched per query: a first prune after weeks without one covers ~100k runs in bounded memory.
PRUNE_BATCH = 500


class PruneConfig(dg.Config):
    older_than_days: int | None = None
    """Remove finished runs created more than this many days ago (default SHOPSTREAM_DAGSTER_RETENTION_DAYS)."""


def prune_runs(instance: dg.DagsterInstance, created_before: datetime) -> int:
    """Delete every finished run created before ``created_before`` with its event log and compute logs.

    Returns how many runs went. Oldest first, so an interrupted prune leaves the newest history.
    """
    pruned = 0
    deleted: set[str] = set()
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(created_before=created_before, statuses=FINISHED_STATUSES),
            limit=PRUNE_BATCH,
            ascending=True,
        )
        if not records:
            return pruned
        for record in records:
            run_id = record.dagster_run.run_id
            if run_id in deleted:
                raise RuntimeError(f"run {run_id} is still in the run storage after delete_run")
            # The logs first: a run whose record is gone would leave its folder with nothing pointing at it.
            instance.compute_log_manager.delete_logs(prefix=[run_id])
            instance.delete_run(run_id)
            deleted.add(run_id)
            pruned += 1


@dg.op(description="Deletes finished runs older than the retention age with their event logs and compute logs.")
def prune_old_runs(context: dg.OpExecutionContext, config: PruneConfig) -> dg.Output[int]:
    days = config.older_than_days if config.older_than_days is not None else load_settings().dagster_retention_days
    if days < 1:
        raise dg.Failure(description=f"older_than_days must be at least 1: got {days}")
    created_before = datetime.now(UTC) - timedelta(days=days)
    pruned = prune_runs(context.instance, created_before)
    context.log.info(f"removed {pruned:,} finished runs created before {created_before:%Y-%m-%d %H:%M} UTC")
    runless = prune_runless_history(context.instance, created_before)
    if runless is None:
        context.log.warning(
            "the sensor's materializations and the checks' evaluations were not pruned: the installed Dagster "
            f"lacks {', '.join(PRIVATE_FOR_MAINTENANCE.missing()) or 'a SQL event log'}"
        )
    events, checks = runless or (0, 0)
    context.log.info(f"removed {events:,} events reported outside runs and {checks:,} check executions")
    return dg.Output(
        pruned,
        metadata={
            "runs_removed": pruned,
            "runless_events_removed": events,
            "check_executions_removed": checks,
            "retention_days": days,
            "created_before": created_before.isoformat(),
        },
    )


@dg.op(description="Deletes the embedded PostgreSQL's rotated log files beyond SHOPSTREAM_LOG_KEEP.")
def prune_postgres_logs(context: dg.OpExecutionContext) -> dg.Output[int]:
    # PostgreSQL rotates its log by size but never deletes a file; a server start prunes too,
    # and a server runs for months between starts.
    settings = load_settings()
    removed = EmbeddedPostgres(settings).prune_server_logs() if settings.database_embedded else []
    context.log.info(f"removed {len(removed)} rotated PostgreSQL log files")
    return dg.Output(len(removed), metadata={"files_removed": len(removed)})


@dg.job(
    name=PRUNE_JOB_NAME,
    description=(
        "Removes finished Dagster runs older than SHOPSTREAM_DAGSTER_RETENTION_DAYS (default 7) with "
        "their event logs and compute logs, and the embedded PostgreSQL's rotated logs beyond SHOPSTREAM_LOG_KEEP."
    ),
)
def prune_dagster_history() -> None:
    prune_old_runs()
    prune_postgres_logs()


prune_dagster_history_schedule = dg.ScheduleDefinition(
    name="prune_dagster_history_daily",
    job=prune_dagster_history,
    # Off the hour and away from the 02:30 full rebuild.
    cron_schedule="47 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


LEDGER_ROLL_UP_JOB_NAME = "roll_up_bronze_ledger"


class LedgerRollUpConfig(dg.Config):
    keep_days: int | None = None
    """Roll up per-batch ledger rows committed more than this many days ago (default SHOPSTREAM_LEDGER_KEEP_DAYS)."""


@dg.op(description="Folds the Bronze ledger's per-batch rows older than the keep age into one row per topic and hour.")
def roll_up_old_ledger_rows(
    context: dg.OpExecutionContext, config: LedgerRollUpConfig, postgres: PostgresResource
) -> dg.Output[int]:
    days = config.keep_days if config.keep_days is not None else load_settings().ledger_keep_days
    if days < 1:
        raise dg.Failure(description=f"keep_days must be at least 1: got {days}")
    with postgres.connect() as conn:
        rolled = roll_up_ledger(conn, timedelta(days=days))
    context.log.info(f"rolled {rolled.batches:,} ledger rows older than {days} days into {rolled.hours:,} hourly rows")
    return dg.Output(
        rolled.batches,
        metadata={"batches_rolled_up": rolled.batches, "hours_written": rolled.hours, "keep_days": days},
    )


@dg.job(
    name=LEDGER_ROLL_UP_JOB_NAME,
    description=(
        "Rolls the Bronze ledger's per-batch rows older than SHOPSTREAM_LEDGER_KEEP_DAYS (default 7) up into "
        "bronze.ingest_batches_hourly (per topic, partition and hour); totals, offsets and cursors do not move."
    ),
)
def roll_up_bronze_ledger() -> None:
    roll_up_old_ledger_rows()


roll_up_bronze_ledger_schedule = dg.ScheduleDefinition(
    name="roll_up_bronze_ledger_hourly",
    job=roll_up_bronze_ledger,
    # Off the quarter hours the checks and tests use.
    cron_schedule="41 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
