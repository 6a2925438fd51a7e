"""A run launcher whose run workers start warm: forked from a process that has the code loaded.

Dagster's default launcher asks the code server for each run, and the code server starts a
new Python process with the "spawn" method (hard-coded), which imports Dagster, dagster-dbt,
dbt, PySpark and this code location again and builds the definitions: seconds of CPU before
the first model runs, in every run. The Bronze sensor requests a refresh every few seconds, on
two cores the Spark stream shares, so those seconds are event-to-Gold latency.

Here the daemon keeps one *warm worker*: ``python -m shopstream_assets.runtime.warm_run_launcher``,
started on the first launch, which imports all of that once and then forks one child per
run. The child is a run worker like any other (``dagster api execute_run``'s own body): it
reports its pid, runs the job, writes its events to the instance and exits; a crash takes
down only that child. Cancelling works through the instance, as with any launcher: the run
is marked CANCELING and the child's cancellation thread interrupts it.

The warm worker forks only code it loaded itself. Before each fork it compares the code
location's files (and the dbt manifest) with those it imported; if any changed, it exits and
the launcher starts a fresh one, so a reloaded code location never runs stale code.

This is the fast run path: it runs only on the tested Dagster (``run_path``), and every
private Dagster name it needs comes from ``dagster_private``.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from multiprocessing import util as multiprocessing_util
from pathlib import Path
from typing import Any, TextIO

from dagster import DagsterInstance, DagsterRun

from shopstream_assets.runtime.dagster_private import (
    CheckRunHealthResult,
    ConfigurableClass,
    ConfigurableClassData,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where a run worker's code comes from: a change here makes the warm worker stale.
CODE_FOLDERS = ("shopstream_assets", "streaming")
PID_TAG = "shopstream/run_worker_pid"
READY = "ready"
STALE = "stale"
# Importing Dagster, dbt and PySpark and building the definitions, on a box shared with Spark.
START_TIMEOUT_S = 120
# How long runs get to stop after an interrupt when the warm worker is told to stop.
STOP_GRACE_S = 10


def code_fingerprint(dbt_target: Path | None = None) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every Python file of the code location and of the dbt manifest."""
    files = [path for folder in CODE_FOLDERS for path in sorted((REPO_ROOT / folder).rglob("*.py"))]
    target = dbt_target or Path(os.environ.get("DBT_TARGET_PATH") or REPO_ROOT / "dbt_project" / "target")
    files.append(target / "manifest.json")
    stamps = []
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


class WarmWorkerError(RuntimeError):
    pass


class WarmWorker:
    """The launcher's handle on its warm worker process: one line in (a run id), one line out (a pid)."""

    def __init__(self, environment: Mapping[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(environment),
            text=True,
            # A group of its own, which its runs join: stopping it stops everything they started.
            start_new_session=True,
        )
        self.retired = False
        self._expect(READY, START_TIMEOUT_S)

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def _expect(self, word: str, timeout: float) -> str:
        assert self._process.stdout is not None
        reply: list[str] = []
        reader = threading.Thread(target=lambda: reply.append(self._process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        line = reply[0].strip() if reply else ""
        if not line.startswith(word):
            self.close()
            raise WarmWorkerError(
                f"the warm run worker (pid {self._process.pid}) answered {line!r} instead of {word!r}"
                f"{'' if reply else f' within {timeout:.0f} s'}; its output is in the daemon's log"
            )
        return line.removeprefix(word).strip()

    def fork_run(self, run_id: str) -> int | None:
        """The pid of the child running ``run_id``; None if the worker found its code stale or died."""
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write(run_id + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline().strip()
        except (OSError, ValueError):  # the worker died since the last run
            line = ""
        if line == STALE:
            self._retire()
            return None
        if not line:
            self.close()
            return None
        if not line.startswith("pid "):
            self.close()
            raise WarmWorkerError(f"the warm run worker answered {line!r} to run {run_id}")
        return int(line.removeprefix("pid "))

    def _retire(self) -> None:
        """Stale: the worker lets its running runs finish, then exits (see serve)."""
        self.retired = True

    def close(self) -> None:
        """Stop the worker and every run it forked (they are interrupted first: see serve)."""
        with contextlib.suppress(OSError, ValueError):
            if self._process.stdin is not None:
                self._process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(STOP_GRACE_S + 10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a child forked from a warm worker (see the module's docstring)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self._worker: WarmWorker | None = None
        self._retired: list[WarmWorker] = []
        self._lock = threading.Lock()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(inst_data=inst_data)

    def _fork(self, run_id: str) -> tuple[int, int]:
        """(child pid, warm worker pid); starts a fresh worker when there is none or it went stale."""
        with self._lock:
            self._retired = [worker for worker in self._retired if worker.alive()]
            for _attempt in range(2):
                if self._worker is None or not self._worker.alive():
                    self._worker = WarmWorker(os.environ)
                child = self._worker.fork_run(run_id)
                if child is not None:
                    return child, self._worker.pid
                if self._worker.retired:
                    # It finishes its runs; closed with the launcher if they outlast it.
                    self._retired.append(self._worker)
                self._worker = None
            raise WarmWorkerError(
                "two warm run workers in a row could not take the run (their code changed as they "
                "loaded it, or they died); see the daemon's log"
            )

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        child, worker = self._fork(run.run_id)
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(child)})
        self._instance.report_engine_event(
            f"Run worker forked (pid {child}) from the warm worker (pid {worker}).", run, cls=self.__class__
        )

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        # The child's cancellation thread sees CANCELING and interrupts the run, from any host.
        self._instance.report_run_canceling(run)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = run.tags.get(PID_TAG)
        if pid is None:
            # Tagged just after the fork: a run this young is still being launched.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run worker's pid is not tagged yet")
        try:
            state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state in ("Z", "X", "gone"):
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"run worker pid {pid} has exited")
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def dispose(self) -> None:
        with self._lock:
            for worker in [*self._retired, *([self._worker] if self._worker else [])]:
                worker.close()
            self._worker, self._retired = None, []


# Children running runs; the SIGCHLD handler drops those that exited.
_running: set[int] = set()


def _reap_children(_signum: int, _frame: object) -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            _running.discard(pid)


def _run_exit_finalizers() -> None:
    """What a normal exit would run and ``os._exit`` skips: multiprocessing's finalizers.

    dbt creates named semaphores (its manifest's and connection manager's locks); they are
    unlinked from /dev/shm only by these finalizers, so without them every run left a few behind.
    """
    with contextlib.suppress(Exception):
        multiprocessing_util._run_finalizers(0)
        multiprocessing_util._run_finalizers()


def _stop_runs_and_exit(_signum: int | None = None, _frame: object = None) -> None:
    """The launcher is gone (or we were told to stop): interrupt the runs, then end the whole group.

    SIGINT is how Dagster cancels a run worker (it records the run as canceled and stops its
    compute-log tails); whatever is left after the grace period, with every process the runs
    started, goes with the process group this worker leads.
    """
    for pid in list(_running):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    while _running and time.monotonic() < deadline:
        time.sleep(0.1)
    _run_exit_finalizers()
    if os.getpgrp() == os.getpid():  # our own group (WarmWorker starts us in a new session)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    for pid in list(_running):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os._exit(0)


def _drain_and_exit() -> None:
    """Stale code: take no more runs, let the running ones finish, then go.

    If the launcher goes away meanwhile (end of input), the runs are stopped as in
    :func:`_stop_runs_and_exit`, so a retired worker never outlives the daemon.
    """
    while _running:
        readable, _, _ = select.select([sys.stdin], [], [], 0.5)
        if readable and not sys.stdin.readline():
            _stop_runs_and_exit()
    sys.exit(0)


def _run_child(run_id: str) -> int:
    """In the forked child: what ``dagster api execute_run`` does, plus the cancellation thread."""
    from shopstream_assets.runtime.dagster_private import (
        capture_interrupts,
        execute_run_command_body,
        keep_storage_connections_open,
        start_run_cancellation_thread,
    )

    with capture_interrupts(), DagsterInstance.get() as instance:
        keep_storage_connections_open(instance)
        _thread, stop_cancellation_thread = start_run_cancellation_thread(instance, run_id)
        try:
            return execute_run_command_body(run_id, instance, lambda event: None, set_exit_code_on_failure=False)
        finally:
            stop_cancellation_thread.set()


def _fork_run(run_id: str, protocol: TextIO) -> int:
    # A child that exits at once must not be reaped before it is in _running.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    child = os.fork()
    if child == 0:
        exit_code = 1
        try:
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            protocol.close()
            random.seed()
            exit_code = _run_child(run_id)
        except BaseException:
            traceback.print_exc()
        finally:
            _run_exit_finalizers()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exit_code)
    _running.add(child)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    return child


def serve() -> None:
    """The warm worker: load the code location, then fork a run worker per run id on stdin."""
    loaded = code_fingerprint()  # before importing: an edit made while we import makes us stale
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of imported code must not reach the launcher's pipe
    signal.signal(signal.SIGTERM, _stop_runs_and_exit)
    from shopstream_assets.definitions import defs
    from shopstream_assets.defs.dbt.project import DBT_POOL
    from shopstream_assets.runtime import dagster_private, dbt_in_process, dbt_private

    defs()  # builds (and caches) the definitions every child then uses
    dbt_private.preload()
    try:
        dagster_private.preload_run_worker(DBT_POOL)
    except Exception:  # each run worker then imports what it needs itself: slower, not wrong
        traceback.print_exc()
    try:
        warmed = dbt_in_process.warm_up()
        if warmed is not None and not warmed.success:
            print(f"warm run worker: dbt's warm-up failed: {warmed.error_messages()}", file=sys.stderr, flush=True)
    except Exception:  # a cold dbt is slower, not wrong
        traceback.print_exc()
    signal.signal(signal.SIGCHLD, _reap_children)
    try:
        protocol.write(f"{READY} {os.getpid()}\n")
        for line in sys.stdin:
            run_id = line.strip()
            if not run_id:
                continue
            if code_fingerprint() != loaded:
                protocol.write(f"{STALE}\n")
                _drain_and_exit()
            if threading.active_count() > 1:
                # Forking a process with other threads can copy a lock another thread held.
                print(f"warm run worker: {threading.active_count()} threads before fork", file=sys.stderr, flush=True)
            protocol.write(f"pid {_fork_run(run_id, protocol)}\n")
    except Exception:  # a broken pipe, a failed fork: the runs still get their interrupt
        traceback.print_exc()
    _stop_runs_and_exit()


if __name__ == "__main__":
    serve()
