"""Waiting on an event, not on the clock: poll a condition until it holds, under a generous deadline.

The deadline is a hang guard, never the thing tested: a test waits for the state it needs (a
checkpoint file, a ledger row, a run status, a log line), so a slow machine makes it slower,
not red, and a state that never comes fails with a message naming what was awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Long enough that only a hang reaches it on a loaded two-core machine.
GENEROUS_S = 60.0


def wait_until(
    condition: Callable[[], T],
    *,
    what: str,
    timeout: float = GENEROUS_S,
    interval: float = 0.05,
    alive: Any = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Fails after ``timeout`` s, or at once when the process ``alive`` (a Popen) has exited;
    ``details`` adds what the failure message should show (a log's tail, the last state seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        problem = None
        if alive is not None and alive.poll() is not None:
            problem = f"the process exited ({alive.returncode}) while waiting for {what}"
        elif time.monotonic() > deadline:
            problem = f"no {what} after {timeout:.0f} s"
        if problem is not None:
            raise AssertionError(problem + (f"\n{details()}" if details is not None else ""))
        time.sleep(interval)
