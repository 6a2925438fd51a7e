"""The benchmarks' resource sampler counts the CPU used inside its window, not before it."""

import subprocess
import sys
import time

from shopstream_assets_tests.waiting import wait_until
from shopstream_cli.bench.measure import ResourceSampler

# Burns about a second of CPU, says so, then does what the argument says.
_BURN_THEN = """
import sys, time
until = time.process_time() + 1.0
while time.process_time() < until:
    pass
print("burnt", flush=True)
if sys.argv[1] == "sleep":
    time.sleep(30)
else:
    until = time.process_time() + 1.0
    while time.process_time() < until:
        pass
    time.sleep(30)
"""


def test_cpu_used_before_the_window_is_not_counted_and_cpu_inside_it_is() -> None:
    idle_later = subprocess.Popen([sys.executable, "-c", _BURN_THEN, "sleep"], stdout=subprocess.PIPE, text=True)
    try:
        assert idle_later.stdout is not None and idle_later.stdout.readline() == "burnt\n"
        busy_inside = None
        sampler = ResourceSampler(
            {"idle": lambda: [idle_later.pid], "busy": lambda: [busy_inside.pid] if busy_inside else []}, interval=0.2
        )
        with sampler:
            busy_inside = subprocess.Popen([sys.executable, "-c", _BURN_THEN, "burn"])
            deadline = time.monotonic() + 30
            while sampler.usage["busy"].cpu_seconds < 1.8 and time.monotonic() < deadline:
                time.sleep(0.2)
        assert sampler.usage["idle"].cpu_seconds < 0.3  # it burnt its second before the window
        assert sampler.usage["busy"].cpu_seconds >= 1.8  # both of its seconds fall inside
    finally:
        for process in (idle_later, busy_inside):
            if process is not None:
                process.kill()
                process.wait()


# Waits a moment, runs a child that burns about a second and exits, then idles.
_PARENT_OF_A_SHORT_CHILD = """
import subprocess, sys, time
time.sleep(0.5)
child = "import time\\nuntil = time.process_time() + 1.0\\nwhile time.process_time() < until:\\n    pass"
subprocess.run([sys.executable, "-c", child], check=True)
print("child done", flush=True)
time.sleep(30)
"""


def test_cpu_of_a_child_that_exited_between_two_samples_is_counted() -> None:
    """Like a PostgreSQL backend or a dbt process: alive for less than a sampling interval.

    The figure is read after the first sample taken once the child was reaped (counted, not
    slept for). A sampler adding only the live members' own times fails here whenever no
    sample catches the child alive: its second then shows only in the parent's children_* times (tried)."""
    parent = None
    sampler = ResourceSampler({"parent": lambda: [parent.pid] if parent else []}, interval=4.0)
    try:
        with sampler:
            parent = subprocess.Popen(
                [sys.executable, "-c", _PARENT_OF_A_SHORT_CHILD], stdout=subprocess.PIPE, text=True
            )
            assert parent.stdout is not None and parent.stdout.readline() == "child done\n"
            samples_before = sampler.usage["parent"].samples
            wait_until(
                lambda: sampler.usage["parent"].samples > samples_before, what="a sample after the child was reaped"
            )
        assert sampler.usage["parent"].cpu_seconds >= 0.9
    finally:
        if parent is not None:
            parent.kill()
            parent.wait()
