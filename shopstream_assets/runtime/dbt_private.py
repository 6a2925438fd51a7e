"""Every private dbt name ShopStream uses (dbt-core and its dbt-common); nothing else imports them.

dbt's programmatic API (``dbt.cli.main.dbtRunner``, which takes a parsed ``Manifest`` and event
callbacks) is public; what we hand it is not. They serve dbt in the run worker's own process
(``runtime/dbt_in_process``): a new ``dbt`` process per refresh imports dbt again and parses or
partially parses the project, seconds of CPU per refresh on a box the Spark stream shares,
while the project parsed once before Dagster starts (``partial_parse.msgpack``, dbt's own
file) can be loaded in a fraction of that. The start-up check (``run_path``) runs dbt through
``dbt.cli(...).stream()`` when :func:`missing` names any of them, and
``shopstream_assets_tests/runtime/test_private_apis.py`` fails naming them.
"""

from __future__ import annotations

import importlib
from typing import Any

from shopstream_assets.runtime.private_api import PrivateNames

PRIVATE = PrivateNames(
    "dbt-core",
    {
        # Reads the parsed project dbt wrote to partial_parse.msgpack, and builds the flat
        # graph dbt's own loader would before a run: the Manifest dbtRunner then takes.
        "Manifest": "dbt.contracts.graph.manifest:Manifest",
        "Manifest.from_msgpack": "dbt.contracts.graph.manifest:Manifest.from_msgpack",
        "Manifest.build_flat_graph": "dbt.contracts.graph.manifest:Manifest.build_flat_graph",
        # dbt's event as the JSON line its CLI prints, which dagster-dbt reads (dbt-common).
        "msg_to_dict": "dbt_common.events.functions:msg_to_dict",
        # Modules a `dbt run`/`dbt test` imports lazily: the warm worker imports them once
        # before it forks, so no forked run pays for them (see preload).
        "dbt.task.run": "dbt.task.run",
        "dbt.task.test": "dbt.task.test",
    },
)

# What preload imports; the postgres adapter is dbt-postgres's public plugin module.
PRELOADED_MODULES = ("dbt.cli.main", "dbt.adapters.postgres", "dbt.task.run", "dbt.task.test")


def missing() -> list[str]:
    """The names above that the installed dbt lacks."""
    return PRIVATE.missing()


def preload() -> None:
    """Import what a dbt run in process needs, in a process that forks run workers."""
    for module in PRELOADED_MODULES:
        importlib.import_module(module)
    PRIVATE.resolve("Manifest")
    PRIVATE.resolve("msg_to_dict")


def __getattr__(name: str) -> Any:
    return PRIVATE.resolve(name)
