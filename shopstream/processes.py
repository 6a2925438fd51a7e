"""Child processes that always stop: their own process group, SIGTERM, wait, SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a process group of its own, output appended to ``log_path``.

    Its own group means a terminal's Ctrl-C reaches only us, and we stop the child and
    everything it started (Spark's JVM, Dagster's code server) with one signal. Dagster's run
    workers live in the warm run worker's group, which ends itself when the daemon is gone
    (shopstream_assets/runtime/warm_run_launcher.py).
    """
    output = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        output = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(command),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log_path is not None:
            output.close()


def stop_group(process: subprocess.Popen[bytes], *, timeout: float = 30, sig: int = signal.SIGTERM) -> int | None:
    """Signal the child's whole process group, wait ``timeout`` s, then SIGKILL the group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    # Grandchildren may outlive the leader; the group id outlives it too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    return process.returncode
