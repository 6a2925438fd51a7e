"""Each kind of cluster started once, for the one module whose tests use it, and only if one runs.

A KRaft cluster takes tens of seconds to form and a Spark master with its worker about as long:
each kind serves every test of its module (test_kafka_cluster.py, test_spark_cluster.py) and is
stopped when the module ends rather than idling through the rest of the session. They run beside
the session's PostgreSQL (and, for Spark, its broker) instead of servers of their own. Every test
gets its own database and topic on them (``clusters.stack_case``); a test that stops a node starts
it again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopstream_assets_tests.cluster.clusters import ClusterStack, cluster_stack


@pytest.fixture(scope="module")
def kafka_cluster(postgres_server: tuple[str, str]) -> Iterator[ClusterStack]:
    """Three KRaft nodes (`services start --kafka-nodes 3`); streams run in local[2]."""
    with cluster_stack("shopstream-kafka-cluster-", postgres_server, kafka_nodes=3) as stack:
        yield stack


@pytest.fixture(scope="module")
def spark_cluster(postgres_server: tuple[str, str], kafka_bootstrap: str) -> Iterator[ClusterStack]:
    """A Spark standalone master and one worker (`services start --spark-workers 1`) on the session's broker."""
    prefix = "shopstream-spark-cluster-"
    with cluster_stack(prefix, postgres_server, bootstrap=kafka_bootstrap, spark_workers=1) as stack:
        yield stack
