"""The dbt project (``dbt_project/``) as Dagster sees it: where it is and where its manifest is."""

import os
from pathlib import Path

from dagster_dbt import DbtProject

# Run tags with where each `dbt run` spent its time (defs/dbt/assets.py, DbtTimings); they
# show in the UI's run view and `shopstream bench freshness` reads them. Here, not in
# assets.py, so readers need no manifest.
DBT_TIMING_TAG_PREFIX = "shopstream/dbt_"
# The concurrency pool every dbt asset takes (limit 1 in dagster.yaml): one dbt writer at a time.
DBT_POOL = "dbt"

# DBT_TARGET_PATH is dbt's own variable (and dagster-dbt copies partial_parse.msgpack from
# there): `shopstream up` points it into SHOPSTREAM_HOME, so every home (a benchmark's, a
# test's) has a manifest parsed for its own database.
shopstream_dbt_project = DbtProject(
    project_dir=Path(__file__).resolve().parents[3] / "dbt_project",
    target_path=os.environ.get("DBT_TARGET_PATH") or "target",
)
# Under `dagster dev` this parses the project on load; `shopstream up` parses it beforehand
# (shopstream_assets.runtime.dagster_instance.prepare_dbt_manifest).
shopstream_dbt_project.prepare_if_dev()
