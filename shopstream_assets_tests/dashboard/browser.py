"""A running `shopstream dashboard` and a headless Chromium (Playwright) for the browser tests.

One of each per test session (per xdist worker): ``dashboard`` in ``conftest.py``. Every test opens
its own page (a browser context of its own), so no cookie, session state or download crosses tests.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from shopstream.embedded import free_port
from shopstream.processes import spawn, stop_group
from shopstream_assets_tests.conftest import REPO_ROOT, make_test_home
from shopstream_cli.test_setup import CHROMIUM, INSTALL_CHROMIUM

ARTIFACTS = REPO_ROOT / "test-artifacts"
DEADLINE_MS = 45_000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Dashboard:
    base: str
    browser: object


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


@contextmanager
def serve(reader_url: str, topic: str, work_dir: Path) -> Iterator[str]:
    """`shopstream dashboard` on ``reader_url``; yields its base URL."""
    home = make_test_home(work_dir / "home")
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_HOME"] = str(home)
    env["SHOPSTREAM_DASHBOARD_DATABASE_URL"] = reader_url
    env["SHOPSTREAM_TOPIC"] = topic
    process = spawn(
        [sys.executable, "-m", "shopstream_cli.cli", "dashboard", "--port", str(port)],
        env=env,
        log_path=home / "logs" / "dashboard.log",
        cwd=REPO_ROOT,
    )
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_for_http(base)
        yield base
    finally:
        stop_group(process, timeout=20)


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium; never a skip without one: a green suite without its browser tests
    would be a claim nobody checked."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(INSTALL_CHROMIUM)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
