"""SHOPSTREAM_HOME is private: folders 0700, files 0600, and credentials that are never made up.

As root (this machine, CI) the embedded PostgreSQL runs as its own system user: the folders on
the way to its data and logs let that user's group pass through (0710) and nothing more.
"""

from __future__ import annotations

import grp
import json
import os
import stat
from pathlib import Path

import psycopg
import pytest

from shopstream import database
from shopstream.embedded import private_folder, write_file_atomically
from shopstream.postgres_server import EMBEDDED_POSTGRES_USER
from shopstream_assets_tests.ground.own_servers import cli, exports

# The folders PostgreSQL's system user passes through as root; everything else is 0700 / 0600.
TRAVERSED = ("", "data", "logs", "run")


def _server_group() -> int | None:
    return grp.getgrnam(EMBEDDED_POSTGRES_USER).gr_gid if os.geteuid() == 0 else None


def _modes_not_private(home: Path) -> list[str]:
    server_group = _server_group()
    wrong = []
    traversed = {home / name if name else home for name in TRAVERSED}
    for path in [home, *home.rglob("*")]:
        if path.is_symlink():  # the shared jars folder, outside the home
            continue
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            allowed = {0o700}
            if path in traversed and info.st_gid == server_group:
                allowed.add(0o710)
        else:
            allowed = {0o600, 0o400}
        if mode not in allowed:
            wrong.append(f"{oct(mode)} {path}")
    return wrong


@pytest.mark.servers
def test_the_home_and_all_in_it_are_private_and_lost_credentials_are_not_replaced(own_home: Path) -> None:
    first = exports(cli(own_home, "services", "start").stdout)
    assert _modes_not_private(own_home) == []
    credentials = own_home / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    old_passwords = json.loads(credentials.read_text())

    # Credentials gone while the cluster is there: refused, with the way out, and nothing written.
    credentials.rename(own_home / "credentials.moved")
    refused = cli(own_home, "services", "start", check=False)
    assert refused.returncode == 2
    assert "shopstream services reset-passwords" in refused.stderr
    assert not credentials.exists()
    for password in old_passwords.values():
        assert password not in refused.stdout + refused.stderr

    # An unreadable file is refused the same way, and left as it is.
    credentials.write_text("{not json")
    unreadable = cli(own_home, "services", "start", check=False)
    assert unreadable.returncode == 2 and "reset-passwords" in unreadable.stderr
    assert credentials.read_text() == "{not json"
    credentials.unlink()

    reset = cli(own_home, "services", "reset-passwords")
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    new_passwords = json.loads(credentials.read_text())
    assert not set(new_passwords.values()) & set(old_passwords.values())
    for password in new_passwords.values():
        assert password not in reset.stdout + reset.stderr

    second = exports(cli(own_home, "services", "start").stdout)
    for name in ("SHOPSTREAM_DATABASE_URL", "SHOPSTREAM_DASHBOARD_DATABASE_URL"):
        with database.connect(second[name]) as conn:
            conn.execute("select 1")
        with pytest.raises(psycopg.OperationalError, match="password"):
            database.connect(first[name]).close()
    assert _modes_not_private(own_home) == []


def test_files_are_created_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        folder = private_folder(tmp_path / "a" / "b")
        target = folder / "secret.json"
        write_file_atomically(target, "first")
        write_file_atomically(target, "second")  # replaced, not rewritten in place
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "second"
    assert sorted(path.name for path in folder.iterdir()) == ["secret.json"]  # no temporary file left


def test_an_open_folder_is_closed_to_others(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    private_folder(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
