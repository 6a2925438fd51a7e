"""Silver and Gold: every dbt model as an asset keyed exactly like its relation.

``silver/stg_clickstream_events`` is ``silver.stg_clickstream_events`` is
``dbt_project/models/staging/stg_clickstream_events.sql``. The Bronze source carries
``meta: {dagster: {asset_key: [bronze, clickstream_events]}}`` in its sources YAML, so the
staging model hangs off the Bronze asset and topic -> Bronze -> Silver -> Gold is one graph.
"""

import contextlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from shopstream_assets.defs.dbt.project import DBT_TIMING_TAG_PREFIX, shopstream_dbt_project

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


@dataclass(frozen=True)
class DbtTimings:
    """Where one dbt invocation spent its time, from its own JSON log (epoch seconds)."""

    invoked_at: float
    started_at: float  # dbt's first log line: the interpreter is up and dbt is imported
    parsed_at: float  # "Found N models ...": the manifest is loaded (partial parse or not)
    finished_at: float  # the last log line
    partial_parse: bool
    slowest_models: list[tuple[str, float]]

    @property
    def startup_s(self) -> float:
        return self.started_at - self.invoked_at

    @property
    def parse_s(self) -> float:
        return self.parsed_at - self.started_at

    @property
    def models_s(self) -> float:
        return self.finished_at - self.parsed_at

    def summary(self) -> str:
        slowest = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.slowest_models)
        parse = "partial parse" if self.partial_parse else "FULL parse"
        return (
            f"dbt start-up {self.startup_s:.1f} s, {parse} {self.parse_s:.1f} s, "
            f"models {self.models_s:.1f} s (slowest: {slowest or 'none'})"
        )

    def tags(self) -> dict[str, str]:
        return {
            f"{DBT_TIMING_TAG_PREFIX}invoked_at": f"{self.invoked_at:.3f}",
            f"{DBT_TIMING_TAG_PREFIX}startup_s": f"{self.startup_s:.2f}",
            f"{DBT_TIMING_TAG_PREFIX}parse_s": f"{self.parse_s:.2f}",
            f"{DBT_TIMING_TAG_PREFIX}models_s": f"{self.models_s:.2f}",
            f"{DBT_TIMING_TAG_PREFIX}finished_at": f"{self.finished_at:.3f}",
            f"{DBT_TIMING_TAG_PREFIX}partial_parse": str(self.partial_parse).lower(),
        }


def read_dbt_timings(log_path: Path, offset: int, invoked_at: float) -> DbtTimings | None:
    """Timings of the invocation whose JSON log lines start at byte ``offset`` of ``log_path``.

    dagster-dbt points DBT_LOG_PATH at the run's target folder and asks for JSON logs, so
    ``dbt.log`` there holds every event with its timestamp. None if the log is missing or
    has no "Found N models" line (dbt failed before parsing).
    """
    if not log_path.exists():
        return None
    started_at = parsed_at = finished_at = None
    partial_parse = False
    model_seconds: list[tuple[str, float]] = []
    with log_path.open("rb") as log:
        log.seek(offset)
        for line in log:
            try:
                event = json.loads(line)
                info = event["info"]
                at = datetime.fromisoformat(info["ts"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            started_at = at if started_at is None else started_at
            finished_at = at
            name = info.get("name")
            if name == "PartialParsingEnabled":
                partial_parse = True
            elif name == "FoundStats" and parsed_at is None:
                parsed_at = at
            elif name == "LogModelResult":
                data = event.get("data", {})
                model = data.get("node_info", {}).get("node_name", "?")
                model_seconds.append((model, float(data.get("execution_time") or 0.0)))
    if started_at is None or parsed_at is None or finished_at is None:
        return None
    return DbtTimings(
        invoked_at=invoked_at,
        started_at=started_at,
        parsed_at=parsed_at,
        finished_at=finished_at,
        partial_parse=partial_parse,
        slowest_models=sorted(model_seconds, key=lambda item: -item[1])[:3],
    )


def _report_dbt_timings(
    context: dg.AssetExecutionContext, target_path: Path, offset: int, invoked_at: float
) -> None:
    """Log where the `dbt run` spent its time and keep it as run tags; never fails the run."""
    try:
        timings = read_dbt_timings(target_path / "dbt.log", offset, invoked_at)
        if timings is None:
            return
        context.log.info(timings.summary())
        context.instance.add_run_tags(context.run.run_id, timings.tags())
    except Exception as error:  # timings are diagnostics: the models have already run
        context.log.warning(f"could not read dbt's timings: {error!r}")


def _log_size(target_path: Path) -> int:
    log_path = target_path / "dbt.log"
    return log_path.stat().st_size if log_path.exists() else 0


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
    as asset checks hourly (defs/quality.py), in the daily rebuild and whenever a
    model is materialized from the UI. A double append to Silver, the one error that would
    corrupt Gold, fails the model itself through a unique index.
    """
    run_args = ["run", "--full-refresh"] if config.full_refresh else ["run"]
    with _run_target_path(context) as target_path:
        if context.selected_asset_keys:
            invoked_at, log_offset = time.time(), _log_size(target_path)
            yield from (
                dbt.cli(run_args, context=context, target_path=target_path)
                .stream()
                .fetch_row_counts()
            )
            _report_dbt_timings(context, target_path, log_offset, invoked_at)
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
