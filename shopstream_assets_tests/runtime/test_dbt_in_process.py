"""dbt inside the run worker: on the prepared parse while it is current, parsing when it is not,
and a failure that names dbt's error. Real dbt against a real PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopstream import database
from shopstream.services import Endpoints
from shopstream_assets.runtime.dagster_instance import (
    DBT_PROJECT_DIR,
    MANIFEST_STAMP,
    dbt_profile_environment,
    prepare_dbt_manifest,
)
from shopstream_assets.runtime.dbt_in_process import DbtInvocation, invoke_dbt

STAGING = "stg_clickstream_events"


@pytest.fixture
def dbt_environment(database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's database in the SHOPSTREAM_DB_* variables dbt's profile reads."""
    environment = dbt_profile_environment(Endpoints(database_url, database_url, "unused:9092"))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def _run_staging(prepared: Path, run_target: Path, environment: dict[str, str]) -> DbtInvocation:
    return invoke_dbt(
        ["run", "--select", STAGING],
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        target_path=run_target,
        prepared_target=prepared,
        environment=environment,
    )


def _model_results(invocation: DbtInvocation) -> list[tuple[str, str]]:
    return [
        (event["data"]["node_info"]["node_name"], event["data"]["node_info"]["node_status"])
        for event in invocation.events
        if event["info"]["name"] == "LogModelResult"
    ]


def test_a_current_preparation_is_reused_and_a_stale_one_is_parsed_again(
    dbt_environment: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    prepared = tmp_path / "prepared"
    prepare_dbt_manifest(dbt_environment, prepared, progress=lambda message: None)

    reused = _run_staging(prepared, tmp_path / "run-1", dbt_environment)

    assert reused.success, reused.error_messages()
    assert _model_results(reused) == [(STAGING, "success")]
    assert reused.timings is not None and reused.timings.manifest_reused
    with database.connect(database_url) as conn:
        assert conn.execute(f"select to_regclass('silver.{STAGING}')").fetchone()[0] is not None

    # As if a model had been edited after `shopstream up` prepared the project.
    (prepared / MANIFEST_STAMP).write_text("stale")
    parsed = _run_staging(prepared, tmp_path / "run-2", dbt_environment)

    assert parsed.success, parsed.error_messages()
    assert _model_results(parsed) == [(STAGING, "success")]
    assert parsed.timings is not None and not parsed.timings.manifest_reused


def test_a_failed_model_is_reported_with_dbt_s_error(
    dbt_environment: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    prepared = tmp_path / "prepared"
    prepare_dbt_manifest(dbt_environment, prepared, progress=lambda message: None)
    with database.connect(database_url) as conn:
        conn.execute("drop table bronze.clickstream_events cascade")

    failed = _run_staging(prepared, tmp_path / "run", dbt_environment)

    assert not failed.success
    assert _model_results(failed) == [(STAGING, "error")]
    assert any("clickstream_events" in message for message in failed.error_messages()), failed.error_messages()
