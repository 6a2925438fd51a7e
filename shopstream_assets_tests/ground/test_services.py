"""The embedded servers as a user drives them: `shopstream services start|status|stop` and `up`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shopstream import database
from shopstream.kafka_admin import end_offsets, ensure_topic
from shopstream.processes import stop_group
from shopstream.services import free_port
from shopstream_assets_tests.conftest import make_test_home

CLI = [sys.executable, "-m", "shopstream_cli.cli"]


def _env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_HOME"] = str(home)
    return env


def _cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], env=_env(home), capture_output=True, text=True, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(
            f"shopstream {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _exports(output: str) -> dict[str, str]:
    exported = {}
    for line in output.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = value.strip("'")
    return exported


def _processes_under(home: Path) -> list[psutil.Process]:
    """Every process whose command line mentions this SHOPSTREAM_HOME (servers, children)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with_home = any(str(home) in part for part in (process.info["cmdline"] or []))
        if with_home and process.pid != os.getpid():
            found.append(process)
    return found


@pytest.fixture
def own_home(tmp_path: Path):
    """A home with servers of its own, stopped at the end whatever happens."""
    home = make_test_home(tmp_path / "own-home")
    yield home
    _cli(home, "services", "stop", check=False)
    for process in _processes_under(home):
        process.kill()


def test_start_status_stop_restart_keeps_rows_and_messages(own_home: Path) -> None:
    started = _cli(own_home, "services", "start")
    exported = _exports(started.stdout)
    url, bootstrap = exported["SHOPSTREAM_DATABASE_URL"], exported["SHOPSTREAM_KAFKA_BOOTSTRAP"]
    assert url.startswith("postgresql://shopstream:") and "@127.0.0.1:" in url
    assert bootstrap.startswith("127.0.0.1:")
    assert exported["SHOPSTREAM_DASHBOARD_DATABASE_URL"].startswith("postgresql://shopstream_reader:")

    status = _cli(own_home, "services", "status").stdout
    assert status.count("running") == 2

    # A second start finds the running servers instead of starting twins.
    postgres_pids = {p.pid for p in _processes_under(own_home) if "postgres" in p.name()}
    again = _exports(_cli(own_home, "services", "start").stdout)
    assert again["SHOPSTREAM_DATABASE_URL"] == url and again["SHOPSTREAM_KAFKA_BOOTSTRAP"] == bootstrap
    assert {p.pid for p in _processes_under(own_home) if "postgres" in p.name()} == postgres_pids
    assert sum("kafka.Kafka" in p.cmdline() for p in _processes_under(own_home)) == 1

    # Nothing listens beyond loopback.
    for process in _processes_under(own_home):
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                assert connection.laddr.ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1"), connection

    # Without the password, no entry: the role is password-protected, not trust.
    no_password = url.split("://", 1)[0] + "://shopstream@" + url.split("@", 1)[1]
    with pytest.raises(Exception, match="password"):
        database.connect(no_password).close()

    with database.connect(url) as conn:
        conn.execute("create table public.survivor (value text)")
        conn.execute("insert into public.survivor values ('kept')")
    ensure_topic(bootstrap, "survivor", 1)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce("survivor", key=b"k", value=b"written before stop")
    assert producer.flush(30) == 0

    stopped = _cli(own_home, "services", "stop").stdout
    assert "kafka" in stopped and "postgresql" in stopped
    assert _cli(own_home, "services", "status", check=False).returncode == 1
    assert _processes_under(own_home) == []

    restarted = _exports(_cli(own_home, "services", "start").stdout)
    assert restarted["SHOPSTREAM_DATABASE_URL"] == url  # same port, same password: stable URLs
    with database.connect(url) as conn:
        assert conn.execute("select value from public.survivor").fetchall() == [("kept",)]
    consumer = Consumer({"bootstrap.servers": restarted["SHOPSTREAM_KAFKA_BOOTSTRAP"], "group.id": "survivor-check"})
    consumer.assign([TopicPartition("survivor", 0, 0)])
    message = None
    deadline = time.monotonic() + 30
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(1)
    consumer.close()
    assert message is not None and message.value() == b"written before stop"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_up_runs_the_pipeline_and_ctrl_c_leaves_no_process(own_home: Path) -> None:
    """`shopstream up`: servers, producer, stream, Dagster and dashboard; Ctrl-C stops every one of them."""
    env = _env(own_home)
    dagster_port, dashboard_port = free_port(), free_port()
    env.update({"SHOPSTREAM_DAGSTER_PORT": str(dagster_port), "SHOPSTREAM_DASHBOARD_PORT": str(dashboard_port)})
    log = own_home / "up.log"
    with log.open("wb") as output:
        up = subprocess.Popen(
            [*CLI, "up", "--rate", "50", "--no-status"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    descendants: set[psutil.Process] = set()
    try:
        deadline = time.monotonic() + 300

        def wait_for(condition, what: str) -> None:
            while not condition():
                assert up.poll() is None, f"up exited while waiting for {what}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no {what} in time:\n{log.read_text()}"
                descendants.update(psutil.Process(up.pid).children(recursive=True))
                time.sleep(1)

        wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), "start-up")
        text = log.read_text()
        assert "PostgreSQL  postgresql://shopstream:***@127.0.0.1:" in text
        assert f"http://127.0.0.1:{dagster_port}" in text and f"http://127.0.0.1:{dashboard_port}" in text
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{dagster_port}/server_info"), "Dagster UI")
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{dashboard_port}/_stcore/health"), "dashboard")
        database_url = _exports(_cli(own_home, "services", "start").stdout)["SHOPSTREAM_DATABASE_URL"]

        def bronze_rows() -> int:
            with database.connect(database_url) as conn:
                return conn.execute("select count(*) from bronze.clickstream_events").fetchone()[0]

        wait_for(lambda: bronze_rows() > 0, "events in Bronze")
        names = set()
        for process in descendants:
            with contextlib.suppress(psutil.Error):
                names.add(" ".join(process.cmdline()))
        for part in ("stream", "produce", "dagster-daemon", "dagster-webserver", "streamlit"):
            assert any(part in name for name in names), f"no {part} process under up: {names}"

        up.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal delivers
        assert up.wait(180) == 0, log.read_text()
    finally:
        # On a failure above, SIGTERM lets `up` stop its children in order before anything is killed.
        stop_group(up, timeout=240)
        for process in descendants:
            with contextlib.suppress(psutil.Error):
                process.kill()
    assert "all stopped" in log.read_text()
    survivors = [
        process for process in descendants if process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    ]
    assert survivors == [], [process.cmdline() for process in survivors]
    assert _processes_under(own_home) == []

    # Nothing lost: after the next start, every message delivered to the topic is accounted for in Bronze.
    restarted = _exports(_cli(own_home, "services", "start").stdout)
    drained = subprocess.run(
        [*CLI, "stream", "--until-idle", "5"], env=env, capture_output=True, text=True, timeout=600
    )
    assert drained.returncode == 0, drained.stderr[-3000:]
    delivered = sum(end_offsets(restarted["SHOPSTREAM_KAFKA_BOOTSTRAP"], "ecommerce-clickstream").values())
    with database.connect(restarted["SHOPSTREAM_DATABASE_URL"]) as conn:
        consumed, rows = conn.execute(
            "select sum(messages_consumed), (select count(*) from bronze.clickstream_events) from bronze.ingest_batches"
        ).fetchone()
    assert delivered > 0 and consumed == delivered == rows


def test_up_stops_the_servers_it_started_when_given_their_exported_urls(own_home: Path) -> None:
    """The URLs `services start` exported name our own servers: `up` starting them stops them too."""
    exported = _exports(_cli(own_home, "services", "start").stdout)
    _cli(own_home, "services", "stop")
    env = _env(own_home)
    env.update(exported)
    env.update({"SHOPSTREAM_DAGSTER_PORT": str(free_port()), "SHOPSTREAM_DASHBOARD_PORT": str(free_port())})
    log = own_home / "up.log"
    with log.open("wb") as output:
        up = subprocess.Popen(
            [*CLI, "up", "--rate", "0", "--no-status"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops everything" not in log.read_text():
            assert up.poll() is None, f"up exited during start-up:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no start-up in time:\n{log.read_text()}"
            time.sleep(1)
        up.send_signal(signal.SIGINT)
        assert up.wait(180) == 0, log.read_text()
    finally:
        stop_group(up, timeout=240)
    assert "all stopped" in log.read_text()
    assert _processes_under(own_home) == [], log.read_text()


def test_missing_java_is_named_with_what_to_install(tmp_path: Path) -> None:
    env = _env(make_test_home(tmp_path / "no-java"))
    env["PATH"] = str(Path(sys.executable).parent)  # python only: no java, no mvn
    env["SHOPSTREAM_DATABASE_URL"] = "postgresql://u:p@127.0.0.1:1/db"
    result = subprocess.run([*CLI, "services", "start"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Java 17" in result.stderr and "install" in result.stderr.lower()


def test_a_kafka_cluster_id_starting_with_a_dash_formats_and_starts(tmp_path: Path) -> None:
    """One id in 64 starts with "-": the storage tool took it for an option and refused to format."""
    from shopstream.services import EmbeddedKafka, _write_json
    from shopstream.settings import load_settings

    settings = load_settings({"SHOPSTREAM_HOME": str(tmp_path / "home")})
    kafka = EmbeddedKafka(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(kafka.state_path, {"cluster_id": "-" + "A" * 21})
    try:
        bootstrap = kafka.start(progress=lambda message: None)
        ensure_topic(bootstrap, "dash-cluster", 1)
        assert end_offsets(bootstrap, "dash-cluster") == {0: 0}
    finally:
        kafka.stop(progress=lambda message: None)
    assert kafka.pid() is None
