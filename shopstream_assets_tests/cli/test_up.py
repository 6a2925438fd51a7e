"""`shopstream up` as a user runs it: the whole pipeline on servers of its own, stopped whole by Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from shopstream import database
from shopstream.embedded import free_port
from shopstream.kafka_admin import end_offsets
from shopstream.processes import stop_group
from shopstream_assets_tests.ground.own_servers import CLI, cli, env_for, exports, processes_under


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _start_up(log: Path, env: dict[str, str], *options: str) -> subprocess.Popen[bytes]:
    """`shopstream up ... --no-status` in a session of its own (so a test can Ctrl-C the whole group)."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [*CLI, "up", *options, "--no-status"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.slow
@pytest.mark.servers  # servers of its own: not part of `make check`
def test_up_runs_the_pipeline_and_ctrl_c_leaves_no_process(own_home: Path) -> None:
    """`shopstream up`: servers, producer, stream, Dagster and dashboard; Ctrl-C stops every one of them."""
    env = env_for(own_home)
    dagster_port, dashboard_port = free_port(), free_port()
    env.update({"SHOPSTREAM_DAGSTER_PORT": str(dagster_port), "SHOPSTREAM_DASHBOARD_PORT": str(dashboard_port)})
    log = own_home / "up.log"
    up = _start_up(log, env, "--rate", "50")
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
        assert "PostgreSQL  postgresql://shopstream_owner:***@127.0.0.1:" in text
        assert f"http://127.0.0.1:{dagster_port}" in text and f"http://127.0.0.1:{dashboard_port}" in text
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{dagster_port}/server_info"), "Dagster UI")
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{dashboard_port}/_stcore/health"), "dashboard")
        database_url = exports(cli(own_home, "services", "start").stdout)["SHOPSTREAM_DATABASE_URL"]

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
    assert processes_under(own_home) == []

    # Nothing lost: after the next start, every message delivered to the topic is accounted for in Bronze.
    restarted = exports(cli(own_home, "services", "start").stdout)
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


@pytest.mark.servers  # servers of its own: not part of `make check`
def test_up_stops_the_servers_it_started_when_given_their_exported_urls(own_home: Path) -> None:
    """The URLs `services start` exported name our own servers: `up` starting them stops them too."""
    exported = exports(cli(own_home, "services", "start").stdout)
    cli(own_home, "services", "stop")
    env = env_for(own_home)
    env.update(exported)
    env.update({"SHOPSTREAM_DAGSTER_PORT": str(free_port()), "SHOPSTREAM_DASHBOARD_PORT": str(free_port())})
    log = own_home / "up.log"
    up = _start_up(log, env, "--rate", "0")
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
    assert processes_under(own_home) == [], log.read_text()
