"""dbt in the test's own process, on a parse made once per process and database.

A ``dbt`` subprocess imports dbt again and, with no partial parse of the same profile in its
target folder, parses the whole project before running a model; the dbt tests run dbt a dozen
times each. Here ``prepare_dbt_manifest`` (the run path's own preparation: one ``dbt parse``)
runs once per test process and database, and every invocation is handed that parse, as the
Dagster run worker is (``shopstream_assets.runtime.dbt_in_process``). What dbt does to the
database is the same: the same models, tests and SQL. The dbt subprocess itself is checked
where it is what a command runs (``shopstream bench dbt``: ``test_dbt_project.py``).

The database's name is part of the parse (dbt keys partial parsing on the profile), so tests
that want the parse shared keep their database's name stable within a process
(``conftest.py``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shopstream import database
from shopstream.settings import environment_overridden
from shopstream_assets.runtime.dagster_instance import DBT_PROFILE_VARIABLES, DBT_PROJECT_DIR, prepare_dbt_manifest
from shopstream_assets.runtime.dbt_in_process import DbtInvocation, invoke_dbt
from shopstream_cli.bench.dbt import dbt_environment

LOG_FILE = "dbt.log"


def profile_environment(database_url: str) -> dict[str, str]:
    """The SHOPSTREAM_DB_* variables dbt's profile reads, for ``database_url``."""
    environment = dbt_environment(database_url, base={})
    return {
        **{name: environment[name] for name in DBT_PROFILE_VARIABLES},
        **database.ssl_environment(database_url),
    }


def prepared_parse(database_url: str) -> Path:
    """Where this process keeps dbt's parse of the project for ``database_url``'s database; parsed
    (one ``dbt parse`` subprocess) only when missing or stale. Returns the folder."""
    environment = profile_environment(database_url)
    parts = database.url_parts(database_url)
    prepared = Path(tempfile.gettempdir()) / f"shopstream-test-dbt-parse-{os.getpid()}-{parts.port}-{parts.database}"
    if not prepared.exists():
        atexit.register(shutil.rmtree, prepared, ignore_errors=True)
    prepare_dbt_manifest(environment, prepared, progress=lambda message: None)
    return prepared


@dataclass(frozen=True)
class DbtRun:
    """One finished in-process dbt command: its log lines and each node's status."""

    command: str
    output: str  # what this invocation wrote to dbt.log (the CLI's output and more)
    node_status: dict[str, str]
    target_path: Path

    def manifest(self) -> dict:
        return json.loads((self.target_path / "manifest.json").read_text())


def invoke_on_prepared_parse(
    args: Sequence[str], database_url: str, target_path: Path, *, write_json: bool = True
) -> DbtInvocation:
    """``dbt <args>`` on ``database_url``'s database in this process, on :func:`prepared_parse`, pass or fail."""
    environment = profile_environment(database_url)
    prepared = prepared_parse(database_url)
    with environment_overridden(environment):
        return invoke_dbt(
            args,
            project_dir=DBT_PROJECT_DIR,
            profiles_dir=DBT_PROJECT_DIR,
            target_path=target_path,
            prepared_target=prepared,
            environment=environment,
            write_json=write_json,
        )


def run_dbt_in_process(args: list[str], database_url: str, target_path: Path) -> DbtRun:
    """``dbt <args>`` on ``database_url``'s database in this process; fails the test if dbt fails.
    Artifacts (run_results.json, manifest.json, dbt.log) go to ``target_path``."""
    target_path.mkdir(parents=True, exist_ok=True)
    log = target_path / LOG_FILE
    logged_before = log.stat().st_size if log.exists() else 0
    invocation = invoke_on_prepared_parse(args, database_url, target_path)
    with log.open("rb") as lines:
        lines.seek(logged_before)
        output = lines.read().decode(errors="replace")
    assert invocation.success, f"{invocation.command} failed:\n" + "\n".join(invocation.error_messages())
    assert invocation.timings is not None and invocation.timings.manifest_reused, (
        f"{invocation.command} parsed the project again instead of using the prepared parse"
    )
    results_path = target_path / "run_results.json"
    node_status = (
        {result["unique_id"]: result["status"] for result in json.loads(results_path.read_text())["results"]}
        if results_path.exists()
        else {}
    )
    return DbtRun(invocation.command, output, node_status, target_path)
