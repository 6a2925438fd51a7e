"""The embedded Kafka broker on its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shopstream.embedded import write_state
from shopstream.kafka_admin import end_offsets, ensure_topic
from shopstream.kafka_server import EmbeddedKafka
from shopstream.settings import load_settings

# It starts a broker of its own: not part of `make check`.
pytestmark = pytest.mark.servers


def test_a_kafka_cluster_id_starting_with_a_dash_formats_and_starts(tmp_path: Path) -> None:
    """One id in 64 starts with "-": the storage tool took it for an option and refused to format."""
    settings = load_settings({"SHOPSTREAM_HOME": str(tmp_path / "home")})
    kafka = EmbeddedKafka(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    write_state(kafka.state_path, {"cluster_id": "-" + "A" * 21})
    try:
        bootstrap = kafka.start(progress=lambda message: None)
        ensure_topic(bootstrap, "dash-cluster", 1)
        assert end_offsets(bootstrap, "dash-cluster") == {0: 0}
    finally:
        kafka.stop(progress=lambda message: None)
    assert kafka.pid() is None


def test_the_broker_s_log_rotates_by_size_through_log4j(tmp_path: Path) -> None:
    # Below the 64k the setting allows, so that a broker's start alone fills a few files.
    settings = dataclasses.replace(load_settings({"SHOPSTREAM_HOME": str(tmp_path / "home")}), log_max_bytes=8 * 1024)
    kafka = EmbeddedKafka(settings)
    try:
        bootstrap = kafka.start(progress=lambda message: None)
        for index in range(5):
            ensure_topic(bootstrap, f"rotation-{index}", 3)
    finally:
        kafka.stop(progress=lambda message: None)
    logs = settings.logs_dir
    kept = [logs / "kafka.log", *(logs / f"kafka.log.{index}" for index in range(1, settings.log_keep + 1))]
    assert all(path.exists() for path in kept), sorted(logs.iterdir())
    assert not (logs / f"kafka.log.{settings.log_keep + 1}").exists()
    # log4j rolls a file over once it has passed the size, so a file holds at most one log event more,
    # and the largest, the broker's configuration at start, is about 16 KB.
    assert all(path.stat().st_size <= 8 * 1024 + 20 * 1024 for path in kept), [path.stat().st_size for path in kept]
    # The newest lines, the broker's shutdown, are in the current file.
    assert "shut down completely" in (logs / "kafka.log").read_text()
