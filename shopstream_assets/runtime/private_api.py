"""The machinery of the three fences: a table of private names, resolved on first use.

Each fence module (``dagster_private``, ``dagster_dbt_private``, ``dbt_private``) is the only
place its project's private names are imported. It declares them in a :class:`PrivateNames`
table, one ``"module:attribute"`` per name with the reason beside it, and exposes them through
the module's ``__getattr__``: ``from shopstream_assets.runtime.dagster_private import
RunLauncher`` imports ``dagster._core.launcher`` only then. ``missing()`` names those the
installed package no longer has, without importing anything that uses them, so the start-up
check (:mod:`shopstream_assets.runtime.run_path`) can choose Dagster's stock path instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any


class PrivateNameMissingError(ImportError):
    """A private name the installed package no longer has (an upgrade removed or moved it)."""


@dataclass(frozen=True)
class PrivateNames:
    """The private names of one distribution (``dagster``, ``dagster-dbt``, ``dbt-core``)."""

    distribution: str
    # Our name -> "module:attribute[.attribute]" or "module" alone for a private module.
    names: Mapping[str, str]

    def _lookup(self, target: str) -> Any:
        module_name, _, attributes = target.partition(":")
        found: Any = importlib.import_module(module_name)
        for attribute in filter(None, attributes.split(".")):
            found = getattr(found, attribute)
        return found

    def missing(self) -> list[str]:
        """The declared names the installed package lacks, as ``module.attribute``."""
        gone = []
        for target in self.names.values():
            try:
                self._lookup(target)
            except (ImportError, AttributeError):
                gone.append(target.replace(":", "."))
        return gone

    def resolve(self, name: str) -> Any:
        """The object behind ``name``; a :class:`PrivateNameMissingError` naming it and the version if gone."""
        if name not in self.names:
            raise AttributeError(name)
        target = self.names[name]
        try:
            return self._lookup(target)
        except (ImportError, AttributeError) as error:
            raise PrivateNameMissingError(
                f"{target.replace(':', '.')} is not in the installed {self.distribution} "
                f"{installed_version(self.distribution)}; `shopstream up` would have chosen Dagster's "
                f"stock run path (SHOPSTREAM_FAST_RUNS=0): {error}"
            ) from error


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
