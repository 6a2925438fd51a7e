"""Dagster's run queue, except for runs tagged to launch at once: the Bronze sensor's refreshes.

The queue's daemon looks at queued runs once a second at best (``dequeue_interval_seconds`` is a
whole number) and then reads the run, its pools and the runs in progress before it launches:
between the sensor's request and the launch of a refresh, over a second on two cores, each
second of it event-to-Gold latency, paid in every cycle. A refresh does not need the queue to
wait its turn: the sensor requests one only when no other refresh is in flight, and the `dbt`
pool still holds its dbt step until the previous dbt step has ended, as in a queued run (the
step claims the pool's slot when it starts). Every other run (the UI's, the schedules', a
backfill's) goes through the queue as before, with its limits.

The sensor's runs launch in the process that evaluates the sensor (dagster-daemon), through the
instance's run launcher, as Dagster's own ``DefaultRunCoordinator`` launches every run. Only
public names: ``QueuedRunCoordinator`` and its ``submit_run``, the instance's ``launch_run``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

# The tag a run request sets to skip the queue (defs/streaming/sensors.py sets it on its refreshes).
LAUNCH_TAG = "shopstream/launch"
LAUNCH_IMMEDIATELY = "immediately"


class ImmediateRunCoordinator(dg.QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that launches runs tagged ``shopstream/launch: immediately`` at once."""

    def submit_run(self, context: Any) -> dg.DagsterRun:
        run = context.dagster_run
        if run.tags.get(LAUNCH_TAG) != LAUNCH_IMMEDIATELY or run.status != dg.DagsterRunStatus.NOT_STARTED:
            return super().submit_run(context)
        instance = context.workspace.instance
        instance.launch_run(run.run_id, context.workspace)
        launched = instance.get_run_by_id(run.run_id)
        if launched is None:
            raise dg.DagsterInvariantViolationError(f"run {run.run_id} vanished while it was launched")
        return launched
