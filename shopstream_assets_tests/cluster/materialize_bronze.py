"""`python -m shopstream_assets_tests.cluster.materialize_bronze RESULT.json`: the Bronze replay asset
materialized through Dagster in a process of its own, its resources from the SHOPSTREAM_* environment.

A process of its own because a JVM holds one SparkContext: the test session's local[2] session
would be handed back to the asset instead of one on the master SHOPSTREAM_SPARK_MASTER names.
The resources are the code location's own (``defs/resources.py``), built as it builds them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg

from shopstream_assets.defs.resources import KafkaResource, PostgresResource, ShopstreamSparkResource
from shopstream_assets.defs.streaming.assets import BRONZE_KEY, clickstream_events


def main(result_path: Path) -> int:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [clickstream_events],
            instance=instance,
            resources={
                "pyspark": ShopstreamSparkResource(spark_config={}),
                "postgres": PostgresResource(),
                "kafka": KafkaResource(),
            },
            raise_on_error=False,
        )
        materializations = [
            event.step_materialization_data.materialization
            for event in result.get_asset_materialization_events()
            if event.asset_key == BRONZE_KEY
        ]
        metadata = {key: value.value for key, value in materializations[0].metadata.items()} if materializations else {}
        spark_master = None
        if result.success:
            # The session the resource built, still alive in this process: where it ran.
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            spark_master = active.sparkContext.master if active else None
    result_path.write_text(
        json.dumps({"success": result.success, "metadata": metadata, "spark_master": spark_master}, default=str)
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
