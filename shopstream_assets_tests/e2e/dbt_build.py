"""The real ``dbt build`` of the end-to-end checks, run in the test process on a parse it keeps.

dbt's programmatic runner is the one its CLI wraps, so the build is the same; what a subprocess
added was a Python start, dbt's import and a full parse of the project, every time. The parse is
``dbt_runs.prepared_parse``'s (a ``dbt parse`` subprocess, never in this process: see
``dbt_in_process.warm_up`` on dbt's static parser and forks), kept per process, server and
database name: the fault tests' one database name shares it between them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shopstream_assets_tests.dbt.dbt_runs import invoke_on_prepared_parse

# The Silver tests scan all of history (tag full_scan); the Gold ones run.
BUILD_ARGS = ("build", "--exclude", "tag:full_scan")


@dataclass(frozen=True)
class DbtOutcome:
    success: bool
    seconds: float
    errors: str  # dbt's error lines, the last 25
    messages: str  # every result line dbt printed (one per model, test, seed)


def dbt_outcome_in_process(args: Sequence[str], database_url: str, target_path: Path) -> DbtOutcome:
    """``dbt <args>`` on ``database_url``, in this process, pass or fail (``dbt_runs.run_dbt_in_process``
    fails the test on a failed dbt; a fault test may expect one)."""
    began = time.perf_counter()
    # Nothing here reads dbt's artifacts: its events carry every result.
    invocation = invoke_on_prepared_parse(args, database_url, target_path, write_json=False)
    return DbtOutcome(
        invocation.success,
        time.perf_counter() - began,
        "\n".join(invocation.error_messages()[-25:]),
        "\n".join(event["info"]["msg"] for event in invocation.events),
    )


def dbt_build(database_url: str, target_path: Path) -> DbtOutcome:
    """``dbt build`` of every model (full-scan tests left out) on ``database_url``."""
    return dbt_outcome_in_process(BUILD_ARGS, database_url, target_path)
