"""The `shopstream` command line as a user types it."""

from __future__ import annotations

import os
import subprocess
import sys

CLI = [sys.executable, "-m", "shopstream_assets.lib.cli"]


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
