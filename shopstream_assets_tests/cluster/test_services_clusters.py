"""The local clusters as a user drives them: `shopstream services start --kafka-nodes 3 --spark-workers 1`,
`services status`, `services stop`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shopstream.services import Endpoints
from shopstream.settings import load_settings
from shopstream_assets_tests.ground.own_servers import cli, exports, processes_under
from shopstream_cli.stack import STREAM_VARIABLES, Child, child_environments

CLUSTER_PATHS = (
    "data/kafka-cluster",
    "run/kafka-cluster",
    "run/kafka-cluster.json",
    "data/spark",
    "run/spark-cluster.json",
    "run/services.json",
)


def too_open(home: Path) -> list[str]:
    """The clusters' files and folders that anyone but their user may read (the single broker's rule)."""
    paths = [home / relative for relative in CLUSTER_PATHS]
    paths += sorted((home / "logs").glob("kafka-*")) + sorted((home / "logs").glob("spark-*"))
    found = []
    for top in paths:
        for path in [top, *(top.rglob("*") if top.is_dir() else [])]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if not path.is_symlink() and mode & 0o077:
                found.append(f"{oct(mode)} {path.relative_to(home)}")
    return found


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.timeout(600)
def test_start_status_stop_a_three_node_kafka_and_a_spark_cluster(own_home: Path) -> None:
    started = cli(own_home, "services", "start", "--kafka-nodes", "3", "--spark-workers", "1")
    exported = exports(started.stdout)
    brokers = exported["SHOPSTREAM_KAFKA_BOOTSTRAP"].split(",")
    assert len(brokers) == 3 and all(broker.startswith("127.0.0.1:") for broker in brokers)
    assert exported["SHOPSTREAM_SPARK_MASTER"].startswith("spark://127.0.0.1:")

    status = cli(own_home, "services", "status").stdout
    names = [line.split()[0] for line in status.splitlines() if " running " in line]
    assert names == ["postgresql", "kafka-1", "kafka-2", "kafka-3", "spark-master", "spark-worker-1"], status
    for broker in brokers:
        assert broker in status

    # A second start, without the options, finds the same clusters instead of starting twins.
    again = exports(cli(own_home, "services", "start").stdout)
    assert again["SHOPSTREAM_KAFKA_BOOTSTRAP"] == exported["SHOPSTREAM_KAFKA_BOOTSTRAP"]
    assert again["SHOPSTREAM_SPARK_MASTER"] == exported["SHOPSTREAM_SPARK_MASTER"]
    commands = [process.cmdline() for process in processes_under(own_home)]
    assert sum("kafka.Kafka" in command for command in commands) == 3
    assert sum("org.apache.spark.deploy.worker.Worker" in command for command in commands) == 1
    # Switching to one broker under a running cluster is refused, not half done.
    refused = cli(own_home, "services", "start", "--kafka-nodes", "1", check=False)
    assert refused.returncode != 0 and "services stop" in refused.stderr

    assert too_open(own_home) == []

    stopped = cli(own_home, "services", "stop").stdout
    assert "spark" in stopped and "kafka" in stopped and "postgresql" in stopped
    assert cli(own_home, "services", "status", check=False).returncode == 1
    assert processes_under(own_home) == []


def test_up_gives_its_stream_the_local_spark_master_and_only_then(tmp_path: Path) -> None:
    settings = load_settings({"SHOPSTREAM_HOME": str(tmp_path / "home")})
    stream = Child("stream", ["shopstream", "stream"], variables=STREAM_VARIABLES)
    url = "postgresql://owner:secret@127.0.0.1:5432/shopstream"
    on_cluster = Endpoints(url, url, "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", spark_master="spark://127.0.0.1:7077")
    assert child_environments(on_cluster, settings)(stream)["SHOPSTREAM_SPARK_MASTER"] == "spark://127.0.0.1:7077"
    assert on_cluster.environment()["SHOPSTREAM_SPARK_MASTER"] == "spark://127.0.0.1:7077"
    local = Endpoints(url, url, "127.0.0.1:1")
    assert "SHOPSTREAM_SPARK_MASTER" not in local.environment()
    assert child_environments(local, settings)(stream)["SHOPSTREAM_KAFKA_BOOTSTRAP"] == "127.0.0.1:1"
