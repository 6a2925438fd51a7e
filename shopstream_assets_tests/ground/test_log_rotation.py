"""Process logs rotate by size: a child's output through the pump, and the embedded PostgreSQL's server log."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import pytest

from shopstream import database
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.processes import LogRotation, spawn, stop_group
from shopstream.settings import load_settings

MAX_BYTES = 64 * 1024
LINES = 12_000
# 12,000 lines of 32 bytes: 384 KB, six times the limit.
CHILD = f"for i in range({LINES}): print(f'line {{i:06d}} ' + 'x' * 20)"


def _wait_for(what: str, condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_child_s_log_rotates_by_size_and_keeps_the_newest_files(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    log.parent.mkdir()
    log.write_bytes(b"from an earlier run\n")
    process = spawn([sys.executable, "-c", CHILD], log_path=log, rotation=LogRotation(MAX_BYTES, keep=2))
    try:
        assert process.wait(60) == 0
    finally:
        stop_group(process, timeout=5)
    last_line = f"line {LINES - 1:06d}"
    _wait_for("the pump to write the last line", lambda: last_line in log.read_text())

    kept = [log.with_name("child.log.2"), log.with_name("child.log.1"), log]
    assert all(path.exists() for path in kept)
    assert not log.with_name("child.log.3").exists()
    assert all(path.stat().st_size <= MAX_BYTES for path in kept), [path.stat().st_size for path in kept]
    # Oldest to newest, the kept files are one unbroken run of lines ending with the child's last.
    lines = "".join(path.read_text() for path in kept).splitlines()
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], LINES))
    assert numbers[0] > 0 and "from an earlier run" not in lines


@pytest.mark.servers
def test_the_embedded_postgres_server_log_rotates_by_size_and_is_pruned_at_start(tmp_path: Path) -> None:
    settings = dataclasses.replace(load_settings({"SHOPSTREAM_HOME": str(tmp_path / "home")}), log_keep=2)
    assert "-c log_rotation_size=51200kB" in EmbeddedPostgres(settings).server_options()  # the 50m default
    postgres = EmbeddedPostgres(dataclasses.replace(settings, log_max_bytes=MAX_BYTES))
    assert "-c log_rotation_size=64kB" in postgres.server_options()
    try:
        url = postgres.start(progress=lambda message: None)
        # Warnings go to the server log; PostgreSQL names each file by the second it began, so
        # the bursts are a second apart for every rotation to get a file of its own.
        with database.connect(url, autocommit=True) as conn:
            for _ in range(5):
                conn.execute("do $$ begin for i in 1..80 loop raise warning '%', repeat('w', 1000); end loop; end $$")
                time.sleep(1.2)
        files = sorted(postgres.server_log_dir.glob("postgresql-*.log"))
        assert len(files) >= 4, files
        # A file is closed once it passes the size; a burst is 80 KB, so none holds more than one past it.
        assert all(path.stat().st_size <= MAX_BYTES + 100 * 1024 for path in files)
        assert sum("wwww" in path.read_text(errors="replace") for path in files) >= 4
    finally:
        postgres.stop(progress=lambda message: None)
    files = sorted(postgres.server_log_dir.glob("postgresql-*.log"))  # with what the shutdown wrote

    # At the next start only the newest SHOPSTREAM_LOG_KEEP rotated files stay, with the current one.
    try:
        postgres.start(progress=lambda message: None)
        remaining = sorted(postgres.server_log_dir.glob("postgresql-*.log"))
        assert remaining[: settings.log_keep + 1] == files[-(settings.log_keep + 1) :]
        assert len(remaining) <= settings.log_keep + 2  # the kept ones and the file this start opened
    finally:
        postgres.stop(progress=lambda message: None)


def test_files_rotate_between_lines_whatever_chunks_the_pipe_gives(tmp_path: Path) -> None:
    """A pipe's chunks end anywhere: a rotated file still begins and ends on a whole line."""
    from shopstream.processes import RotatingLogFile

    log = tmp_path / "child.log"
    target = RotatingLogFile(log, LogRotation(max_bytes=40, keep=5))
    text = b"".join(f"line {number:02d} xx\n".encode() for number in range(12))  # 12 lines of 14 bytes
    for start in range(0, len(text), 9):  # chunks of 9 bytes: most end inside a line
        target.write(text[start : start + 9])
    target.close()
    files = [log.with_name(f"child.log.{index}") for index in range(5, 0, -1)] + [log]
    contents = [path.read_bytes() for path in files if path.exists()]
    assert b"".join(contents) == text[-len(b"".join(contents)) :]
    for content in contents:
        assert content.endswith(b"\n") and content.startswith(b"line ") and len(content) <= 40, content
