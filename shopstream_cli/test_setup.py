"""What the test suite needs beyond Python packages: Debian's Chromium for the browser tests.

Playwright's own browser download cannot work offline, so the suite drives the system
Chromium; `make test` installs it with apt-get when it is missing and we run as root, and
otherwise stops with what to run: a browser test never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = (
    f"the dashboard's browser tests need Debian's chromium at {CHROMIUM}: "
    "run `apt-get update && apt-get install -y --no-install-recommends chromium` as root, then `make test` again"
)


class MissingPrerequisite(RuntimeError):
    """Something the suite needs is missing and cannot be installed from here; the message says how."""


def ensure_test_prerequisites(
    progress: Callable[[str], None] = print, *, chromium: Path = CHROMIUM, apt_get: str | None = None
) -> None:
    if chromium.exists():
        return
    apt_get = apt_get or shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        raise MissingPrerequisite(INSTALL_CHROMIUM)
    progress("installing Debian's chromium for the dashboard's browser tests ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt_get, "update", "-qq"], check=True, env=env)
    subprocess.run([apt_get, "install", "-y", "-qq", "--no-install-recommends", "chromium"], check=True, env=env)
    if not chromium.exists():
        raise MissingPrerequisite(INSTALL_CHROMIUM)
    progress(f"installed {chromium}")
