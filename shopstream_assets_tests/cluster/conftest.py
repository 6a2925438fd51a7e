"""Each kind of cluster started once per test session (per xdist worker), only when a test asks for it.

A KRaft cluster takes tens of seconds to form and a Spark master with its worker about as long;
started per module they were most of the folder's time. Every test gets its own database and
topic on them (``clusters.stack_case``), and a test that stops a node starts it again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopstream_assets_tests.cluster.clusters import ClusterStack, cluster_stack


@pytest.fixture(scope="session")
def kafka_cluster(postgres_server: tuple[str, str]) -> Iterator[ClusterStack]:
    """Three KRaft nodes (`services start --kafka-nodes 3`); streams run in local[2]."""
    with cluster_stack("shopstream-kafka-cluster-", postgres_server, kafka_nodes=3) as stack:
        yield stack


@pytest.fixture(scope="session")
def spark_cluster(postgres_server: tuple[str, str], kafka_bootstrap: str) -> Iterator[ClusterStack]:
    """A Spark standalone master and one worker (`services start --spark-workers 1`) on the session's broker."""
    prefix = "shopstream-spark-cluster-"
    with cluster_stack(prefix, postgres_server, bootstrap=kafka_bootstrap, spark_workers=1) as stack:
        yield stack
