"""Silver and Gold: every dbt model as an asset keyed exactly like its relation.

``silver/stg_clickstream_events`` is ``silver.stg_clickstream_events`` is
``dbt_project/models/staging/stg_clickstream_events.sql``. The Bronze source carries
``meta: {dagster: {asset_key: [bronze, clickstream_events]}}`` in its sources YAML, so the
staging model hangs off the Bronze asset and topic -> Bronze -> Silver -> Gold is one graph.

dbt runs in the run worker's own process on the fast run path, through
``dbt.cli(...).stream()`` (a dbt process per command) on Dagster's stock one
(``shopstream_assets.runtime.run_path`` chooses).
"""

import contextlib
import re
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

from shopstream_assets.defs.dbt.project import DBT_POOL, DBT_TIMING_TAG_PREFIX, shopstream_dbt_project
from shopstream_assets.runtime.dbt_in_process import invoke_dbt, iter_raw_events
from shopstream_assets.runtime.run_path import run_path

DBT_OP_NAME = "shopstream_dbt"
STALE_RUN_FOLDER_S = 24 * 3600
# PostgreSQL's command tag of a model's main statement, which dbt reports as the model's result:
# "SELECT 5000" for a table created whole (CREATE TABLE AS), "INSERT 0 120" for rows added to one.
COMMAND_TAG = re.compile(r"^(?P<command>SELECT|INSERT|UPDATE|DELETE|MERGE)(?: \d+)? (?P<rows>\d+)$")
ROWS_AFFECTED = "rows_affected"
OWNERS = ["team:data-engineering"]
# The marts refresh every few seconds while events stream in (the Bronze sensor); a
# minute without a refresh is worth a look, a quarter of an hour means the loop is stuck.
GOLD_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=1))

if not shopstream_dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"no dbt manifest at {shopstream_dbt_project.manifest_path}: `shopstream up` prepares it; by hand run "
        "`dbt parse --project-dir dbt_project --profiles-dir dbt_project` with the SHOPSTREAM_DB_* variables set"
    )


class ShopstreamDbtTranslator(DagsterDbtTranslator):
    """Keys are ``<relation schema>/<relation name>``; the layer is the group; Gold has a freshness policy."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: Any) -> dg.AssetSpec:
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


translator = ShopstreamDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_code_references=True))


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


def rows_written_metadata(raw_event: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """What a model's run wrote, from dbt's own result line: no query on the model's table.

    Counting every table a refresh built read all of Silver on every sensor run, work that grew
    with history. The command tag is free: ``rows_affected`` is what this run inserted (or, for
    a table created whole, its rows), and ``dagster/row_count`` is given only when the run built
    the whole table, where the two are the same number.
    """
    if raw_event["info"]["name"] != "LogModelResult":
        return {}
    tag = COMMAND_TAG.match(str(raw_event["data"].get("status", "")).strip())
    if tag is None:
        return {}
    rows = int(tag["rows"])
    metadata = {ROWS_AFFECTED: dg.MetadataValue.int(rows)}
    if tag["command"] == "SELECT":
        metadata["dagster/row_count"] = dg.MetadataValue.int(rows)
    return metadata


def with_rows_written(dagster_event: Any, raw_event: Mapping[str, Any]) -> Any:
    """``dagster_event`` with :func:`rows_written_metadata` added when it is a model's Output."""
    if not isinstance(dagster_event, dg.Output):
        return dagster_event
    rows = rows_written_metadata(raw_event)
    return dagster_event.with_metadata({**dagster_event.metadata, **rows}) if rows else dagster_event


def dbt_in_worker(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    args: list[str],
    target_path: Path,
) -> Iterator[Any]:
    """``dbt <args>`` for the selected models or checks, in this run worker; their Dagster events.

    What ``dbt.cli(args, context=context).stream()`` yields, without starting dbt as a
    process (``shopstream_assets.runtime.dbt_in_process`` says why and what it saves): the same
    selection, the same translation of dbt's result events, the rows each model wrote
    (:func:`rows_written_metadata`), and a failure naming dbt's errors after the events of
    whatever did succeed.
    """
    from shopstream_assets.runtime.dagster_dbt_private import (
        DbtCoreCliEventMessage,
        get_updated_cli_invocation_params_for_context,
    )

    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest={}, dagster_dbt_translator=translator
    )
    project_dir = Path(dbt.project_dir)
    # Above 200 selected nodes dagster-dbt writes a selector into a copy of the project,
    # which the prepared parse does not know: dbt then parses that copy.
    selected_project_dir = Path(params.dbt_project.project_dir) if params.dbt_project else project_dir
    # The resource's profile and target as `dbt.cli` passes them. The prepared parse was made
    # with the profile's default target, whose schemas another target may not share: with
    # either set, dbt parses the project itself.
    profile_args = [
        *(["--profile", dbt.profile] if dbt.profile else []),
        *(["--target", dbt.target] if dbt.target else []),
    ]
    invocation = invoke_dbt(
        [
            *dbt.global_config_flags,
            *args,
            *profile_args,
            *params.selection_args,
            *(["--indirect-selection", params.indirect_selection] if params.indirect_selection else []),
        ],
        project_dir=selected_project_dir,
        profiles_dir=Path(dbt.profiles_dir) if dbt.profiles_dir else project_dir,
        target_path=target_path,
        reuse_prepared=selected_project_dir == project_dir and not profile_args,
        # The events carry every result Dagster records, and the target folder is deleted after
        # the run: serializing dbt's manifest after the last model would only delay the run's end.
        write_json=False,
    )
    if invocation.timings is not None:
        # Before the models' events are stored: the finished_at tag tells the Bronze sensor that
        # dbt is done, so the next run can launch while Dagster stores this one's events.
        if args[0] == "run":
            context.instance.add_run_tags(context.run.run_id, invocation.timings.tags(DBT_TIMING_TAG_PREFIX))
        context.log.info(invocation.timings.summary())
    for raw_event in iter_raw_events(invocation):
        message = DbtCoreCliEventMessage(raw_event=raw_event, event_history_metadata={})
        for dagster_event in message.to_default_asset_events(
            manifest=params.manifest,
            dagster_dbt_translator=params.dagster_dbt_translator,
            context=context,
            target_path=target_path,
            project=params.dbt_project,
        ):
            yield with_rows_written(dagster_event, raw_event)
    if invocation.interrupted:
        # The run was cancelled while dbt ran (dbt cancelled its queries): cancelled, not failed.
        raise dg.DagsterExecutionInterruptedError()
    if not invocation.success:
        errors = "\n".join(invocation.error_messages()) or "see dbt's output in the run's stdout"
        raise dg.Failure(description=f"`{invocation.command}` failed:\n{errors}")


def dbt_cli_events(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, args: list[str], target_path: Path
) -> Iterator[Any]:
    """``dbt.cli(args).stream()`` (Dagster's stock path), each model's Output with the rows it wrote."""
    invocation = dbt.cli(args, context=context, target_path=target_path)
    for message in invocation.stream_raw_events():
        for dagster_event in message.to_default_asset_events(
            manifest=invocation.manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            context=context,
            target_path=invocation.target_path,
            project=invocation.project,
        ):
            yield with_rows_written(dagster_event, message.raw_event)


@dbt_assets(
    manifest=shopstream_dbt_project.manifest_path,
    project=shopstream_dbt_project,
    dagster_dbt_translator=translator,
    name=DBT_OP_NAME,
    # The Bronze source's tests scan all of Bronze in every run; Bronze has its own checks.
    exclude="source:*",
    pool=DBT_POOL,
)
def shopstream_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, config: DbtRunConfig
) -> Iterator[Any]:
    """`dbt run` for the selected models, then `dbt test` for the selected checks.

    Not `dbt build`: build holds each downstream model until the upstream tests finish, and
    those tests scan whole tables, so Gold would wait on them in every run. The Bronze
    sensor's runs select the models without their checks (freshness first); the tests run
    as asset checks hourly (defs/quality.py), in the daily rebuild and whenever a
    model is materialized from the UI. A double append to Silver, the one error that would
    corrupt Gold, fails the model itself through a unique index.
    """
    run_args = ["run", "--full-refresh"] if config.full_refresh else ["run"]
    in_worker = run_path().fast
    with _run_target_path(context) as target_path:
        if context.selected_asset_keys:
            if in_worker:
                yield from dbt_in_worker(context, dbt, run_args, target_path)
            else:
                yield from dbt_cli_events(context, dbt, run_args, target_path)
        if context.selected_asset_check_keys:
            if in_worker:
                yield from dbt_in_worker(context, dbt, ["test"], target_path)
            else:
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
