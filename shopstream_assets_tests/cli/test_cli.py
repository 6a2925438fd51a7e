"""The `shopstream` command line as a user types it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shopstream.services import Endpoints

CLI = [sys.executable, "-m", "shopstream_cli.cli"]


def test_bench_produce_runs_from_the_command_line(kafka_bootstrap: str, test_home) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update({"SHOPSTREAM_HOME": str(test_home), "SHOPSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap})
    result = subprocess.run(
        [*CLI, "bench", "produce", "--events", "2000"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "delivered" in result.stdout


def test_every_command_has_help() -> None:
    for words in (["--help"], ["services", "--help"], ["bench", "--help"], ["dagster", "--help"], ["stream", "--help"]):
        result = subprocess.run([*CLI, *words], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (words, result.stderr[-2000:])


@pytest.mark.slow
def test_a_short_bench_ingest_prints_its_five_figures(servers: Endpoints, session_home: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update(servers.environment())
    env.update({"SHOPSTREAM_HOME": str(session_home), "SHOPSTREAM_SPARK_MASTER": "local[2]"})
    result = subprocess.run(
        [
            *CLI,
            "bench",
            "ingest",
            "--events",
            "5000",
            "--sustained-seconds",
            "5",
            "--sustained-rate",
            "2000",
            "--latency-rate",
            "500",
            "--latency-seconds",
            "5",
            "--quiet-rate",
            "100",
            "--quiet-seconds",
            "5",
            "--yardstick-events",
            "3000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    figures = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "5,000 events in" in figures["drain"]
    # Given the URLs `services start` exports, the session's own server is still metered as the embedded one.
    if "SHOPSTREAM_TEST_DATABASE_URL" not in os.environ:
        assert re.search(r"PostgreSQL \d+\.\d\d\]", figures["drain"]), figures["drain"]
    assert "lag steady" in figures["sustained"] or "lag GROWING" in figures["sustained"]
    assert re.search(r"[1-9][\d,]* events at 500/s: p50 \d", figures["latency"]), figures["latency"]
    assert re.search(r"[1-9][\d,]* events at 100/s: p50 \d", figures["quiet"]), figures["quiet"]
    # Each load phase says what the stream cost: its share of a core and CPU-seconds per 100k events.
    for name in ("drain", "sustained", "quiet", "latency"):
        assert re.search(r"stream \d+\.\d\d of a core; CPU-s per 100k events: stream \d", figures[name]), figures[name]
    assert re.search(
        r"on 3,000 events: [1-9][\d,]* rows/s warm .* the drain ran at \d+% of it", figures["yardstick"]
    ), figures["yardstick"]


def test_a_missing_chromium_that_cannot_be_installed_stops_the_set_up_with_what_to_run(tmp_path: Path) -> None:
    """The browser tests never skip: without Chromium and a way to install it, `make test` stops first.

    Broken on purpose (the old behaviour, a note and carry on) this test fails: nothing is raised.
    """
    from shopstream_cli.test_setup import MissingPrerequisite, ensure_test_prerequisites

    no_apt = tmp_path / "apt-get-that-installs-nothing"
    no_apt.write_text("#!/bin/sh\nexit 0\n")
    no_apt.chmod(0o755)
    with pytest.raises(MissingPrerequisite, match=r"apt-get install -y --no-install-recommends chromium"):
        ensure_test_prerequisites(lambda message: None, chromium=tmp_path / "chromium", apt_get=str(no_apt))
