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


def missing() -> list[str]:
    """The names above that the installed Dagster lacks."""
    return PRIVATE.missing()


def sensor_loop_floor() -> float:
    """How often, at most, dagster-daemon looks at its sensors (a module constant with no setting)."""
    import dagster._daemon.sensor as sensor_daemon

    return float(sensor_daemon.MIN_INTERVAL_LOOP_TIME)


def set_sensor_loop(seconds: float) -> None:
    """dagster-daemon started in this process looks at its sensors every ``seconds``."""
    import dagster._daemon.sensor as sensor_daemon

    sensor_daemon.MIN_INTERVAL_LOOP_TIME = seconds


def __getattr__(name: str) -> Any:
    return (PRIVATE_FOR_TESTS if name in PRIVATE_FOR_TESTS.names else PRIVATE).resolve(name)
