"""The code location in a process of its own, served over gRPC, as a Kubernetes or ECS deployment runs it.

`shopstream up` loads the code location inside the webserver and the daemon (``workspace.yaml``).
A deployment does not: the Dagster Helm chart runs each code location as its own deployment,
``dagster api grpc`` behind a service, and the webserver and daemon reach it through a workspace
of ``grpc_server`` entries; they never import the code. This module is that layout with the
project's environment:

* ``shopstream dagster code-server`` prepares the dbt manifest (the definitions read it) and
  becomes ``dagster api grpc --module-name shopstream_assets.definitions``;
* ``shopstream dagster webserver|daemon --code-server HOST:PORT`` write a workspace naming that
  server (under DAGSTER_HOME, beside dagster.yaml, as the Helm chart writes its own) and become
  the same processes ``shopstream up`` runs, loading that workspace instead.

With Dagster's ``DefaultRunLauncher`` (the stock run path, ``SHOPSTREAM_FAST_RUNS=0``) the daemon
asks the code server to start each run, so every run worker is a process of the code server's,
with its environment: the owner's credential and dbt live there. The warm run launcher instead
forks run workers from a process the daemon starts, which loads the code next to the daemon:
that is the layout a code server exists to avoid, so the commands here say so when it is chosen.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shopstream.database import ssl_parameters
from shopstream.services import endpoints
from shopstream.settings import SettingsError, load_settings
from shopstream_assets.runtime.dagster_instance import (
    REPO_ROOT,
    DagsterSetupError,
    daemon_command,
    dagster_environment,
    prepare_instance,
    venv_executable,
    webserver_command,
    webserver_url,
    write_instance_yaml,
)
from shopstream_assets.runtime.run_path import run_path

DEFINITIONS_MODULE = "shopstream_assets.definitions"
# The name workspace.yaml gives the in-process location: runs and schedules keep their names either way.
LOCATION_NAME = "shopstream_assets"
# The Dagster Helm chart's port for a code location's deployment.
DEFAULT_PORT = 3030
GRPC_WORKSPACE_FILENAME = "workspace-grpc.yaml"
# Loading the definitions on a loaded machine, or the code server's container still starting.
CODE_SERVER_WAIT_S = 300
WARM_LAUNCHER_WARNING = (
    "warning: the warm run launcher forks run workers beside the daemon, which then loads the code itself; "
    "set SHOPSTREAM_FAST_RUNS=0 on the code server, webserver and daemon for runs started by the code server"
)


class CodeServerError(ValueError):
    """A code server address that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class CodeServerAddress:
    """Where the webserver and the daemon reach the code server (a service name in a cluster)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> CodeServerAddress:
        """``HOST:PORT``, as a cluster's service and port name it."""
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+):(\d{1,5})\s*", text)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise CodeServerError(f"--code-server must be HOST:PORT such as dagster-code-server:3030: got {text!r}")
        return cls(match.group(1), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def code_server_command(bind_address: str, port: int) -> list[str]:
    """``dagster api grpc`` serving the code location on ``bind_address:port``."""
    return [
        venv_executable("dagster"),
        "api",
        "grpc",
        "--module-name",
        DEFINITIONS_MODULE,
        "--location-name",
        LOCATION_NAME,
        "--working-directory",
        str(REPO_ROOT),
        "--host",
        bind_address,
        "--port",
        str(port),
        # Run workers start as `<this venv's python> -m dagster`, whatever `dagster` PATH finds first.
        "--use-python-environment-entry-point",
    ]


def grpc_workspace_yaml(address: CodeServerAddress) -> str:
    return f"""\
# Written by shopstream_assets/runtime/code_server.py: the code location is served by
# `shopstream dagster code-server` (dagster api grpc); nothing here imports it.
load_from:
  - grpc_server:
      host: {address.host}
      port: {address.port}
      location_name: {LOCATION_NAME}
"""


def write_grpc_workspace(dagster_home: Path, address: CodeServerAddress) -> Path:
    """``dagster_home/workspace-grpc.yaml`` naming the code server; returns its path."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / GRPC_WORKSPACE_FILENAME
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(grpc_workspace_yaml(address))
    temporary.replace(path)
    return path


def on_workspace(command: list[str], workspace: Path) -> list[str]:
    """A webserver or daemon command line with ``workspace`` in place of the one it names."""
    flag = command.index("-w")
    return [*command[: flag + 1], str(workspace), *command[flag + 2 :]]


def code_server_listens(address: CodeServerAddress) -> bool:
    """Whether the code server accepts connections: ``dagster api grpc`` opens its port only once
    it has loaded the definitions (or failed to, which it then reports to every caller)."""
    try:
        with socket.create_connection((address.host, address.port), timeout=2):
            return True
    except OSError:
        return False


def wait_for_code_server(address: CodeServerAddress, timeout_s: float = CODE_SERVER_WAIT_S) -> None:
    """Return once the code server listens; a webserver or daemon started before would show the
    location as failed until its next reload."""
    deadline = time.monotonic() + timeout_s
    while not code_server_listens(address):
        if time.monotonic() > deadline:
            raise CodeServerError(f"no code server listens on {address} after {timeout_s:.0f} s")
        time.sleep(0.5)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve_code(bind_address: str | None = None, port: int | None = None) -> None:
    """Prepare the dbt manifest and dagster.yaml, then become ``dagster api grpc`` (never returns)."""
    try:
        settings = load_settings()
        found = endpoints(settings)
        prepare_instance(settings, found, progress=_progress)
    except (SettingsError, DagsterSetupError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    path = run_path()
    _progress(f"code server: {path.message}")
    if path.fast:
        _progress(WARM_LAUNCHER_WARNING)
    bind_address, port = bind_address or settings.bind_address, port or DEFAULT_PORT
    _progress(f"code server: {DEFINITIONS_MODULE} on {bind_address}:{port}")
    command = code_server_command(bind_address, port)
    os.chdir(REPO_ROOT)
    os.execvpe(command[0], command, dagster_environment(settings, found))


def serve_with_code_server(process: str, address: CodeServerAddress) -> None:
    """Become the webserver or the daemon (``process``) on a workspace naming the code server.

    Neither loads the code location, so neither needs the dbt manifest: only dagster.yaml.
    """
    if process not in ("webserver", "daemon"):
        raise ValueError(f"process must be webserver or daemon: got {process!r}")
    try:
        settings = load_settings()
        found = endpoints(settings)
        dagster_home = settings.dagster_home.resolve()
        write_instance_yaml(dagster_home, ssl=ssl_parameters(found.dagster_database_url or found.database_url))
        workspace = write_grpc_workspace(dagster_home, address)
        _progress(f"waiting for the code server on {address} ...")
        wait_for_code_server(address)
    except (SettingsError, CodeServerError, RuntimeError, OSError) as error:
        sys.exit(f"error: {error}")
    if run_path().fast:
        _progress(WARM_LAUNCHER_WARNING)
    if process == "webserver":
        command = on_workspace(webserver_command(settings), workspace)
        _progress(f"Dagster UI: {webserver_url(settings)}, code location from {address}")
    else:
        command = on_workspace(daemon_command(), workspace)
    os.chdir(REPO_ROOT)
    os.execvpe(command[0], command, dagster_environment(settings, found))
