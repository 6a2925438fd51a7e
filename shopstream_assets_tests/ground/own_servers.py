"""Driving a ShopStream of its own, as a user does: `shopstream ...` in a fresh SHOPSTREAM_HOME.

Tests that start their own servers (services, `up`) share these; the servers are stopped and
every process left under the home is killed when the test ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from shopstream_assets_tests.conftest import make_test_home

CLI = [sys.executable, "-m", "shopstream_cli.cli"]


def env_for(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_HOME"] = str(home)
    return env


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], env=env_for(home), capture_output=True, text=True, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(
            f"shopstream {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def exports(output: str) -> dict[str, str]:
    """The variables `services start`'s output sets when a shell evaluates it: its `export` lines,
    and those of the file its `. <file>` line sources."""
    exported = {}
    for line in output.splitlines():
        words = shlex.split(line)
        if words[:1] == ["."]:
            exported.update(exports(Path(words[1]).read_text()))
        elif words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            exported[name] = value
    return exported


def processes_under(home: Path) -> list[psutil.Process]:
    """Every process whose command line mentions this SHOPSTREAM_HOME (servers, children)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with_home = any(str(home) in part for part in (process.info["cmdline"] or []))
        if with_home and process.pid != os.getpid():
            found.append(process)
    return found


@contextlib.contextmanager
def own_servers_home(path: Path) -> Iterator[Path]:
    """A home with servers of its own, stopped at the end whatever happens."""
    home = make_test_home(path)
    try:
        yield home
    finally:
        cli(home, "services", "stop", check=False)
        for process in processes_under(home):
            process.kill()
