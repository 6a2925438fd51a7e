"""Every ShopStream setting, read from the environment with a typed default.

This is the one place that knows a variable's name, its type and its default; every
other module (the CLI, the producer, the Spark job, Dagster resources, dbt's
``profiles.yml`` and the dashboard) reads the values from here or from the same
variables. A wrong value raises :class:`SettingsError` naming the variable and what
was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shopstream.setting_values import (  # noqa: F401 -- re-exported: the settings' public names
    SettingsError,
    flag_value,
    int_value,
    parse_database_url,
    parse_kafka_bootstrap,
    parse_topic,
    port_value,
    redact_url,
    size_value,
    text_value,
)

DEFAULT_TOPIC = "ecommerce-clickstream"


@dataclass(frozen=True)
class KafkaSecurity:
    """The SHOPSTREAM_KAFKA_* client security settings; all None: plaintext, no authentication.

    ``shopstream.kafka_clients`` turns them into the one client configuration every Kafka
    client uses (librdkafka's, and Spark's ``kafka.``-prefixed options).
    """

    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    # Never in a repr, so never in a traceback's locals or a log line that prints settings.
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None

    @property
    def configured(self) -> bool:
        return self.security_protocol is not None


@dataclass(frozen=True)
class Settings:
    """Resolved settings. ``None`` for a URL means: start the embedded server."""

    home: Path
    database_url: str | None
    dashboard_database_url: str | None
    kafka_bootstrap: str | None
    topic: str
    topic_partitions: int
    spark_master: str
    spark_driver_memory: str
    dagster_port: int
    dashboard_port: int
    sensor_interval_seconds: int
    log_level: str
    bind_address: str
    reader_password: str | None
    fast_runs: bool
    dagster_retention_days: int
    log_max_bytes: int
    log_keep: int
    ledger_keep_days: int
    admin_database_url: str | None
    dagster_database_url: str | None
    kafka_security: KafkaSecurity = KafkaSecurity()

    @property
    def database_embedded(self) -> bool:
        return self.database_url is None

    @property
    def kafka_embedded(self) -> bool:
        return self.kafka_bootstrap is None

    # Everything ShopStream writes lives under home, so one folder is the whole state.
    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def jars_dir(self) -> Path:
        return self.home / "jars"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


# name -> help text. The README's configuration table (checked by test_readme.py) and the compose test read this.
VARIABLES: dict[str, str] = {
    "SHOPSTREAM_HOME": "state folder: data, jars, checkpoints, logs, Dagster home (default .shopstream/)",
    "SHOPSTREAM_DATABASE_URL": "postgresql://user:password@host:port/db; unset = embedded PostgreSQL",
    "SHOPSTREAM_DASHBOARD_DATABASE_URL": "read-only URL for the dashboard; unset = the embedded reader role",
    "SHOPSTREAM_KAFKA_BOOTSTRAP": "host:port[,host:port...]; unset = embedded Apache Kafka",
    "SHOPSTREAM_TOPIC": f"clickstream topic (default {DEFAULT_TOPIC})",
    "SHOPSTREAM_TOPIC_PARTITIONS": "partitions when the topic is created (default 6)",
    "SHOPSTREAM_SPARK_MASTER": "Spark master URL (default local[*]; spark://host:7077 for a cluster)",
    "SHOPSTREAM_SPARK_DRIVER_MEMORY": "heap of the Spark driver JVM (default 2g; in local mode the tasks run in it)",
    "SHOPSTREAM_DAGSTER_PORT": "Dagster webserver port on 127.0.0.1 (default 3000)",
    "SHOPSTREAM_DASHBOARD_PORT": "Streamlit dashboard port on 127.0.0.1 (default 8501)",
    "SHOPSTREAM_SENSOR_INTERVAL": "seconds between Bronze sensor ticks (default 5)",
    "SHOPSTREAM_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (default INFO)",
    "SHOPSTREAM_BIND_ADDRESS": "address the Dagster UI and dashboard bind (default 127.0.0.1; 0.0.0.0 in containers)",
    "SHOPSTREAM_READER_PASSWORD": "password for the dashboard's read-only role on an external PostgreSQL (optional)",
    "SHOPSTREAM_FAST_RUNS": "1: warm run worker and dbt in process when the installed Dagster/dbt are the tested ones; "
    "0: Dagster's stock run launcher and dbt CLI (default 1)",
    "SHOPSTREAM_DAGSTER_RETENTION_DAYS": "days Dagster keeps runs, their event logs and compute logs (default 7)",
    "SHOPSTREAM_LOG_MAX_SIZE": "size at which a process's log under SHOPSTREAM_HOME/logs rotates, such as 50m or 512k "
    "(default 50m)",
    "SHOPSTREAM_LOG_KEEP": "rotated files kept per process log besides the current one (default 3)",
    "SHOPSTREAM_LEDGER_KEEP_DAYS": "days the Bronze ledger keeps one row per micro-batch before rolling them up "
    "per topic, partition and hour (default 7)",
    "SHOPSTREAM_ADMIN_DATABASE_URL": "on an external PostgreSQL: a URL that may create roles, used once by "
    "`services start` and `migrate` to set up the owner, reader and Dagster roles (optional)",
    "SHOPSTREAM_DAGSTER_DATABASE_URL": "on an external PostgreSQL: Dagster's own role on its database "
    "(postgresql://user:password@host:port/dagster); unset = the owner's (optional)",
    "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL for every Kafka client "
    "(default PLAINTEXT; needs SHOPSTREAM_KAFKA_BOOTSTRAP)",
    "SHOPSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN with a SASL_* protocol "
    "(default SCRAM-SHA-512)",
    "SHOPSTREAM_KAFKA_SASL_USERNAME": "the Kafka user with a SASL_* protocol",
    "SHOPSTREAM_KAFKA_SASL_PASSWORD": "that user's password (never printed)",
    "SHOPSTREAM_KAFKA_SSL_CA_LOCATION": "PEM file of the CA that signed the brokers' certificates, with SSL or "
    "SASL_SSL (default: the system's CAs)",
}

_SPARK_MASTER = re.compile(r"^(local(\[(\*|\d+)(,\d+)?\])?|(spark|k8s|yarn|mesos)://\S+|yarn)$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def parse_kafka_security(env: Mapping[str, str], *, bootstrap: str | None) -> KafkaSecurity:
    """The SHOPSTREAM_KAFKA_* security settings, checked together; errors never show the password."""
    names = {
        "protocol": "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL",
        "mechanism": "SHOPSTREAM_KAFKA_SASL_MECHANISM",
        "username": "SHOPSTREAM_KAFKA_SASL_USERNAME",
        "password": "SHOPSTREAM_KAFKA_SASL_PASSWORD",
        "ca": "SHOPSTREAM_KAFKA_SSL_CA_LOCATION",
    }
    raw = {key: text_value(env, name) for key, name in names.items()}
    # A password is taken as given: spaces may be part of it.
    raw["password"] = env.get(names["password"]) or None
    given = [names[key] for key, value in raw.items() if value is not None]
    if not given:
        return KafkaSecurity()
    protocol = (raw["protocol"] or "").upper()
    if raw["protocol"] is None:
        raise SettingsError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} set but SHOPSTREAM_KAFKA_SECURITY_PROTOCOL "
            f"is not: set it to one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
        )
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise SettingsError(
            f"SHOPSTREAM_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}: "
            f"got {raw['protocol']!r}"
        )
    if bootstrap is None:
        raise SettingsError(
            "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL is set but SHOPSTREAM_KAFKA_BOOTSTRAP is not: the embedded broker "
            "takes plaintext clients only; set SHOPSTREAM_KAFKA_BOOTSTRAP to the cluster the settings are for"
        )
    sasl = protocol.startswith("SASL_")
    if sasl:
        mechanism = (raw["mechanism"] or "SCRAM-SHA-512").upper()
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise SettingsError(
                f"SHOPSTREAM_KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}: "
                f"got {raw['mechanism']!r}"
            )
        missing = [names[key] for key in ("username", "password") if raw[key] is None]
        if missing:
            raise SettingsError(f"SHOPSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
    else:
        mechanism = None
        extra = [names[key] for key in ("mechanism", "username", "password") if raw[key] is not None]
        if extra:
            raise SettingsError(
                f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} set, but SHOPSTREAM_KAFKA_SECURITY_PROTOCOL="
                f"{protocol} uses no SASL: use SASL_SSL (or SASL_PLAINTEXT), or unset {' and '.join(extra)}"
            )
    ca = raw["ca"]
    if ca is not None:
        if not protocol.endswith("SSL"):
            raise SettingsError(
                f"SHOPSTREAM_KAFKA_SSL_CA_LOCATION is set, but SHOPSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} uses "
                "no TLS: use SSL or SASL_SSL, or unset SHOPSTREAM_KAFKA_SSL_CA_LOCATION"
            )
        path = Path(ca).expanduser()
        if not path.is_file():
            raise SettingsError(f"SHOPSTREAM_KAFKA_SSL_CA_LOCATION must be a PEM file: {ca!r} is not a file")
        ca = str(path.resolve())
    return KafkaSecurity(
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=raw["username"] if sasl else None,
        sasl_password=raw["password"] if sasl else None,
        ssl_ca_location=ca,
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env

    home = Path(text_value(env, "SHOPSTREAM_HOME") or ".shopstream").expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise SettingsError(f"SHOPSTREAM_HOME must be a folder: {str(home)!r} is a file")

    database_url = text_value(env, "SHOPSTREAM_DATABASE_URL")
    if database_url is not None:
        database_url = parse_database_url("SHOPSTREAM_DATABASE_URL", database_url)

    admin_database_url = text_value(env, "SHOPSTREAM_ADMIN_DATABASE_URL")
    if admin_database_url is not None:
        admin_database_url = parse_database_url("SHOPSTREAM_ADMIN_DATABASE_URL", admin_database_url)

    dagster_database_url = text_value(env, "SHOPSTREAM_DAGSTER_DATABASE_URL")
    if dagster_database_url is not None:
        dagster_database_url = parse_database_url("SHOPSTREAM_DAGSTER_DATABASE_URL", dagster_database_url)

    dashboard_database_url = text_value(env, "SHOPSTREAM_DASHBOARD_DATABASE_URL")
    if dashboard_database_url is not None:
        dashboard_database_url = parse_database_url("SHOPSTREAM_DASHBOARD_DATABASE_URL", dashboard_database_url)

    kafka_bootstrap = text_value(env, "SHOPSTREAM_KAFKA_BOOTSTRAP")
    if kafka_bootstrap is not None:
        kafka_bootstrap = parse_kafka_bootstrap("SHOPSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)

    topic = parse_topic("SHOPSTREAM_TOPIC", text_value(env, "SHOPSTREAM_TOPIC") or DEFAULT_TOPIC)

    spark_master = text_value(env, "SHOPSTREAM_SPARK_MASTER") or "local[*]"
    if not _SPARK_MASTER.match(spark_master):
        raise SettingsError(
            "SHOPSTREAM_SPARK_MASTER must be local, local[N], local[*] or a cluster URL "
            f"(spark://host:7077, k8s://..., yarn): got {spark_master!r}"
        )

    spark_driver_memory = (text_value(env, "SHOPSTREAM_SPARK_DRIVER_MEMORY") or "2g").lower()
    if not re.fullmatch(r"[1-9]\d*[kmgt]", spark_driver_memory):
        raise SettingsError(
            f"SHOPSTREAM_SPARK_DRIVER_MEMORY must be a size such as 2g or 1536m: got {spark_driver_memory!r}"
        )

    log_level = (text_value(env, "SHOPSTREAM_LOG_LEVEL") or "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise SettingsError(f"SHOPSTREAM_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}: got {log_level!r}")

    bind_address = text_value(env, "SHOPSTREAM_BIND_ADDRESS") or "127.0.0.1"
    if not re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+|localhost", bind_address):
        raise SettingsError(f"SHOPSTREAM_BIND_ADDRESS must be an IP address such as 127.0.0.1: got {bind_address!r}")

    return Settings(
        home=home,
        database_url=database_url,
        dashboard_database_url=dashboard_database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic=topic,
        topic_partitions=int_value(env, "SHOPSTREAM_TOPIC_PARTITIONS", 6, low=1, high=1000),
        spark_master=spark_master,
        spark_driver_memory=spark_driver_memory,
        dagster_port=port_value(env, "SHOPSTREAM_DAGSTER_PORT", 3000),
        dashboard_port=port_value(env, "SHOPSTREAM_DASHBOARD_PORT", 8501),
        sensor_interval_seconds=int_value(env, "SHOPSTREAM_SENSOR_INTERVAL", 5, low=1, high=3600),
        log_level=log_level,
        bind_address=bind_address,
        reader_password=text_value(env, "SHOPSTREAM_READER_PASSWORD"),
        fast_runs=flag_value(env, "SHOPSTREAM_FAST_RUNS", True),
        dagster_retention_days=int_value(env, "SHOPSTREAM_DAGSTER_RETENTION_DAYS", 7, low=1, high=3650),
        log_max_bytes=size_value(env, "SHOPSTREAM_LOG_MAX_SIZE", 50 * 1024**2, low=64 * 1024),
        log_keep=int_value(env, "SHOPSTREAM_LOG_KEEP", 3, low=1, high=100),
        ledger_keep_days=int_value(env, "SHOPSTREAM_LEDGER_KEEP_DAYS", 7, low=1, high=3650),
        admin_database_url=admin_database_url,
        dagster_database_url=dagster_database_url,
        kafka_security=parse_kafka_security(env, bootstrap=kafka_bootstrap),
    )


@contextmanager
def environment_overridden(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in this process's environment for the block, the previous ones back after it.

    For code run in process that reads its settings from the environment (dbt's profile,
    dagster.yaml, the dashboard's queries).
    """
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
