"""Every private Dagster name ShopStream uses; nothing else imports ``dagster._*``.

They serve the fast run path: the warm run worker (``warm_run_launcher``) and a sensor loop as
short as the Bronze sensor's interval (``dagster_instance.run_daemon``). Each run the stock
``DefaultRunLauncher`` starts is a fresh Python process that imports Dagster, dbt and the code
location again before dbt starts, and dagster-daemon looks at sensors no more often than a
fixed floor: both are seconds of event-to-Gold latency per refresh (docs/performance.md has the
figures). Dagster exports no API for either, so these names may change in any release: the
start-up check (``run_path``) runs on the stock path when :func:`missing` names any of them,
and ``shopstream_assets_tests/runtime/test_private_apis.py`` fails naming them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shopstream_assets.runtime.private_api import PrivateNames

PRIVATE = PrivateNames(
    "dagster",
    {
        # A run launcher is a RunLauncher configured from dagster.yaml (a ConfigurableClass);
        # Dagster exports neither base class, nor the context and health types it passes.
        "RunLauncher": "dagster._core.launcher:RunLauncher",
        "LaunchRunContext": "dagster._core.launcher:LaunchRunContext",
        "CheckRunHealthResult": "dagster._core.launcher.base:CheckRunHealthResult",
        "WorkerStatus": "dagster._core.launcher.base:WorkerStatus",
        "ConfigurableClass": "dagster._serdes:ConfigurableClass",
        "ConfigurableClassData": "dagster._serdes:ConfigurableClassData",
        # The body of `dagster api execute_run`: what a forked child runs to be a run worker.
        "execute_run_command_body": "dagster._cli.api:_execute_run_command_body",
        # A forked run worker watches for CANCELING itself, as `dagster api execute_run` does.
        "start_run_cancellation_thread": (
            "dagster._core.execution.run_cancellation_thread:start_run_cancellation_thread"
        ),
        # How Dagster turns SIGINT (its cancel) into an interrupt at a safe point, and how dbt
        # in process receives it as KeyboardInterrupt so that it cancels its queries.
        "capture_interrupts": "dagster._utils.interrupts:capture_interrupts",
        "raise_interrupts_as": "dagster._utils.interrupts:raise_interrupts_as",
        # dagster-daemon's own CLI, run in a process whose sensor loop was shortened first.
        "daemon_cli_main": "dagster._daemon.cli:main",
        # The sensor loop's floor: a module constant with no setting (sensor_loop_floor, set_sensor_loop).
        "MIN_INTERVAL_LOOP_TIME": "dagster._daemon.sensor:MIN_INTERVAL_LOOP_TIME",
        # dagster-postgres opens a connection per query unless told, as the webserver tells it,
        # to keep one open; a run worker forked from the warm worker does the same. A public
        # method name, but documented for no other use: fenced, so an upgrade that drops it shows.
        "DagsterInstance.optimize_for_webserver": "dagster:DagsterInstance.optimize_for_webserver",
        # A pool's limit row is written by the first step that claims the pool; two runs forked at
        # once on a new instance both insert it, and Dagster's fallback update then runs in the
        # failed transaction and fails a run. The warm worker writes it once, before any fork.
        "initialize_concurrency_limit_to_default": (
            "dagster._core.storage.event_log.base:EventLogStorage.initialize_concurrency_limit_to_default"
        ),
    },
)
# Tests only: a job's code origin without a module-level job, and Dagster's run tags. Kept apart
# from PRIVATE so that their loss fails the fence's test without moving production to the stock path.
PRIVATE_FOR_TESTS = PrivateNames(
    "dagster",
    {
        "ReconstructableRepository": "dagster._core.definitions.reconstruct:ReconstructableRepository",
        "RUN_KEY_TAG": "dagster._core.storage.tags:RUN_KEY_TAG",
        "SENSOR_NAME_TAG": "dagster._core.storage.tags:SENSOR_NAME_TAG",
    },
)
# Maintenance only: events reported outside a run (the Bronze sensor's materializations, the
# checks' evaluations) can be deleted through the public API only all at once (``delete_run("")``
# removes every one, today's too), so pruning them by age reads Dagster's event log tables. Kept
# apart from PRIVATE: their loss leaves that history unpruned (the prune says so), not the run path.
PRIVATE_FOR_MAINTENANCE = PrivateNames(
    "dagster",
    {
        "SqlEventLogStorage": "dagster._core.storage.event_log.sql_event_log:SqlEventLogStorage",
        "SqlEventLogStorageTable": "dagster._core.storage.event_log.schema:SqlEventLogStorageTable",
        "AssetEventTagsTable": "dagster._core.storage.event_log.schema:AssetEventTagsTable",
        "AssetCheckExecutionsTable": "dagster._core.storage.event_log.schema:AssetCheckExecutionsTable",
        "RUNLESS_RUN_ID": "dagster._core.instance.utils:RUNLESS_RUN_ID",
    },
)
RUNLESS_PRUNE_BATCH = 5_000


def prune_runless_history(instance: Any, before: datetime) -> tuple[int, int] | None:
    """(events, check executions) deleted: events reported with no run and finished check executions,
    both older than ``before``; the newest execution of each check stays (the UI's current status).

    None when the installed Dagster lacks a name above or its event log is not SQL: nothing pruned.
    Check executions carry the database server's local time, so ``before`` is compared in UTC: the
    embedded server and Dagster's own images run in UTC.
    """
    if PRIVATE_FOR_MAINTENANCE.missing():
        return None
    import sqlalchemy as sa

    names = PRIVATE_FOR_MAINTENANCE
    storage = instance.event_log_storage
    if not isinstance(storage, names.resolve("SqlEventLogStorage")):
        return None
    events_table = names.resolve("SqlEventLogStorageTable")
    tags_table = names.resolve("AssetEventTagsTable")
    checks_table = names.resolve("AssetCheckExecutionsTable")
    cutoff = before.astimezone(UTC).replace(tzinfo=None)  # both tables hold naive UTC times
    events = 0
    while True:  # short transactions: the sensor reports into the same tables meanwhile
        with storage.index_connection() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    sa.select(events_table.c.id)
                    .where(events_table.c.run_id == names.resolve("RUNLESS_RUN_ID"), events_table.c.timestamp < cutoff)
                    .order_by(events_table.c.id)
                    .limit(RUNLESS_PRUNE_BATCH)
                ).fetchall()
            ]
            if not ids:
                break
            conn.execute(tags_table.delete().where(tags_table.c.event_id.in_(ids)))
            events += conn.execute(events_table.delete().where(events_table.c.id.in_(ids))).rowcount
    newest = sa.select(sa.func.max(checks_table.c.id)).group_by(checks_table.c.asset_key, checks_table.c.check_name)
    with storage.index_connection() as conn:
        checks = conn.execute(
            checks_table.delete().where(
                checks_table.c.create_timestamp < cutoff,
                checks_table.c.execution_status != "PLANNED",
                checks_table.c.id.not_in(newest),
            )
        ).rowcount
    return events, checks


def missing() -> list[str]:
    """The names above that the installed Dagster lacks."""
    return PRIVATE.missing()


def optimize_storage_connections(
    instance: Any, *, statement_timeout: int, pool_recycle: int, max_overflow: int
) -> None:
    """The instance's storages keep a connection open (``optimize_for_webserver``); the
    statement timeout in milliseconds, 0 for none."""
    PRIVATE.resolve("DagsterInstance.optimize_for_webserver")(
        instance, statement_timeout=statement_timeout, pool_recycle=pool_recycle, max_overflow=max_overflow
    )


def initialize_pool_limit(instance: Any, pool: str) -> None:
    """Write ``pool``'s limit row (dagster.yaml's default limit) unless it is there."""
    PRIVATE.resolve("initialize_concurrency_limit_to_default")(instance.event_log_storage, pool)


# A run worker's storage connections (keep_storage_connections_open): one kept open, and a few
# more for its threads (cancellation, the dbt step's event writes).
RUN_POOL_MAX_OVERFLOW = 5
RUN_POOL_RECYCLE_S = 3600


def keep_storage_connections_open(instance: Any) -> None:
    """A run worker's instance keeps its storage connections open for the run, as the webserver's does.

    dagster-postgres opens a new connection for every read and write by default (a pool would
    pile up connections across the many instances a long-lived process may make), and a run
    worker makes a few hundred: each a TCP connect and a SCRAM handshake, seconds of a
    refresh in all. A run worker makes one instance and ends, so its connections end with it.
    """
    optimize_storage_connections(
        instance, statement_timeout=0, pool_recycle=RUN_POOL_RECYCLE_S, max_overflow=RUN_POOL_MAX_OVERFLOW
    )


def preload_run_worker(pool: str) -> None:
    """Import in the warm worker what each forked run worker would otherwise import itself.

    The instance's storage (dagster-postgres, SQLAlchemy, alembic) is imported only when an
    instance is made, and the names above only when first used: both would be seconds of
    every run's start. Making an instance once here imports them all; it is closed before any
    fork, and each run worker makes its own (connections are never shared across a fork).
    It also writes ``pool``'s limit row, which runs forked at once would race to write.
    """
    from dagster import DagsterInstance

    for name in PRIVATE.names:
        PRIVATE.resolve(name)
    with DagsterInstance.get() as instance:
        instance.get_run_records(limit=1)
        initialize_pool_limit(instance, pool)


def sensor_loop_floor() -> float:
    """How often, at most, dagster-daemon looks at its sensors (a module constant with no setting)."""
    import dagster._daemon.sensor as sensor_daemon

    return float(sensor_daemon.MIN_INTERVAL_LOOP_TIME)


def set_sensor_loop(seconds: float) -> None:
    """dagster-daemon started in this process looks at its sensors every ``seconds``."""
    import dagster._daemon.sensor as sensor_daemon

    sensor_daemon.MIN_INTERVAL_LOOP_TIME = seconds


def __getattr__(name: str) -> Any:
    for fence in (PRIVATE_FOR_TESTS, PRIVATE_FOR_MAINTENANCE):
        if name in fence.names:
            return fence.resolve(name)
    return PRIVATE.resolve(name)
