"""The embedded Kafka broker on its own."""

from __future__ import annotations

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
