"""No password in what Dagster keeps: after a real run (the Bronze sensor's dbt refresh, launched on the
instance `shopstream up` configures, in a run worker of its own), neither Dagster's storage (every
table of it: runs, event logs, tags, asset records) nor any file under SHOPSTREAM_HOME (the compute
logs, the process logs) holds the PostgreSQL passwords the run had in its environment."""

from __future__ import annotations

import dagster as dg
import pytest
from psycopg import sql

from shopstream import database
from shopstream.settings import Settings
from shopstream_assets.runtime.warm_run_launcher import WarmRunLauncher
from shopstream_assets_tests.runtime import test_warm_run_launcher as warm_runs
from shopstream_assets_tests.security.test_no_secret_in_output import files_holding

# The instance's launcher, its warm worker prepared as `shopstream up` prepares it.
launcher = warm_runs.launcher


def _storage_rows_holding(url: str, secrets: list[str]) -> list[str]:
    """``schema.table`` of each row of Dagster's storage (this test's database) whose text holds a secret."""
    found = []
    with database.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert ("public", "event_logs") in tables and ("public", "runs") in tables, tables
        for schema, table in tables:
            relation = sql.Identifier(schema, table)
            for secret in secrets:
                query = sql.SQL("select count(*) from {} as row where strpos(row::text, %s) > 0").format(relation)
                (count,) = conn.execute(query, (secret,)).fetchone()
                found += [f"{schema}.{table}"] * count
    return found


@pytest.mark.servers
def test_a_dagster_run_leaves_no_password_in_its_storage_or_logs(
    dagster_instance: dg.DagsterInstance,
    launcher: WarmRunLauncher,
    process_env: Settings,
    database_url: str,
    dashboard_database_url: str,
) -> None:
    secrets = sorted({database.url_parts(url).password for url in (database_url, dashboard_database_url)} - {""})
    if not secrets:
        pytest.skip("the session's PostgreSQL takes no password: there is none to look for")

    run_id = warm_runs._launch(dagster_instance, launcher)
    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    assert warm_runs._wait_for(dagster_instance, run_id, finished).status == dg.DagsterRunStatus.SUCCESS
    # The run wrote what is searched: its events, and compute logs under SHOPSTREAM_HOME.
    assert dagster_instance.get_records_for_run(run_id).records
    home = process_env.home
    compute_logs = [path for path in home.rglob("*") if run_id in str(path) and path.is_file()]
    assert compute_logs, sorted(str(path) for path in home.rglob("*"))

    # The searches see the run (its id is in its storage rows and its compute logs' paths or text) ...
    assert "public.runs" in _storage_rows_holding(database_url, [run_id])
    assert "public.event_logs" in _storage_rows_holding(database_url, [run_id])
    # ... and no password.
    assert _storage_rows_holding(database_url, secrets) == []
    assert files_holding(home, secrets) == []  # dagster.yaml, compute logs, process logs
