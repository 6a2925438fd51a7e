"""The ShopStream code location: gathers every definition under ``defs/``."""

import functools
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return _gather()


# Built once per process: the warm run worker builds them before it forks, and each run it
# forks then loads them in no time (shopstream_assets/runtime/warm_run_launcher.py).
@functools.cache
def _gather() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
