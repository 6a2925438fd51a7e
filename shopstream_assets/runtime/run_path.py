"""Which way runs go: the fast path (warm run worker, dbt in process) or Dagster's stock one.

The fast path leans on private names of Dagster, dagster-dbt and dbt (the three fences:
``dagster_private``, ``dagster_dbt_private``, ``dbt_private``), known to work only with the
versions the project is tested with, the pins in ``constraints.txt``. With other versions, or
when a fence names a private name the installed package lacks, or with SHOPSTREAM_FAST_RUNS=0,
runs take the stock path: Dagster's ``DefaultRunLauncher`` (a new process per run) and dbt as
``dbt.cli(...).stream()`` (a new dbt process per command). Slower, and it needs no private name
(``InstalledDbtVersion`` still overrides dagster-dbt's ``_cli_version`` there: with that name gone
the override is simply never read), so an upgrade shows up as a line at start instead of runs
stuck in STARTING.

The choice reaches the run launcher in dagster.yaml (``dagster_instance.instance_yaml``) and the
dbt assets (``defs/dbt/assets.py``); both call :func:`run_path`, so they agree.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shopstream.settings import SettingsError, load_settings
from shopstream_assets.runtime.private_api import installed_version

CONSTRAINTS_FILE = Path(__file__).resolve().parents[2] / "constraints.txt"
# The distributions whose private names the fast path uses, each with its fence module.
FENCES = {
    "dagster": "shopstream_assets.runtime.dagster_private",
    "dagster-dbt": "shopstream_assets.runtime.dagster_dbt_private",
    "dbt-core": "shopstream_assets.runtime.dbt_private",
}
STOCK = "Dagster's stock path (DefaultRunLauncher, dbt.cli; slower)"
FAST = "the fast path (warm run worker, dbt in process)"


@dataclass(frozen=True)
class RunPath:
    fast: bool
    message: str  # one line for the terminal and the daemon's log
    warning: bool = False


def pinned_versions(constraints: Path = CONSTRAINTS_FILE) -> dict[str, str | None]:
    """The tested version of each fenced distribution, its pin in constraints.txt (None when absent)."""
    try:
        text = constraints.read_text()
    except FileNotFoundError:
        return dict.fromkeys(FENCES)
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", text, flags=re.MULTILINE))
    normalized = {name.lower().replace("_", "-"): pin for name, pin in pins.items()}
    return {name: normalized.get(name) for name in FENCES}


def installed_versions() -> dict[str, str | None]:
    return {name: installed_version(name) for name in FENCES}


def missing_private_names() -> dict[str, list[str]]:
    """Per distribution, the private names its fence declares that the installed package lacks."""
    return {name: importlib.import_module(module).missing() for name, module in FENCES.items()}


def decide(
    fast_runs: bool,
    installed: Mapping[str, str | None],
    tested: Mapping[str, str | None],
    missing: Mapping[str, Sequence[str]],
) -> RunPath:
    """The run path for these facts; its message names the versions or the names that decided it."""
    versions = ", ".join(f"{name} {installed.get(name) or 'not installed'}" for name in FENCES)
    if not fast_runs:
        return RunPath(False, f"runs: {STOCK}, as SHOPSTREAM_FAST_RUNS=0 asks ({versions})")
    reasons = []
    mismatched = [name for name in FENCES if installed.get(name) is None or installed.get(name) != tested.get(name)]
    if mismatched:
        found = ", ".join(
            f"{name} {installed.get(name) or 'not installed'} (tested {tested.get(name) or 'unknown'})"
            for name in mismatched
        )
        reasons.append(f"installed {found}, not the tested versions")
    gone = [name for names in missing.values() for name in names]
    if gone:
        reasons.append(f"private names gone: {', '.join(gone)}")
    if reasons:
        return RunPath(
            False,
            f"warning: {'; '.join(reasons)}: runs take {STOCK}; "
            "`.venv/bin/pip install -c constraints.txt -e '.[test]'` restores the fast path",
            warning=True,
        )
    return RunPath(True, f"runs: {FAST} on the tested {versions}")


@functools.cache
def _fast_path_blockers() -> tuple[dict[str, str | None], dict[str, str | None], dict[str, list[str]]]:
    """(installed, tested, missing names): fixed for the life of a process, so looked up once."""
    installed, tested = installed_versions(), pinned_versions()
    # Fences are looked at only on the tested versions: others take the stock path anyway.
    missing = missing_private_names() if installed == tested else {}
    return installed, tested, missing


def fast_runs_setting() -> bool:
    """SHOPSTREAM_FAST_RUNS (default on); an invalid setting is reported where settings are loaded."""
    try:
        return load_settings().fast_runs
    except SettingsError:
        return True


def run_path(fast_runs: bool | None = None) -> RunPath:
    """This process's run path: SHOPSTREAM_FAST_RUNS (unless ``fast_runs`` is given), versions, fences."""
    wanted = fast_runs_setting() if fast_runs is None else fast_runs
    if not wanted:
        return decide(False, installed_versions(), {}, {})
    return decide(True, *_fast_path_blockers())
