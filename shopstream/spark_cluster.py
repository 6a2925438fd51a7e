"""A local Spark standalone cluster from pyspark's own distribution (`services start --spark-workers N`).

A master and N workers started with pyspark's ``bin/spark-class`` on loopback, their ports, pids
and work folders under ``SHOPSTREAM_HOME`` (``run/spark-cluster.json``, ``data/spark/``,
``logs/spark-*.log``); ``shopstream stream`` runs on it with
``SHOPSTREAM_SPARK_MASTER=spark://127.0.0.1:<port>`` (exported in env.sh). Everything is on one
machine, so the checkpoint folder is the executors' too; the connector jars reach them through
``spark.jars``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from shopstream.embedded import (
    LOOPBACK,
    Progress,
    ServiceError,
    ServiceStatus,
    free_port,
    port_open,
    read_state,
    resident_mb,
    write_state,
)
from shopstream.jars import require_java
from shopstream.settings import Settings

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
# The master's and workers' own JVMs only schedule and supervise.
DAEMON_MEMORY = "256m"
WORKER_CORES = 1
# An application's executors ask for spark.executor.memory (1g unless set): a worker offering less
# never gets an executor.
WORKER_MEMORY = "1g"
MAX_WORKERS = 8


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _running(pid: int | None, java_class: str) -> int | None:
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if java_class in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE:
            return pid
    return None


class SparkStandalone:
    """The master and its workers: started, reported and stopped together."""

    name = "spark"

    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.state_path = settings.run_dir / "spark-cluster.json"
        self.size = workers or read_state(self.state_path).get("workers") or 1
        if not 1 <= self.size <= MAX_WORKERS:
            raise ServiceError(f"a local Spark cluster has 1 to {MAX_WORKERS} workers: got {self.size}")
        self.work_dir = settings.data_dir / "spark"

    def _state(self) -> dict[str, Any]:
        return read_state(self.state_path)

    @property
    def master_url(self) -> str:
        port = self._state().get("master_port")
        if port is None:
            raise ServiceError(
                "the local Spark cluster has never been started: run `shopstream services start --spark-workers N`"
            )
        return f"spark://{LOOPBACK}:{port}"

    @property
    def web_url(self) -> str:
        return f"http://{LOOPBACK}:{self._state().get('master_webui_port')}"

    def master_pid(self) -> int | None:
        return _running(self._state().get("master_pid"), MASTER_CLASS)

    def worker_pid(self, index: int) -> int | None:
        return _running(self._state().get("worker_pids", {}).get(str(index)), WORKER_CLASS)

    def pid(self) -> int | None:
        return self.master_pid()

    def executor_pids(self) -> list[int]:
        """The executor JVMs the workers run for applications now (children of the workers)."""
        pids = []
        for index in range(1, self.size + 1):
            pid = self.worker_pid(index)
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if EXECUTOR_CLASS in child.cmdline():
                            pids.append(child.pid)
        return pids

    def _environment(self) -> dict[str, str]:
        home = spark_home()
        environment = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": LOOPBACK,
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            "SPARK_LOG_DIR": str(self.settings.logs_dir),
        }
        # The driver's own settings must not leak into the daemons (a master URL, a submit's arguments).
        environment.pop("PYSPARK_SUBMIT_ARGS", None)
        return environment

    def _spawn(self, log_name: str, arguments: list[str]) -> subprocess.Popen[bytes]:
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        spark_class = spark_home() / "bin" / "spark-class"
        with (self.settings.logs_dir / log_name).open("ab") as log:
            return subprocess.Popen(
                [str(spark_class), *arguments],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, progress: Progress = print, timeout: float = 120) -> str:
        """Start the master and the workers that do not run; wait until the master lists every worker."""
        require_java()
        state = self._state()
        state["workers"] = self.size
        if self.master_pid() is None:
            port = free_port(state.get("master_port"))
            webui = free_port(state.get("master_webui_port"))
            while webui == port:
                webui = free_port()
            progress(f"starting the Spark master on spark://{LOOPBACK}:{port} ...")
            master = self._spawn(
                "spark-master.log",
                [MASTER_CLASS, "--host", LOOPBACK, "--port", str(port), "--webui-port", str(webui)],
            )
            state.update({"master_port": port, "master_webui_port": webui, "master_pid": master.pid})
            write_state(self.state_path, state)
            self._wait(lambda: port_open(LOOPBACK, port), master, timeout, "the Spark master to listen")
        workers = state.setdefault("worker_pids", {})
        for index in range(1, self.size + 1):
            if self.worker_pid(index) is not None:
                continue
            folder = self.work_dir / f"worker-{index}"
            folder.mkdir(parents=True, exist_ok=True)
            progress(f"starting Spark worker {index} ({WORKER_CORES} core, {WORKER_MEMORY}) ...")
            worker = self._spawn(
                f"spark-worker-{index}.log",
                [
                    WORKER_CLASS, self.master_url, "--host", LOOPBACK, "--cores", str(WORKER_CORES),
                    "--memory", WORKER_MEMORY, "--webui-port", str(free_port()), "--work-dir", str(folder),
                ],
            )  # fmt: skip
            workers[str(index)] = worker.pid
            write_state(self.state_path, state)
        self._wait(lambda: len(self.alive_workers()) >= self.size, None, timeout, f"{self.size} Spark workers")
        return self.master_url

    def _wait(self, condition: Any, process: subprocess.Popen[bytes] | None, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ServiceError(f"Spark exited with code {process.returncode} while starting; see {self.log_dir}")
            if condition():
                return
            time.sleep(0.5)
        raise ServiceError(f"timed out after {timeout:.0f} s waiting for {what}; see {self.log_dir}")

    @property
    def log_dir(self) -> Path:
        return self.settings.logs_dir

    def master_json(self) -> dict[str, Any]:
        """The master's own view: workers, active and completed applications ({} when it does not answer)."""
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(f"{self.web_url}/json/", timeout=3) as response,
        ):
            return json.loads(response.read())
        return {}

    def alive_workers(self) -> list[dict[str, Any]]:
        return [worker for worker in self.master_json().get("workers", []) if worker.get("state") == "ALIVE"]

    def stop(self, progress: Progress = print, timeout: float = 30) -> bool:
        """Workers first (each stops its executors), then the master."""
        pids = [self.worker_pid(index) for index in range(1, self.size + 1)] + [self.master_pid()]
        processes = []
        for pid in pids:
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    processes.append(psutil.Process(pid))
        if not processes:
            return False
        progress(f"stopping the Spark cluster (master and {len(processes) - 1} workers) ...")
        executors = []
        for pid in self.executor_pids():
            with contextlib.suppress(psutil.Error):
                executors.append(psutil.Process(pid))
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(processes + executors, timeout=timeout)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        return True

    def statuses(self) -> list[ServiceStatus]:
        master = self.master_pid()
        address = self.master_url if master else None
        rows = [ServiceStatus("spark-master", master is not None, master, address, resident_mb(master), True)]
        for index in range(1, self.size + 1):
            pid = self.worker_pid(index)
            memory = resident_mb(pid, with_children=True)
            rows.append(ServiceStatus(f"spark-worker-{index}", pid is not None, pid, address, memory, True))
        return rows
