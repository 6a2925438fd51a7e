"""The real ``dbt build`` of the end-to-end checks, run in the test process on a parse it keeps.

dbt's programmatic runner is the one its CLI wraps, so the build is the same; what a subprocess
added was a Python start, dbt's import and a full parse of the project, every time. The parse is
``prepare_dbt_manifest``'s (a ``dbt parse`` subprocess, never in this process: see
``dbt_in_process.warm_up`` on dbt's static parser and forks), kept per process, server and
database name: the fault tests' one database name shares it between them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shopstream import database
from shopstream.settings import environment_overridden
from shopstream_assets.runtime.dagster_instance import DBT_PROFILE_VARIABLES, DBT_PROJECT_DIR, prepare_dbt_manifest
from shopstream_assets.runtime.dbt_in_process import invoke_dbt
from shopstream_cli.bench.dbt import dbt_environment

# The Silver tests scan all of history (tag full_scan); the Gold ones run.
BUILD_ARGS = ("build", "--exclude", "tag:full_scan")


@dataclass(frozen=True)
class DbtRun:
    success: bool
    seconds: float
    errors: str  # dbt's error lines, the last 25
    messages: str  # every result line dbt printed (one per model, test, seed)


def profile_environment(database_url: str) -> dict[str, str]:
    """The variables dbt's profile reads, for ``database_url``."""
    full = dbt_environment(database_url, base={})
    return {name: full[name] for name in (*DBT_PROFILE_VARIABLES, *database.ssl_environment(database_url))}


def prepared_parse(database_url: str) -> Path:
    """A folder holding dbt's parse of the project for ``database_url`` (made once per process, server
    and database name): what ``invoke_dbt`` and the Dagster run path take as ``prepared_target``."""
    parts = database.url_parts(database_url)
    prepared = Path(tempfile.gettempdir()) / f"shopstream-e2e-dbt-parse-{os.getpid()}-{parts.port}-{parts.database}"
    if not prepared.exists():
        atexit.register(shutil.rmtree, prepared, ignore_errors=True)
    prepare_dbt_manifest(profile_environment(database_url), prepared, progress=lambda message: None)
    return prepared


def run_dbt_in_process(args: Sequence[str], database_url: str, target_path: Path) -> DbtRun:
    """``dbt <args>`` on ``database_url``, in this process."""
    environment = profile_environment(database_url)
    began = time.perf_counter()
    prepared = prepared_parse(database_url)
    with environment_overridden(environment):
        invocation = invoke_dbt(
            args,
            project_dir=DBT_PROJECT_DIR,
            profiles_dir=DBT_PROJECT_DIR,
            target_path=target_path,
            prepared_target=prepared,
            environment=environment,
            # Nothing here reads dbt's artifacts: its events carry every result.
            write_json=False,
        )
    return DbtRun(
        invocation.success,
        time.perf_counter() - began,
        "\n".join(invocation.error_messages()[-25:]),
        "\n".join(event["info"]["msg"] for event in invocation.events),
    )


def dbt_build(database_url: str, target_path: Path) -> DbtRun:
    """``dbt build`` of every model (full-scan tests left out) on ``database_url``."""
    return run_dbt_in_process(BUILD_ARGS, database_url, target_path)
