"""Silver and Gold: every dbt model as an asset keyed exactly like its relation.

``silver/stg_clickstream_events`` is ``silver.stg_clickstream_events`` is
``dbt_project/models/staging/stg_clickstream_events.sql``. The Bronze source carries
``meta: {dagster: {asset_key: [bronze, clickstream_events]}}`` in its sources YAML, so the
staging model hangs off the Bronze asset and topic -> Bronze -> Silver -> Gold is one graph.
"""

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from shopstream_assets.defs.dbt.project import shopstream_dbt_project

DBT_OP_NAME = "shopstream_dbt"
STALE_RUN_FOLDER_S = 24 * 3600
OWNERS = ["team:data-engineering"]
# The marts refresh every few seconds while events stream in (the Bronze sensor); a
# minute without a refresh is worth a look, a quarter of an hour means the loop is stuck.
GOLD_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=1)
)

if not shopstream_dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"no dbt manifest at {shopstream_dbt_project.manifest_path}: `shopstream up` prepares it; by hand run "
        "`dbt parse --project-dir dbt_project --profiles-dir dbt_project` with the SHOPSTREAM_DB_* variables set"
    )


class ShopstreamDbtTranslator(DagsterDbtTranslator):
    """Keys are ``<relation schema>/<relation name>``; the layer is the group; Gold has a freshness policy."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] != "model":
            # Sources keep the key their YAML meta gives them (bronze/clickstream_events).
            return spec
        # The schema and alias dbt writes to, after the generate_schema_name macro.
        layer = props["schema"]
        spec = spec.replace_attributes(
            key=dg.AssetKey([layer, props.get("alias") or props["name"]]),
            group_name=layer,
            owners=OWNERS,
        )
        if layer == "gold":
            spec = spec.replace_attributes(freshness_policy=GOLD_FRESHNESS)
        return spec


translator = ShopstreamDbtTranslator(
    settings=DagsterDbtTranslatorSettings(enable_code_references=True)
)


class DbtRunConfig(dg.Config):
    full_refresh: bool = False
    """Rebuild incremental models from all of Bronze instead of the batches they have not seen."""


@contextmanager
def _run_target_path(context: dg.AssetExecutionContext) -> Iterator[Path]:
    """A target folder of this run's own, deleted afterwards.

    dagster-dbt gives every invocation a new folder under ``target/`` and keeps it; at a
    run every few seconds that is gigabytes a day. Dagster's event log keeps what matters.
    """
    runs = shopstream_dbt_project.project_dir / shopstream_dbt_project.target_path / "runs"
    # Folders of run workers that were killed before their clean-up.
    for stale in runs.glob("*"):
        with contextlib.suppress(FileNotFoundError):  # another run may be removing its own
            if time.time() - stale.stat().st_mtime > STALE_RUN_FOLDER_S:
                shutil.rmtree(stale, ignore_errors=True)
    path = runs / context.run.run_id
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dbt_assets(
    manifest=shopstream_dbt_project.manifest_path,
    project=shopstream_dbt_project,
    dagster_dbt_translator=translator,
    name=DBT_OP_NAME,
    # The Bronze source's tests scan all of Bronze in every run; Bronze has its own checks.
    exclude="source:*",
    pool="dbt",
)
def shopstream_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, config: DbtRunConfig
) -> Iterator[Any]:
    """`dbt run` for the selected models, then `dbt test` for the selected checks.

    Not `dbt build`: build holds each downstream model until the upstream tests finish, and
    those tests scan whole tables, so Gold would wait on them in every run. The Bronze
    sensor's runs select the models without their checks (freshness first); the tests run
    as asset checks every 10 minutes (defs/quality.py), in the daily rebuild and whenever a
    model is materialized from the UI. A double append to Silver, the one error that would
    corrupt Gold, fails the model itself through a unique index.
    """
    run_args = ["run", "--full-refresh"] if config.full_refresh else ["run"]
    with _run_target_path(context) as target_path:
        if context.selected_asset_keys:
            yield from (
                dbt.cli(run_args, context=context, target_path=target_path)
                .stream()
                .fetch_row_counts()
            )
        if context.selected_asset_check_keys:
            yield from dbt.cli(["test"], context=context, target_path=target_path).stream()


dbt_selection = dg.AssetSelection.assets(shopstream_dbt_models)

gold_full_rebuild_schedule = dg.ScheduleDefinition(
    name="gold_full_rebuild",
    description=(
        "Daily at 02:30 UTC: every dbt model rebuilt from all of Bronze (--full-refresh), "
        "so any drift in the incremental Silver and Gold tables is repaired. Off by default."
    ),
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    target=dbt_selection,
    run_config=dg.RunConfig(ops={DBT_OP_NAME: DbtRunConfig(full_refresh=True)}),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
