"""What the two embedded servers share: the loopback address and its free ports, the JSON state
files that remember them, their status line, and how a server's process is stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

Progress = Callable[[str], None]

LOOPBACK = "127.0.0.1"

# What the project's processes create is theirs alone: folders 0700, files 0600 (set by `shopstream`'s
# entry point, so every server and child it starts inherits it).
PRIVATE_UMASK = 0o077


class ServiceError(RuntimeError):
    """A server could not be started, found or stopped; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str | None
    rss_mb: float | None
    embedded: bool


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on loopback, else a port the kernel picks."""
    if preferred:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def read_state(path: Path) -> dict[str, Any]:
    """A server's state file (its ports, pid, ids); empty when there is none yet."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_state(path: Path, payload: dict[str, Any], *, private: bool = False) -> None:
    """Replace ``path`` in one step, so a reader never sees half a file; ``private``: mode 600."""
    write_file_atomically(path, json.dumps(payload, indent=2), mode=0o600 if private else 0o644)


def write_file_atomically(path: Path, text: str, *, mode: int = 0o600) -> None:
    """``text`` into ``path`` through a temporary file in the same folder, created at ``mode`` (never
    readable by others in between), flushed to disk, then renamed over ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def private_folder(path: Path) -> Path:
    """``path`` and its missing parents created 0700; an existing one loses group and other access.

    Except a folder handed to another group (a server run as its own system user, as
    ``postgres_server`` does as root): that group keeps the traversal it needs to reach its files.
    """
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask; this is not
    info = path.stat()
    allowed = 0o710 if info.st_gid != os.getegid() else 0o700
    if info.st_mode & 0o777 & ~allowed:
        path.chmod(info.st_mode & 0o777 & allowed)
    return path


def resident_mb(pid: int | None, *, with_children: bool = False) -> float | None:
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)] if with_children else [process]
        return round(sum(p.memory_info().rss for p in processes) / 2**20, 1)
    except psutil.Error:
        return None


def terminate(pid: int, *, timeout: float, name: str, progress: Progress) -> None:
    """SIGTERM, wait, then SIGKILL: servers get the chance to flush and close cleanly."""
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        progress(f"{name} did not stop within {timeout:.0f} s of SIGTERM; killing it")
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
            process.wait(10)
