"""The embedded servers as a user drives them: `shopstream services start|status|stop`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shopstream import database
from shopstream.kafka_admin import ensure_topic
from shopstream.services import Endpoints, running_servers, stop_servers_started_since
from shopstream.settings import load_settings
from shopstream_assets_tests.conftest import make_test_home
from shopstream_assets_tests.ground.own_servers import CLI, cli, env_for, exports, processes_under


@pytest.mark.servers  # servers of its own: not part of `make check`
def test_start_status_stop_restart_keeps_rows_and_messages(own_home: Path) -> None:
    started = cli(own_home, "services", "start")
    exported = exports(started.stdout)
    url, bootstrap = exported["SHOPSTREAM_DATABASE_URL"], exported["SHOPSTREAM_KAFKA_BOOTSTRAP"]
    # The pipeline's owner role, not the admin (shopstream_assets_tests/security/test_roles.py).
    assert url.startswith("postgresql://shopstream_owner:") and "@127.0.0.1:" in url
    assert bootstrap.startswith("127.0.0.1:")
    assert exported["SHOPSTREAM_DASHBOARD_DATABASE_URL"].startswith("postgresql://shopstream_reader:")

    status = cli(own_home, "services", "status").stdout
    assert status.count("running") == 2

    # A second start finds the running servers instead of starting twins.
    postgres_pids = {p.pid for p in processes_under(own_home) if "postgres" in p.name()}
    again = exports(cli(own_home, "services", "start").stdout)
    assert again["SHOPSTREAM_DATABASE_URL"] == url and again["SHOPSTREAM_KAFKA_BOOTSTRAP"] == bootstrap
    assert {p.pid for p in processes_under(own_home) if "postgres" in p.name()} == postgres_pids
    assert sum("kafka.Kafka" in p.cmdline() for p in processes_under(own_home)) == 1

    # Nothing listens beyond loopback.
    for process in processes_under(own_home):
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                assert connection.laddr.ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1"), connection

    # Without the password, no entry: the role is password-protected, not trust.
    no_password = url.split("://", 1)[0] + "://shopstream_owner@" + url.split("@", 1)[1]
    with pytest.raises(Exception, match="password"):
        database.connect(no_password).close()

    with database.connect(url) as conn:
        conn.execute("create table gold.survivor (value text)")
        conn.execute("insert into gold.survivor values ('kept')")
    ensure_topic(bootstrap, "survivor", 1)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce("survivor", key=b"k", value=b"written before stop")
    assert producer.flush(30) == 0

    stopped = cli(own_home, "services", "stop").stdout
    assert "kafka" in stopped and "postgresql" in stopped
    assert cli(own_home, "services", "status", check=False).returncode == 1
    assert processes_under(own_home) == []

    restarted = exports(cli(own_home, "services", "start").stdout)
    assert restarted["SHOPSTREAM_DATABASE_URL"] == url  # same port, same password: stable URLs
    with database.connect(url) as conn:
        assert conn.execute("select value from gold.survivor").fetchall() == [("kept",)]
    consumer = Consumer({"bootstrap.servers": restarted["SHOPSTREAM_KAFKA_BOOTSTRAP"], "group.id": "survivor-check"})
    consumer.assign([TopicPartition("survivor", 0, 0)])
    message = None
    deadline = time.monotonic() + 30
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(1)
    consumer.close()
    assert message is not None and message.value() == b"written before stop"


def test_missing_java_is_named_with_what_to_install(tmp_path: Path) -> None:
    env = env_for(make_test_home(tmp_path / "no-java"))
    env["PATH"] = str(Path(sys.executable).parent)  # python only: no java, no mvn
    env["SHOPSTREAM_DATABASE_URL"] = "postgresql://u:p@127.0.0.1:1/db"
    result = subprocess.run([*CLI, "services", "start"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Java 17" in result.stderr and "install" in result.stderr.lower()


def test_up_leaves_running_the_servers_it_found_running(servers: Endpoints, session_home: Path) -> None:
    """What runs before `up` is left running when it stops: only the servers it started are its to stop."""
    settings = load_settings({"SHOPSTREAM_HOME": str(session_home)})
    found = running_servers(settings)
    assert found == {"postgresql", "kafka"}
    stopped: list[str] = []
    stop_servers_started_since(settings, found, progress=stopped.append)
    assert stopped == [] and running_servers(settings) == found
