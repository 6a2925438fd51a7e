"""Every private dagster-dbt name ShopStream uses; nothing else imports them.

They serve dbt in the run worker's own process (``runtime/dbt_in_process``,
``defs/dbt/assets.dbt_in_worker``): ``DbtCliResource.cli`` starts dbt as a new process that
imports dbt and reads the project again, seconds of CPU per refresh on a box the Spark stream
shares. In process, the selection and the translation of dbt's events into Dagster events must
still be dagster-dbt's own, and dagster-dbt exports neither. The start-up check (``run_path``)
runs dbt through ``dbt.cli(...).stream()`` when :func:`missing` names any of them, and
``shopstream_assets_tests/runtime/test_private_apis.py`` fails naming them.
"""

from __future__ import annotations

from functools import cached_property
from importlib import metadata
from typing import Any

from packaging import version

from shopstream_assets.runtime.private_api import PrivateNames

PRIVATE = PrivateNames(
    "dagster-dbt",
    {
        # The --select/--exclude (or selector file) that `dbt.cli(..., context=context)` derives
        # from the run's selected assets and checks: in process, dbt must get the same ones.
        "get_updated_cli_invocation_params_for_context": (
            "dagster_dbt.asset_utils:get_updated_cli_invocation_params_for_context"
        ),
        # dbt-core's JSON log line as dagster-dbt reads it (the exported DbtCliEventMessage is
        # abstract): its to_default_asset_events gives the same Outputs and check results.
        "DbtCoreCliEventMessage": "dagster_dbt.core.dbt_cli_event:DbtCoreCliEventMessage",
        # Overridden by InstalledDbtVersion (below).
        "DbtCliResource._cli_version": "dagster_dbt:DbtCliResource._cli_version",
    },
)


def missing() -> list[str]:
    """The names above that the installed dagster-dbt lacks."""
    return PRIVATE.missing()


class InstalledDbtVersion:
    """A ``DbtCliResource`` mixin: dbt's version from the installed dbt-core, not from ``dbt --version``.

    dagster-dbt asks the executable, a whole dbt start-up in every run; the executable is this
    venv's, so its version is the installed dbt-core's.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(metadata.version("dbt-core"))


def __getattr__(name: str) -> Any:
    return PRIVATE.resolve(name)
