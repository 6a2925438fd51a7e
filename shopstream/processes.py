"""Child processes that always stop (their own process group, SIGTERM, wait, SIGKILL), logs that rotate."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shopstream.settings import Settings

PUMP_CHUNK = 64 * 1024


@dataclass(frozen=True)
class LogRotation:
    """A log file rotates when it would pass ``max_bytes``; ``keep`` rotated files are kept (``log.1`` newest)."""

    max_bytes: int
    keep: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LogRotation:
        return cls(settings.log_max_bytes, settings.log_keep)


class RotatingLogFile:
    """Bytes appended to ``path``; at ``max_bytes`` it becomes ``path.1`` (``.1`` -> ``.2`` ...), the oldest dropped."""

    def __init__(self, path: Path, rotation: LogRotation) -> None:
        self.path = path
        self.rotation = rotation
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._size = self._file.tell()
        self._partial_line = b""

    def write(self, data: bytes) -> None:
        # Whole lines only, so a rotated file never begins or ends inside a line; the pipe's
        # chunks end anywhere. A line longer than a whole file is written as it comes.
        data = self._partial_line + data
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) < self.rotation.max_bytes:
            self._partial_line = data
            return
        end = end or len(data)
        self._partial_line = data[end:]
        self._write_lines(data[:end])

    def _write_lines(self, data: bytes) -> None:
        while data:
            room = max(0, self.rotation.max_bytes - self._size)
            end = len(data) if len(data) <= room else data.rfind(b"\n", 0, room) + 1
            if end == 0:
                if self._size:
                    self._rotate()
                    continue
                end = min(len(data), self.rotation.max_bytes)
            self._file.write(data[:end])
            # Flushed per chunk: a reader (a failed start's error message, `tail -f`) sees it at once.
            self._file.flush()
            self._size += end
            data = data[end:]
            if data:
                self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.rotation.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if index == self.rotation.keep:
                older.unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        self._write_lines(self._partial_line)
        self._partial_line = b""
        self._file.close()


def pump(source: IO[bytes], target: RotatingLogFile) -> threading.Thread:
    """A thread copying ``source`` into ``target`` until every writer has closed it, then closing both."""

    def copy() -> None:
        try:
            while chunk := os.read(source.fileno(), PUMP_CHUNK):
                target.write(chunk)
        finally:
            target.close()
            source.close()

    thread = threading.Thread(target=copy, name=f"log pump {target.path.name}", daemon=True)
    thread.start()
    return thread


def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    rotation: LogRotation | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a process group of its own, output appended to ``log_path``.

    With ``rotation`` the output goes through a pipe to a thread of this process that writes
    ``log_path`` and rotates it by size (:class:`RotatingLogFile`): a process that runs for
    weeks cannot fill the disk. The pipe lives as long as we do, so use it for processes this
    process outlives (`up`'s children); without it the file grows as the child writes.

    Its own group means a terminal's Ctrl-C reaches only us, and we stop the child and
    everything it started (Spark's JVM, Dagster's code server) with one signal. Dagster's run
    workers live in the warm run worker's group, which ends itself when the daemon is gone
    (shopstream_assets/runtime/warm_run_launcher.py).
    """
    output: int | IO[bytes] = subprocess.DEVNULL
    if log_path is not None and rotation is not None:
        target = RotatingLogFile(log_path, rotation)
        try:
            process = subprocess.Popen(
                list(command),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            target.close()
            raise
        assert process.stdout is not None
        pump(process.stdout, target)
        return process
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
        if not isinstance(output, int):
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
