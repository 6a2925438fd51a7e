"""On-demand materializations in process: the Bronze replay (real Spark) and the dbt models (real dbt)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from shopstream.database import connect
from shopstream.settings import Settings
from shopstream_assets.defs.streaming.sensors import refresh_silver_gold_job
from shopstream_assets.runtime.dagster_instance import venv_executable
from shopstream_assets_tests.conftest import produce_events
from streaming.job import replay_topic

BRONZE = dg.AssetKey(["bronze", "clickstream_events"])
DAILY_METRICS = dg.AssetKey(["gold", "mart_daily_metrics"])
STAGING = dg.AssetKey(["silver", "stg_clickstream_events"])
SESSIONS = dg.AssetKey(["silver", "int_user_sessions"])
# defs/dbt/assets.py's key, spelled here so this module imports the dbt assets only once the manifest exists.
ROWS_AFFECTED = "rows_affected"


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance, *keys: dg.AssetKey) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=list(keys))


def _materializations(
    result: dg.ExecuteInProcessResult,
) -> dict[dg.AssetKey, dg.AssetMaterialization]:
    return {
        event.asset_key: event.step_materialization_data.materialization
        for event in result.get_asset_materialization_events()
    }


def test_bronze_materialization_replays_the_topic_once(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    process_env: Settings,
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
) -> None:
    sent = produce_events(kafka_bootstrap, topic, 3_000, bad_ratio=0.05)

    first = _materialize(defs, dagster_instance, BRONZE)
    assert first.success
    metadata = {key: value.value for key, value in _materializations(first)[BRONZE].metadata.items()}
    assert metadata["messages"] == sent
    assert metadata["rows_written"] + metadata["rejects"] + metadata["duplicates"] == sent
    assert metadata["rejects"] > 0 and metadata["batch_range"] != "none"
    with connect(database_url) as conn:
        (rows,) = conn.execute("select count(*) from bronze.clickstream_events").fetchone()
        (batches,) = conn.execute("select count(*) from bronze.ingest_batches where source = 'replay'").fetchone()
    assert rows == metadata["rows_written"]

    second = _materialize(defs, dagster_instance, BRONZE)
    assert second.success
    again = _materializations(second)[BRONZE]
    assert again.metadata["messages"].value == 0 and again.metadata["batch_range"].value == "none"
    with connect(database_url) as conn:
        assert conn.execute("select count(*) from bronze.clickstream_events").fetchone() == (rows,)
        assert conn.execute("select count(*) from bronze.ingest_batches").fetchone() == (batches,)


def test_dbt_assets_build_gold_with_checks_and_row_counts(
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    process_env: Settings,
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
) -> None:
    produce_events(kafka_bootstrap, topic, 1_000, seed=11)
    replay_topic(spark, process_env, database_url=database_url, kafka_bootstrap=kafka_bootstrap, topic=topic)
    dbt_keys = [key for key in defs.resolve_asset_graph().get_all_asset_keys() if key.path[0] in ("silver", "gold")]

    result = _materialize(defs, dagster_instance, *dbt_keys)

    assert result.success
    materialized = _materializations(result)
    assert set(materialized) == set(dbt_keys)
    with connect(database_url) as conn:
        (events_in_gold,) = conn.execute("select sum(events) from gold.mart_daily_metrics").fetchone()
        (bronze_rows,) = conn.execute("select count(*) from bronze.clickstream_events").fetchone()
    assert events_in_gold == bronze_rows
    staged = materialized[dg.AssetKey(["silver", "stg_clickstream_events"])]
    assert staged.metadata["dagster/row_count"].value == bronze_rows
    daily = materialized[DAILY_METRICS]
    with connect(database_url) as conn:
        (daily_rows,) = conn.execute("select count(*) from gold.mart_daily_metrics").fetchone()
    assert daily.metadata["dagster/row_count"].value == daily_rows > 0
    checks = result.get_asset_check_evaluations()
    assert len(checks) >= 20 and all(check.passed for check in checks), [c.check_name for c in checks if not c.passed]
    assert DAILY_METRICS in {check.asset_key for check in checks}


def test_the_dbt_resource_s_target_reaches_dbt(
    dbt_manifest: Path,
    dagster_instance: dg.DagsterInstance,
    process_env: Settings,
) -> None:
    """dbt runs in the worker, not through ``DbtCliResource.cli``: its profile and target still apply."""
    # Imported once the manifest exists (the dbt_manifest fixture): @dbt_assets reads it.
    from shopstream_assets.defs.dbt.assets import shopstream_dbt_models
    from shopstream_assets.defs.dbt.project import shopstream_dbt_project
    from shopstream_assets.defs.resources import ShopstreamDbtCliResource

    staging = dg.AssetKey(["silver", "stg_clickstream_events"])
    resource = ShopstreamDbtCliResource(
        project_dir=shopstream_dbt_project,
        dbt_executable=venv_executable("dbt"),
        target="no_such_target",
    )

    result = dg.materialize(
        [shopstream_dbt_models],
        selection=[staging],
        resources={"dbt": resource},
        instance=dagster_instance,
        raise_on_error=False,
    )

    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "--target no_such_target" in description and "no_such_target" in description.split("failed:")[1]


@pytest.mark.parametrize("fast_runs", ["1", "0"], ids=["dbt_in_worker", "dbt_cli"])
def test_a_refresh_reports_the_rows_each_model_wrote(
    fast_runs: str,
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    spark: object,
    process_env: Settings,
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sensor refresh's materializations say what it wrote (dbt's rows affected), not how big the table is.

    The first refresh builds every table whole, so its row count is the table's; the second adds
    the new batches only, and its figures are the rows it inserted.
    """
    monkeypatch.setenv("SHOPSTREAM_FAST_RUNS", fast_runs)
    refresh = defs.resolve_job_def(refresh_silver_gold_job.name)
    produce_events(kafka_bootstrap, topic, 800, seed=21)
    replay_topic(spark, process_env, database_url=database_url, kafka_bootstrap=kafka_bootstrap, topic=topic)

    first = _materializations(refresh.execute_in_process(instance=dagster_instance))
    with connect(database_url) as conn:
        (staged_rows,) = conn.execute("select count(*) from silver.stg_clickstream_events").fetchone()
        (sessions,) = conn.execute("select count(*) from silver.int_user_sessions").fetchone()
    assert first[STAGING].metadata["dagster/row_count"].value == staged_rows > 0
    assert first[STAGING].metadata[ROWS_AFFECTED].value == staged_rows
    assert first[SESSIONS].metadata[ROWS_AFFECTED].value == sessions > 0

    with connect(database_url) as conn:
        (first_last_batch,) = conn.execute("select max(batch_id) from silver.stg_clickstream_events").fetchone()

    produce_events(kafka_bootstrap, topic, 300, seed=22)
    replay_topic(spark, process_env, database_url=database_url, kafka_bootstrap=kafka_bootstrap, topic=topic)
    second = _materializations(refresh.execute_in_process(instance=dagster_instance))
    with connect(database_url) as conn:
        (new_rows,) = conn.execute(
            "select count(*) from silver.stg_clickstream_events where batch_id > %s", (first_last_batch,)
        ).fetchone()
        (touched_sessions,) = conn.execute(
            "select count(*) from silver.int_user_sessions where last_batch_id > %s", (first_last_batch,)
        ).fetchone()
    staged = second[STAGING].metadata
    assert staged[ROWS_AFFECTED].value == new_rows > 0
    # An incremental run does not know the table's size without counting it, so it does not say it.
    assert "dagster/row_count" not in staged
    assert second[SESSIONS].metadata[ROWS_AFFECTED].value == touched_sessions > 0
    assert all(ROWS_AFFECTED in materialization.metadata for materialization in second.values())
