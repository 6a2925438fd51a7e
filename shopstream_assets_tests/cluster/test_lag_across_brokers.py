"""The ingest lag the Live Stream page and `shopstream up`'s status line show, on three KRaft nodes.

The topic's partitions are led by different brokers, so the lag is a sum of end offsets read
from several brokers minus Bronze's stored positions. Known by construction here (messages
placed on their partitions, a known prefix of them in Bronze), not by the code's formula; then
again with the leader of the partition furthest behind killed: the figure is still exact once
its partitions have new leaders, and in the moment before, it is exact or plainly unknown.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka.admin import AdminClient
from streamlit.testing.v1 import AppTest

from dashboard.db import get_pool
from dashboard.ingest_lag import broker_offsets
from shopstream import database
from shopstream.services import Endpoints
from shopstream_assets_tests.cluster.clusters import ClusterCase, ClusterStack, quiet, stack_case
from shopstream_assets_tests.conftest import TEST_PARTITIONS
from shopstream_assets_tests.dashboard.conftest import PAGES_DIR, point_dashboard_at
from shopstream_assets_tests.e2e.helpers import fetch, wait_for
from shopstream_assets_tests.streaming.conftest import produce_messages
from shopstream_cli.stack import _status_line
from streaming.bronze_load import KafkaPositions, write_messages
from streaming.simulator import Simulator

pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.timeout(600)]

SENT = 300
IN_BRONZE = 200


@pytest.fixture
def case(kafka_cluster: ClusterStack, tmp_path: Path) -> Iterator[ClusterCase]:
    with stack_case(kafka_cluster, tmp_path, prefix="lag3") as made:
        try:
            yield made
        finally:
            get_pool.clear()  # closes the dashboard's pool before its database goes


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    return {partition: metadata.leader for partition, metadata in sorted(partitions.items())}


def live_page_lag(case: ClusterCase, monkeypatch: pytest.MonkeyPatch, bootstrap: str) -> tuple[str, str]:
    """(value, help) of the Live Stream page's "Ingest lag", read afresh from the brokers."""
    point_dashboard_at(monkeypatch, case.env["SHOPSTREAM_DASHBOARD_DATABASE_URL"], case.topic)
    monkeypatch.setenv("SHOPSTREAM_KAFKA_BOOTSTRAP", bootstrap)
    broker_offsets.clear()  # the page caches the brokers' answer for a few seconds
    app = AppTest.from_file(str(PAGES_DIR / "live_stream.py"), default_timeout=60)
    app.run()
    assert not app.exception, [exception.message for exception in app.exception]
    metric = next(metric for metric in app.metric if metric.label == "Ingest lag")
    return metric.value, metric.proto.help


def status_line(case: ClusterCase, bootstrap: str) -> str:
    endpoints = Endpoints(case.database_url, case.database_url, bootstrap)
    return _status_line(endpoints, case.topic, None)[0]


def test_live_page_and_status_line_lag_across_brokers_and_with_one_down(
    kafka_cluster: ClusterStack, case: ClusterCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = kafka_cluster.bootstrap
    led_by = leaders(bootstrap, case.topic)
    assert len(set(led_by.values())) == 3, f"partitions' leaders: {led_by}"

    sent = Simulator(seed=3204, bad_ratio=0.1).take(SENT)
    by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for key, value in zip(sent.keys, sent.values, strict=True):
        # Where the Bronze loader below places each message, so the brokers' and Bronze's offsets agree.
        by_partition[zlib.crc32(key) % TEST_PARTITIONS].append((key, value))
    for partition, messages in by_partition.items():
        keys, values = zip(*messages, strict=True)
        produce_messages(bootstrap, case.topic, values, keys=keys, partition=partition)
    with database.connect(case.database_url, autocommit=True) as conn:
        positions = KafkaPositions(case.topic, TEST_PARTITIONS)
        write_messages(conn, sent.keys[:IN_BRONZE], sent.values[:IN_BRONZE], positions)
    behind = Counter(zlib.crc32(key) % TEST_PARTITIONS for key in sent.keys[IN_BRONZE:])
    worst = max(sorted(behind), key=lambda partition: behind[partition])
    lag = SENT - IN_BRONZE
    (bronze_rows,) = fetch(case.database_url, "select count(*) from bronze.clickstream_events")[0]
    assert len({led_by[partition] for partition in behind}) >= 2, "the lag is to be read from several brokers"

    value, detail = live_page_lag(case, monkeypatch, bootstrap)
    assert value == f"{lag} msgs", detail
    assert f"most behind: partition {worst} ({behind[worst]:,})" in detail
    line = status_line(case, bootstrap)
    assert f"topic {SENT:,} |" in line and f"bronze {bronze_rows:,} rows" in line and f"lag {lag:,} |" in line, line

    down = kafka_cluster.kafka.nodes[led_by[worst] - 1]
    victim = psutil.Process(down.pid() or 0)
    victim.kill()
    victim.wait(30)
    try:
        # At once, before the controller has moved the dead node's partitions: exact, or plainly unknown.
        value, detail = live_page_lag(case, monkeypatch, bootstrap)
        if value != f"{lag} msgs":
            unread = re.search(r"Partitions ([0-9, ]+) of .* lag unknown", detail)
            assert value == "unknown" and unread, (value, detail)
            on_the_dead_node = {partition for partition, leader in led_by.items() if leader == down.node_id}
            assert {int(partition) for partition in unread.group(1).split(", ")} <= on_the_dead_node, detail
        line = status_line(case, bootstrap)
        exact = f"topic {SENT:,} |" in line and f"lag {lag:,} |" in line
        assert exact or ("topic ? |" in line and "lag unknown" in line), line

        wait_for(
            lambda: all(leader not in (down.node_id, -1) for leader in leaders(bootstrap, case.topic).values()),
            timeout=60,
            what=f"new leaders for node {down.node_id}'s partitions",
        )
        # One node down, every partition led by the other two: the figure is exact again.
        value, detail = live_page_lag(case, monkeypatch, bootstrap)
        assert value == f"{lag} msgs", detail
        assert f"most behind: partition {worst} ({behind[worst]:,})" in detail
        line = status_line(case, bootstrap)
        assert f"topic {SENT:,} |" in line and f"lag {lag:,} |" in line, line
    finally:
        down.start(progress=quiet)
