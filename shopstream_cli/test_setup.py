"""What the test suite needs beyond Python packages: Debian's Chromium for the browser tests.

Playwright's own browser download cannot work offline, so the suite drives the system
Chromium; `make test` installs it with apt-get when it is missing and we run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def ensure_test_prerequisites(progress: Callable[[str], None] = print) -> None:
    if CHROMIUM.exists():
        return
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        progress(
            f"note: {CHROMIUM} is missing and cannot be installed here (needs root and apt-get); "
            "the browser tests will fail"
        )
        return
    progress("installing Debian's chromium for the dashboard's browser tests ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt_get, "update", "-qq"], check=True, env=env)
    subprocess.run([apt_get, "install", "-y", "-qq", "--no-install-recommends", "chromium"], check=True, env=env)
    progress(f"installed {CHROMIUM}")
