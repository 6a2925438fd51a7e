"""The fences around Dagster's, dagster-dbt's and dbt's private names, and the run path they decide.

A failure here after an upgrade names the private names the new version removed: `shopstream up`
then runs on Dagster's stock path until the fence (and the fast path's code) is brought up to date.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from shopstream_assets.runtime import dagster_dbt_private, dagster_private, dbt_private
from shopstream_assets.runtime.dagster_instance import instance_yaml, write_instance_yaml
from shopstream_assets.runtime.private_api import PrivateNameMissingError, PrivateNames, installed_version
from shopstream_assets.runtime.run_path import (
    CONSTRAINTS_FILE,
    FENCES,
    decide,
    installed_versions,
    pinned_versions,
    run_path,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("fence", [dagster_private, dagster_dbt_private, dbt_private], ids=lambda fence: fence.__name__)
def test_every_private_name_of_the_fence_is_in_the_installed_package(fence: ModuleType) -> None:
    gone = fence.missing()
    assert not gone, (
        f"the installed {fence.PRIVATE.distribution} {installed_version(fence.PRIVATE.distribution)} "
        f"no longer has {', '.join(gone)} ({fence.__name__}); runs take Dagster's stock path until they are replaced"
    )
    for name in fence.PRIVATE.names:
        if "." not in name:  # attributes of a class are looked up through it
            assert getattr(fence, name) is not None


def test_the_private_dagster_names_the_tests_use_are_in_the_installed_package() -> None:
    gone = dagster_private.PRIVATE_FOR_TESTS.missing()
    assert not gone, f"the installed dagster {installed_version('dagster')} no longer has {', '.join(gone)}"
    for name in dagster_private.PRIVATE_FOR_TESTS.names:
        assert getattr(dagster_private, name) is not None


def test_the_private_dagster_names_the_history_prune_uses_are_in_the_installed_package() -> None:
    """Their loss leaves the sensor's and the checks' reports unpruned (the prune warns), not the run path."""
    gone = dagster_private.PRIVATE_FOR_MAINTENANCE.missing()
    assert not gone, f"the installed dagster {installed_version('dagster')} no longer has {', '.join(gone)}"
    for name in dagster_private.PRIVATE_FOR_MAINTENANCE.names:
        assert getattr(dagster_private, name) is not None
    assert not set(dagster_private.PRIVATE_FOR_MAINTENANCE.names) & set(dagster_private.PRIVATE.names)


def test_a_removed_private_name_is_named_when_listed_and_when_used() -> None:
    fence = PrivateNames("dagster", {"gone": "dagster._core.launcher:NoSuchLauncher", "module": "dagster._no_such"})
    assert fence.missing() == ["dagster._core.launcher.NoSuchLauncher", "dagster._no_such"]
    with pytest.raises(PrivateNameMissingError, match=r"dagster\._core\.launcher\.NoSuchLauncher .* dagster 1\."):
        fence.resolve("gone")


def test_the_tested_versions_are_the_pins_and_fences_cover_the_three_projects() -> None:
    tested = pinned_versions()
    assert set(tested) == set(FENCES) == {"dagster", "dagster-dbt", "dbt-core"}
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"dagster=={tested['dagster']}" in dependencies
    assert f"dagster-dbt=={tested['dagster-dbt']}" in dependencies
    assert tested["dbt-core"] and f"dbt-core=={tested['dbt-core']}" in CONSTRAINTS_FILE.read_text()
    for distribution, module in FENCES.items():
        assert importlib.import_module(module).PRIVATE.distribution == distribution


def test_the_run_path_is_fast_only_on_the_tested_versions_with_every_private_name_present() -> None:
    tested = {"dagster": "1.13.27", "dagster-dbt": "0.29.27", "dbt-core": "1.11.16"}
    none_missing: dict[str, list[str]] = {name: [] for name in FENCES}
    assert decide(True, tested, tested, none_missing).fast

    upgraded = decide(True, {**tested, "dagster": "1.14.0"}, tested, none_missing)
    assert not upgraded.fast and upgraded.warning
    assert "dagster 1.14.0 (tested 1.13.27)" in upgraded.message and "DefaultRunLauncher" in upgraded.message
    assert "\n" not in upgraded.message

    removed = decide(True, tested, tested, {**none_missing, "dagster": ["dagster._cli.api._execute_run_command_body"]})
    assert not removed.fast and "dagster._cli.api._execute_run_command_body" in removed.message

    absent = decide(True, {**tested, "dagster-dbt": None}, tested, none_missing)
    assert not absent.fast and "dagster-dbt not installed" in absent.message

    asked = decide(False, tested, tested, none_missing)
    assert not asked.fast and not asked.warning and "SHOPSTREAM_FAST_RUNS=0" in asked.message


def test_this_installation_runs_fast_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    assert installed_versions() == pinned_versions(), "the venv does not hold the tested versions (constraints.txt)"
    monkeypatch.delenv("SHOPSTREAM_FAST_RUNS", raising=False)
    assert run_path().fast, run_path().message
    monkeypatch.setenv("SHOPSTREAM_FAST_RUNS", "0")
    assert not run_path().fast


def _run_launcher(text: str) -> type:
    section = yaml.safe_load(text)["run_launcher"]
    return getattr(importlib.import_module(section["module"]), section["class"])


def test_the_run_path_reaches_the_run_launcher_in_dagster_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from shopstream_assets.runtime.warm_run_launcher import WarmRunLauncher

    assert _run_launcher(instance_yaml(fast=True)) is WarmRunLauncher
    assert _run_launcher(instance_yaml(fast=False)) is dg.DefaultRunLauncher
    monkeypatch.setenv("SHOPSTREAM_FAST_RUNS", "0")
    assert _run_launcher(write_instance_yaml(tmp_path / "stock").read_text()) is dg.DefaultRunLauncher
    monkeypatch.setenv("SHOPSTREAM_FAST_RUNS", "1")
    assert _run_launcher(write_instance_yaml(tmp_path / "fast").read_text()) is WarmRunLauncher
