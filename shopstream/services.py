"""The servers ShopStream runs on, embedded or named by URL: where they are and their lifecycle.

When ``SHOPSTREAM_DATABASE_URL`` / ``SHOPSTREAM_KAFKA_BOOTSTRAP`` are unset, ShopStream runs its
own PostgreSQL (``shopstream.postgres_server``) and Kafka broker (``shopstream.kafka_server``)
with all state under ``SHOPSTREAM_HOME``; both outlive the command that started them
(``shopstream services start``). This module decides which servers are ours, starts, stops and
reports them together, and tells every other process where they are (:class:`Endpoints`).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from shopstream import database
from shopstream.database import DAGSTER_DATABASE_NAME, READER_ROLE
from shopstream.embedded import (
    LOOPBACK,
    Progress,
    ServiceError,
    ServiceStatus,
    private_folder,
    read_state,
    write_file_atomically,
    write_state,
)
from shopstream.jars import require_java
from shopstream.kafka_cluster import KafkaCluster
from shopstream.kafka_server import EmbeddedKafka
from shopstream.postgres_roles import (
    DutyRoles,
    dagster_role,
    hand_over_pipeline_schemas,
    owner_role,
    reader_role,
    set_up_duty_roles,
)
from shopstream.postgres_server import EmbeddedPostgres, prepare_external_database
from shopstream.settings import Settings
from shopstream.spark_cluster import SparkStandalone


@dataclass(frozen=True)
class Endpoints:
    """Where the running servers are, as the other processes need them: each URL is one role's."""

    database_url: str
    dashboard_database_url: str
    kafka_bootstrap: str
    # Dagster's storage role on its database; None: the database_url's role (a server we do not run).
    dagster_database_url: str | None = None
    # The local Spark standalone cluster's master (`services start --spark-workers N`); None: the setting's.
    spark_master: str | None = None

    def environment(self) -> dict[str, str]:
        """SHOPSTREAM_* variables that point every other process at these servers.

        The SHOPSTREAM_DB_* values repeat the URL's parts because dbt's profiles.yml
        can read environment variables but cannot parse a URL; SHOPSTREAM_DAGSTER_DB_* are
        the ones dagster.yaml reads for Dagster's storage.
        """
        parts = database.url_parts(self.database_url)
        dagster = database.url_parts(self.dagster_database_url or self.database_url)
        return {
            "SHOPSTREAM_DATABASE_URL": self.database_url,
            "SHOPSTREAM_DASHBOARD_DATABASE_URL": self.dashboard_database_url,
            "SHOPSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SHOPSTREAM_DB_HOST": parts.host,
            "SHOPSTREAM_DB_PORT": str(parts.port),
            "SHOPSTREAM_DB_USER": parts.user,
            "SHOPSTREAM_DB_PASSWORD": parts.password,
            "SHOPSTREAM_DB_NAME": parts.database,
            "SHOPSTREAM_DAGSTER_DB_USER": dagster.user,
            "SHOPSTREAM_DAGSTER_DB_PASSWORD": dagster.password,
            **database.ssl_environment(self.database_url),
            **({"SHOPSTREAM_SPARK_MASTER": self.spark_master} if self.spark_master else {}),
        }


ENVIRONMENT_FILENAME = "env.sh"


def environment_file(settings: Settings) -> Path:
    """Where `services start` keeps the export lines that carry passwords (mode 600)."""
    return settings.home / ENVIRONMENT_FILENAME


def write_environment_file(settings: Settings, endpoints: Endpoints) -> Path:
    """The endpoints' variables as `export` lines a shell sources; the only copy of them outside
    credentials.json, so `services start` prints where they are instead of what they are."""
    path = environment_file(settings)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in endpoints.environment().items()]
    header = "# Written by `shopstream services start`: source it, do not edit it."
    write_file_atomically(path, "\n".join([header, *lines]) + "\n")
    return path


@dataclass(frozen=True)
class ClusterOptions:
    """How many local Kafka nodes and Spark workers `services start` runs: given once as its options,
    kept under SHOPSTREAM_HOME so that a later start, status or stop means the same servers."""

    kafka_nodes: int = 1
    spark_workers: int = 0


def _options_path(settings: Settings) -> Path:
    return settings.run_dir / "services.json"


def cluster_options(settings: Settings) -> ClusterOptions:
    state = read_state(_options_path(settings))
    return ClusterOptions(state.get("kafka_nodes", 1), state.get("spark_workers", 0))


def save_cluster_options(
    settings: Settings, *, kafka_nodes: int | None = None, spark_workers: int | None = None
) -> ClusterOptions:
    """Record the options given (None: keep the stored one); refuse a change while the servers it
    replaces still run, since two Kafkas under one home would share no state but its name."""
    current = cluster_options(settings)
    wanted = ClusterOptions(
        current.kafka_nodes if kafka_nodes is None else kafka_nodes,
        current.spark_workers if spark_workers is None else spark_workers,
    )
    if wanted.kafka_nodes < 1:
        raise ServiceError(f"--kafka-nodes must be at least 1: got {wanted.kafka_nodes}")
    if wanted.spark_workers < 0:
        raise ServiceError(f"--spark-workers must be 0 or more: got {wanted.spark_workers}")
    if wanted.kafka_nodes != current.kafka_nodes and _embedded_kafka(settings, current).pid() is not None:
        raise ServiceError(
            f"the embedded Kafka runs with {current.kafka_nodes} node(s): run `shopstream services stop` first"
        )
    if wanted.spark_workers != current.spark_workers and current.spark_workers and spark_cluster_running(settings):
        raise ServiceError(
            f"the local Spark cluster runs with {current.spark_workers} worker(s): run `shopstream services stop` first"
        )
    private_folder(settings.home)
    write_state(_options_path(settings), {"kafka_nodes": wanted.kafka_nodes, "spark_workers": wanted.spark_workers})
    return wanted


def _embedded_kafka(settings: Settings, options: ClusterOptions) -> EmbeddedKafka | KafkaCluster:
    return KafkaCluster(settings, options.kafka_nodes) if options.kafka_nodes > 1 else EmbeddedKafka(settings)


def embedded_kafka(settings: Settings) -> EmbeddedKafka | KafkaCluster:
    """The embedded broker, or the local cluster of `services start --kafka-nodes N` (N > 1)."""
    return _embedded_kafka(settings, cluster_options(settings))


def spark_cluster_running(settings: Settings) -> bool:
    return SparkStandalone(settings).master_pid() is not None


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
    kafka = embedded_kafka(settings)
    if isinstance(kafka, KafkaCluster):
        try:
            return settings.kafka_bootstrap == kafka.bootstrap
        except ServiceError:
            return False
    port = kafka.port
    return port is not None and settings.kafka_bootstrap == f"{LOOPBACK}:{port}"


def start_services(settings: Settings, progress: Progress = print) -> Endpoints:
    """Start whatever is embedded (or find it running) and return the endpoints; Bronze's schema is
    the caller's to migrate (``streaming.migrations``, a floor above this one)."""
    private_folder(settings.home)
    kafka_embedded = kafka_is_embedded(settings)
    if kafka_embedded:
        require_java()  # fail before starting anything, not half-way
    dagster_url = None
    if postgres_is_embedded(settings):
        postgres = EmbeddedPostgres(settings)
        postgres.start(progress)  # the admin's URL it returns is for the migrations (admin_database_url)
        database_url = postgres.owner_url()
        dashboard_url = settings.dashboard_database_url or postgres.reader_url()
        dagster_url = postgres.dagster_url()
    else:
        database_url, dashboard_url = database_urls(settings)
        dagster_url = configured_dagster_url(settings)
        if dashboard_url == database_url:
            progress(
                "note: the dashboard connects as the database's owner; set SHOPSTREAM_READER_PASSWORD "
                "(or SHOPSTREAM_DASHBOARD_DATABASE_URL) to give it a read-only role"
            )
        if not settings.admin_database_url:  # else migrate_as_admin sets the roles and databases up
            prepare_external_database(settings, database_url, progress)
    kafka_bootstrap = embedded_kafka(settings).start(progress) if kafka_embedded else settings.kafka_bootstrap
    workers = cluster_options(settings).spark_workers
    spark_master = SparkStandalone(settings, workers).start(progress) if workers else None
    return Endpoints(database_url, dashboard_url, kafka_bootstrap, dagster_url, spark_master)


def stop_services(settings: Settings, progress: Progress = print) -> list[str]:
    """Stop the embedded servers under SHOPSTREAM_HOME that run; return the names of those stopped.

    External servers named by URL are never touched.
    """
    stopped = []
    # Spark, then Kafka: clients reconnecting to a half-stopped stack are noisier the other way round.
    # Whatever runs is stopped, whichever options it was started with.
    if SparkStandalone(settings).stop(progress):
        stopped.append(SparkStandalone.name)
    kafka_stopped = KafkaCluster(settings).stop(progress)
    kafka_stopped = EmbeddedKafka(settings).stop(progress) or kafka_stopped
    if kafka_stopped:
        stopped.append(EmbeddedKafka.name)
    if EmbeddedPostgres(settings).stop(progress):
        stopped.append(EmbeddedPostgres.name)
    return stopped


def running_servers(settings: Settings) -> frozenset[str]:
    """The names of the embedded servers under SHOPSTREAM_HOME that run now."""
    servers = (EmbeddedPostgres(settings), embedded_kafka(settings), SparkStandalone(settings))
    return frozenset(server.name for server in servers if server.pid() is not None)


def stop_servers_started_since(settings: Settings, already_running: frozenset[str], progress: Progress) -> None:
    """Stop the embedded servers in use that were not in ``already_running``: what `up` found
    running it leaves running, what it started it stops (Kafka first, as `services stop` does)."""
    if SparkStandalone.name not in already_running:
        SparkStandalone(settings).stop(progress=progress)
    if EmbeddedKafka.name not in already_running and kafka_is_embedded(settings):
        embedded_kafka(settings).stop(progress=progress)
    if EmbeddedPostgres.name not in already_running and postgres_is_embedded(settings):
        EmbeddedPostgres(settings).stop(progress=progress)


def services_status(settings: Settings) -> list[ServiceStatus]:
    statuses = []
    if postgres_is_embedded(settings):
        statuses.append(EmbeddedPostgres(settings).status())
    else:
        statuses.append(ServiceStatus("postgresql", True, None, database.redact(settings.database_url), None, False))
    kafka = embedded_kafka(settings)
    if not kafka_is_embedded(settings):
        statuses.append(ServiceStatus("kafka", True, None, settings.kafka_bootstrap, None, False))
    elif isinstance(kafka, KafkaCluster):
        statuses.extend(kafka.statuses())
    else:
        statuses.append(kafka.status())
    workers = cluster_options(settings).spark_workers
    if workers:
        statuses.extend(SparkStandalone(settings, workers).statuses())
    return statuses


def database_urls(settings: Settings) -> tuple[str, str]:
    """(owner URL, dashboard URL): the configured ones, or the running embedded server's."""
    if not settings.database_embedded:
        return settings.database_url, settings.dashboard_database_url or database.reader_or_owner_url(
            settings.database_url, settings.reader_password
        )
    postgres = _running_embedded_postgres(settings)
    return postgres.owner_url(), settings.dashboard_database_url or postgres.reader_url()


def admin_database_url(settings: Settings) -> str:
    """The URL that may create roles and databases and migrate, on the pipeline's database: the
    embedded server's admin (its password is in credentials.json, never exported), or on a server we
    do not run SHOPSTREAM_ADMIN_DATABASE_URL's role, else the configured URL's own."""
    if postgres_is_embedded(settings):
        return _running_embedded_postgres(settings).admin_url()
    if settings.admin_database_url:
        return database.with_database(settings.admin_database_url, _database_parts(settings).database)
    return settings.database_url or ""


def configured_dagster_url(settings: Settings) -> str | None:
    """Dagster's own role on a server we do not run (SHOPSTREAM_DAGSTER_DATABASE_URL); None: the owner's."""
    return settings.dagster_database_url


def _database_parts(settings: Settings) -> database.ConnectionParts:
    return database.url_parts(settings.database_url or "")


def external_duty_roles(settings: Settings) -> DutyRoles:
    """The roles the URLs name on a server we do not run: the owner is SHOPSTREAM_DATABASE_URL's user,
    the reader the dashboard URL's (none when that is the owner's), Dagster's the Dagster URL's."""
    owner = _database_parts(settings)
    dashboard = database.url_parts(database_urls(settings)[1])
    dagster_url = configured_dagster_url(settings)
    dagster = database.url_parts(dagster_url) if dagster_url else None
    roles = DutyRoles(
        owner.database,
        owner_role(owner.user, owner.password),
        reader_role(dashboard.user, dashboard.password) if dashboard.user != owner.user else None,
        dagster_role(dagster.user, dagster.password) if dagster and dagster.user != owner.user else None,
        dagster.database if dagster else DAGSTER_DATABASE_NAME,
    )
    admin = database.url_parts(settings.admin_database_url or "").user
    if admin in {role.name for role in roles.login_roles}:
        raise ServiceError(
            f"SHOPSTREAM_ADMIN_DATABASE_URL's role {admin!r} is also a pipeline role: setting the roles up would"
            " take its privileges away. Name the owner, reader and Dagster roles in their own URLs"
        )
    return roles


def set_up_external_roles(settings: Settings, progress: Progress = print) -> DutyRoles:
    """With SHOPSTREAM_ADMIN_DATABASE_URL: the owner, reader and Dagster roles and Dagster's database,
    as on the embedded server (docs/security-external-postgres.md)."""
    roles = external_duty_roles(settings)
    admin_url = settings.admin_database_url or ""
    try:
        set_up_duty_roles(admin_url, roles)
    except psycopg.errors.InsufficientPrivilege as error:
        raise ServiceError(
            f"SHOPSTREAM_ADMIN_DATABASE_URL's role may not set up ShopStream's roles ({error.diag.message_primary}):"
            " give it CREATEROLE and CREATEDB, or have a DBA run the SQL of `shopstream services setup-sql`"
        ) from None
    except psycopg.OperationalError as error:
        raise ServiceError(f"cannot reach PostgreSQL at {database.redact(admin_url)}: {error}") from None
    names = [f"owner {roles.owner.name}", f"reader {roles.reader.name}" if roles.reader else "no reader"]
    names.append(f"Dagster {roles.dagster.name}" if roles.dagster else "Dagster as the owner")
    progress(f"roles by duty set up ({', '.join(names)}; Dagster's database {roles.dagster_database})")
    return roles


def _to_stderr(message: str) -> None:
    # Not stdout: `eval "$(shopstream services start)"` runs what `services start` prints there.
    print(message, file=sys.stderr)


def migrate_as_admin(
    settings: Settings, migrate: Callable[..., list[str]], progress: Progress = _to_stderr
) -> list[str]:
    """Run ``migrate`` (``streaming.migrations.migrate``, a floor above) as the admin and hand what it made
    to the owner role; with SHOPSTREAM_ADMIN_DATABASE_URL, set the roles up first. Without an admin
    (a server we do not run, no admin URL), the configured role migrates and owns what it makes."""
    url = admin_database_url(settings)
    if postgres_is_embedded(settings):
        applied = migrate(url)
        hand_over_pipeline_schemas(url)
        return applied
    roles = set_up_external_roles(settings, progress) if settings.admin_database_url else external_duty_roles(settings)
    # Without a reader of its own the dashboard uses the owner's URL; a reader made by hand gets the grants.
    names = {"owner_role": roles.owner.name, "reader_role": roles.reader.name if roles.reader else READER_ROLE}
    if settings.admin_database_url:
        applied = migrate(url, **names)
        hand_over_pipeline_schemas(url, roles.owner.name)
        return applied
    try:
        return migrate(url, **names)
    except psycopg.errors.InsufficientPrivilege as error:
        raise ServiceError(
            f"{roles.owner.name!r} may not migrate ({error.diag.message_primary}): set"
            " SHOPSTREAM_ADMIN_DATABASE_URL for the migrations (docs/security-external-postgres.md)"
        ) from None


def _running_embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    postgres = EmbeddedPostgres(settings)
    if postgres.pid() is None:
        raise ServiceError(
            "SHOPSTREAM_DATABASE_URL is not set and the embedded PostgreSQL is not running: "
            "run `shopstream services start` (or set SHOPSTREAM_DATABASE_URL)"
        )
    return postgres


def kafka_bootstrap(settings: Settings) -> str:
    """The configured brokers, or the running embedded broker (commands that only need Kafka)."""
    if not settings.kafka_embedded:
        return settings.kafka_bootstrap
    kafka = embedded_kafka(settings)
    if kafka.pid() is None:
        raise ServiceError(
            "SHOPSTREAM_KAFKA_BOOTSTRAP is not set and the embedded Kafka broker is not running: "
            "run `shopstream services start` (or set SHOPSTREAM_KAFKA_BOOTSTRAP)"
        )
    return kafka.bootstrap


def endpoints(settings: Settings) -> Endpoints:
    """The endpoints for a client command; embedded servers must already run."""
    database_url, dashboard_url = database_urls(settings)
    dagster_url = (
        EmbeddedPostgres(settings).dagster_url() if postgres_is_embedded(settings) else configured_dagster_url(settings)
    )
    return Endpoints(database_url, dashboard_url, kafka_bootstrap(settings), dagster_url)
