"""dbt inside the Dagster run worker, on the parsed project `shopstream up` prepared.

dagster-dbt's ``DbtCliResource.cli`` starts ``dbt`` as a subprocess. That process imports
dbt again (the run worker already holds most of it: dagster-dbt imports it), then reads
the prepared ``partial_parse.msgpack`` and hashes every project file to partially parse.
Through dbt's programmatic API (``dbtRunner``), handed the parsed project that
``prepare_dbt_manifest`` wrote, a refresh costs a fraction of that CPU (docs/performance.md).
On two cores shared with the Spark stream, each CPU second of a refresh is event-to-Gold
latency.

The prepared project is used only while it is current (the fingerprint
``prepare_dbt_manifest`` keeps: project files, dbt's version, the database). Otherwise dbt
parses as the CLI would, from a copy of the msgpack, so an edited model still runs as
edited. dbt's structured events are the JSON lines its CLI would print, so dagster-dbt's
own translation into Outputs and asset-check results is reused unchanged.

This is the fast run path's dbt (``run_path``); every private dbt name it needs comes from
``dbt_private``, every private Dagster one from ``dagster_private``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopstream import database
from shopstream_assets.runtime.dagster_instance import (
    DBT_PROFILE_VARIABLES,
    DBT_PROJECT_DIR,
    PARTIAL_PARSE_FILE,
    current_parsed_project,
    default_dbt_target_dir,
)

# dbt's result events (dagster-dbt turns them into Outputs and check results) and the ones
# the timings need. The ~400 others of a run (SQL, connections, cache) are not converted.
KEPT_EVENTS = frozenset(
    {
        "FoundStats",
        "LogModelResult",
        "LogSeedResult",
        "LogSnapshotResult",
        "LogTestResult",
        "MainReportVersion",
        "CommandCompleted",
    }
)


@dataclass(frozen=True)
class DbtTimings:
    """Where one dbt invocation spent its time (epoch seconds)."""

    invoked_at: float  # the op asked for dbt
    started_at: float  # dbt's first event: its CLI is imported and the project loaded
    parsed_at: float  # "Found N models ...": the manifest is ready (reused or parsed)
    finished_at: float  # dbt's last event
    manifest_reused: bool  # the prepared parse was handed over: no parsing at all
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
        parse = "prepared manifest" if self.manifest_reused else "PARSED the project"
        return (
            f"dbt start-up {self.startup_s:.1f} s, {parse} {self.parse_s:.1f} s, "
            f"models {self.models_s:.1f} s (slowest: {slowest or 'none'})"
        )

    def tags(self, prefix: str) -> dict[str, str]:
        return {
            f"{prefix}invoked_at": f"{self.invoked_at:.3f}",
            f"{prefix}startup_s": f"{self.startup_s:.2f}",
            f"{prefix}parse_s": f"{self.parse_s:.2f}",
            f"{prefix}models_s": f"{self.models_s:.2f}",
            f"{prefix}finished_at": f"{self.finished_at:.3f}",
            f"{prefix}manifest_reused": str(self.manifest_reused).lower(),
        }


def dbt_timings(
    events: Sequence[Mapping[str, Any]],
    *,
    invoked_at: float,
    first_event_at: float,
    last_event_at: float,
    manifest_reused: bool,
) -> DbtTimings | None:
    """Timings from an invocation's kept events; None if dbt never got as far as its manifest."""
    parsed_at = next(
        (event["received_at"] for event in events if event["info"]["name"] == "FoundStats"),
        None,
    )
    if parsed_at is None:
        return None
    model_seconds = [
        (
            event["data"].get("node_info", {}).get("node_name", "?"),
            float(event["data"].get("execution_time") or 0.0),
        )
        for event in events
        if event["info"]["name"] == "LogModelResult"
    ]
    return DbtTimings(
        invoked_at=invoked_at,
        started_at=first_event_at,
        parsed_at=parsed_at,
        finished_at=last_event_at,
        manifest_reused=manifest_reused,
        slowest_models=sorted(model_seconds, key=lambda item: -item[1])[:3],
    )


@dataclass
class DbtInvocation:
    """One finished dbt command: its kept events (as dbt's JSON log lines), outcome and timings."""

    command: str
    events: list[dict[str, Any]] = field(default_factory=list)
    success: bool = False
    exception: BaseException | None = None
    timings: DbtTimings | None = None

    @property
    def interrupted(self) -> bool:
        """dbt was interrupted (the run was cancelled): it cancelled its queries and stopped."""
        return isinstance(self.exception, KeyboardInterrupt)

    def error_messages(self) -> list[str]:
        messages = [event["info"]["msg"] for event in self.events if event["info"]["level"] == "error"]
        if self.exception is not None:
            messages.append(f"{type(self.exception).__name__}: {self.exception}")
        return messages


def invoke_dbt(
    args: Sequence[str],
    *,
    project_dir: Path,
    profiles_dir: Path,
    target_path: Path,
    prepared_target: Path | None = None,
    environment: Mapping[str, str] | None = None,
    reuse_prepared: bool = True,
    write_json: bool = True,
) -> DbtInvocation:
    """Run ``dbt <args>`` in this process; artifacts and dbt.log go to ``target_path``.

    ``prepared_target`` is where ``prepare_dbt_manifest`` parsed the project (default: the
    DBT_TARGET_PATH this process was started with); ``environment`` holds the SHOPSTREAM_DB_*
    variables the profile reads (default: this process's). ``reuse_prepared=False`` makes
    dbt parse ``project_dir`` itself. ``write_json=False``: no ``manifest.json`` and
    ``run_results.json`` (dbt serializes the whole manifest after the last model), for a caller
    that needs only the events.
    """
    invoked_at = time.time()
    from dbt.cli.main import dbtRunner

    from shopstream_assets.runtime.dagster_private import raise_interrupts_as
    from shopstream_assets.runtime.dbt_private import msg_to_dict

    environment = os.environ if environment is None else environment
    prepared_target = prepared_target or default_dbt_target_dir()
    parsed_project = current_parsed_project(prepared_target, environment) if reuse_prepared else None
    manifest = _load_manifest(parsed_project) if parsed_project is not None else None
    target_path.mkdir(parents=True, exist_ok=True)
    if manifest is None and (prepared_target / PARTIAL_PARSE_FILE).exists():
        # Stale or missing preparation: dbt parses, partially where the msgpack still helps.
        shutil.copy(prepared_target / PARTIAL_PARSE_FILE, target_path / PARTIAL_PARSE_FILE)

    invocation = DbtInvocation(command=" ".join(["dbt", *args]))
    seen_at: list[float] = []

    def keep(event: Any) -> None:  # dbt's EventMsg
        # Called from dbt's worker threads too; list.append is atomic.
        received_at = time.time()
        seen_at.append(received_at)
        if event.info.name in KEPT_EVENTS or event.info.level == "error":
            invocation.events.append({**msg_to_dict(event), "received_at": received_at})

    full_args = [
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(profiles_dir),
        "--target-path",
        str(target_path),
        "--log-path",
        str(target_path),
        "--no-send-anonymous-usage-stats",
        "--no-use-colors",
        *([] if write_json else ["--no-write-json"]),
    ]
    # Dagster cancels a run with SIGINT. As KeyboardInterrupt, dbt cancels its running queries
    # (pg_cancel_backend) and stops; any other exception would leave a query blocked on a lock
    # and dbt waiting for it. dbtRunner returns the interrupt as the result's exception.
    with raise_interrupts_as(KeyboardInterrupt):
        result = dbtRunner(manifest=manifest, callbacks=[keep]).invoke(full_args)
    invocation.success = bool(result.success)
    invocation.exception = result.exception
    if seen_at:
        invocation.timings = dbt_timings(
            invocation.events,
            invoked_at=invoked_at,
            first_event_at=min(seen_at),
            last_event_at=max(seen_at),
            manifest_reused=manifest is not None,
        )
    return invocation


def _load_manifest(parsed_project: bytes) -> Any:
    """The prepared project as dbt's own loader leaves it (flat graph built): a dbt ``Manifest``, or
    None if unreadable."""
    from shopstream_assets.runtime.dbt_private import Manifest

    try:
        manifest = Manifest.from_msgpack(parsed_project)
    except Exception:  # e.g. written by another dbt version: dbt parses instead
        return None
    manifest.build_flat_graph()
    return manifest


def profile_database_url(environment: Mapping[str, str] | None = None) -> str:
    """The database dbt's profile connects to, from the same SHOPSTREAM_DB_* variables."""
    environment = os.environ if environment is None else environment
    return database.make_url(
        environment["SHOPSTREAM_DB_HOST"],
        int(environment["SHOPSTREAM_DB_PORT"]),
        environment["SHOPSTREAM_DB_USER"],
        environment["SHOPSTREAM_DB_PASSWORD"],
        environment["SHOPSTREAM_DB_NAME"],
    )


def iter_raw_events(invocation: DbtInvocation) -> Iterator[dict[str, Any]]:
    """The kept events without our bookkeeping key, as dagster-dbt expects them."""
    for event in invocation.events:
        yield {key: value for key, value in event.items() if key != "received_at"}


def warm_up() -> DbtInvocation | None:
    """``dbt compile`` of every model once, in a process that forks run workers.

    Compiling only reads the database (which relations exist); no model runs. It leaves dbt's
    lazily imported modules and compiled macro templates in the process, so a forked run
    worker's first ``dbt run`` costs less than half the CPU (docs/performance.md). None
    when the profile's variables are missing or the prepared project is not current.
    """
    if any(not os.environ.get(name) for name in DBT_PROFILE_VARIABLES):
        return None
    # Only on the prepared project: parsing here would start dbt's static parser (a Rust
    # extension) in a process that then forks, and a forked run that parses again hangs in it.
    if current_parsed_project(default_dbt_target_dir(), os.environ) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="shopstream-dbt-warm-up-") as target:
        return invoke_dbt(
            ["compile", "--quiet"],
            project_dir=DBT_PROJECT_DIR,
            profiles_dir=DBT_PROJECT_DIR,
            target_path=Path(target),
        )
