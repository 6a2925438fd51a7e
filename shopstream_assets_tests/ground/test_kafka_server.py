"""The embedded Kafka broker on its own.

One broker serves the module's tests (a Kafka start is a JVM's): its cluster id starts with a
dash and its log rotates at a small size, two settings that do not touch each other. It is
started, used and stopped in the fixture; each test checks what its own part left.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from shopstream.embedded import write_state
from shopstream.kafka_admin import end_offsets, ensure_topic
from shopstream.kafka_server import EmbeddedKafka
from shopstream.settings import Settings, load_settings
from shopstream_assets_tests.conftest import make_test_home

# It starts a broker of its own: not part of `make check`.
pytestmark = pytest.mark.servers

DASH_CLUSTER_ID = "-" + "A" * 21
# Below the 64k the setting allows, so that a broker's start alone fills a few files.
LOG_MAX_BYTES = 8 * 1024


@dataclass(frozen=True)
class BrokerRun:
    settings: Settings
    dash_topic_offsets: dict[int, int]
    pid_after_stop: int | None


@pytest.fixture(scope="module")
def broker_run(tmp_path_factory: pytest.TempPathFactory) -> BrokerRun:
    """A broker with a cluster id starting with "-" and its log rotating at 8 KB: started, given a
    topic (then five more, for its log), stopped."""
    # The suite's resolved jars (and class-data archives), not a Maven resolution of its own.
    home = make_test_home(tmp_path_factory.mktemp("kafka-server") / "home")
    settings = dataclasses.replace(load_settings({"SHOPSTREAM_HOME": str(home)}), log_max_bytes=LOG_MAX_BYTES)
    kafka = EmbeddedKafka(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    write_state(kafka.state_path, {"cluster_id": DASH_CLUSTER_ID})
    try:
        bootstrap = kafka.start(progress=lambda message: None)
        ensure_topic(bootstrap, "dash-cluster", 1)
        offsets = end_offsets(bootstrap, "dash-cluster")
        for index in range(5):
            ensure_topic(bootstrap, f"rotation-{index}", 3)
    finally:
        kafka.stop(progress=lambda message: None)
    return BrokerRun(settings, offsets, kafka.pid())


def test_a_kafka_cluster_id_starting_with_a_dash_formats_and_starts(broker_run: BrokerRun) -> None:
    """One id in 64 starts with "-": the storage tool took it for an option and refused to format."""
    assert broker_run.dash_topic_offsets == {0: 0}
    assert broker_run.pid_after_stop is None


def test_the_broker_s_log_rotates_by_size_through_log4j(broker_run: BrokerRun) -> None:
    settings = broker_run.settings
    logs = settings.logs_dir
    kept = [logs / "kafka.log", *(logs / f"kafka.log.{index}" for index in range(1, settings.log_keep + 1))]
    assert all(path.exists() for path in kept), sorted(logs.iterdir())
    assert not (logs / f"kafka.log.{settings.log_keep + 1}").exists()
    # log4j rolls a file over once it has passed the size, so a file holds at most one log event more,
    # and the largest, the broker's configuration at start, is about 16 KB.
    sizes = [path.stat().st_size for path in kept]
    assert all(size <= LOG_MAX_BYTES + 20 * 1024 for size in sizes), sizes
    # The newest lines, the broker's shutdown, are in the current file.
    assert "shut down completely" in (logs / "kafka.log").read_text()
