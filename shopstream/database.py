"""PostgreSQL on any server: URLs, connections and databases (the servers we run are in ``postgres_server``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from shopstream.settings import redact_url

READER_ROLE = "shopstream_reader"
OWNER_ROLE = "shopstream_owner"
# The schemas the pipeline's owner role owns (Bronze from streaming.migrations, Silver and Gold from dbt).
PIPELINE_SCHEMAS = ("bronze", "silver", "gold")
DAGSTER_DATABASE_NAME = "dagster"

# Every connection notices a server that went away within about a minute instead of the
# kernel's two hours: TCP keepalives after 15 s of silence, then 4 probes 5 s apart, and
# data left unacknowledged for 30 s gives up.
CLIENT_KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 4,
    "tcp_user_timeout": 30_000,
}

# A Bronze writer holds the one Bronze lock: its session must end when its host, its process
# or its statement is stuck, or every other writer waits behind it. The server probes the
# writer the same way the writer probes the server, checks for a vanished client every 5 s
# while a statement runs, ends a transaction left idle (a frozen writer) and a statement or
# a lock wait that runs for far longer than a batch ever does.
WRITER_SESSION_SETTINGS: dict[str, str] = {
    "tcp_keepalives_idle": "15",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "4",
    "tcp_user_timeout": "30000",
    "client_connection_check_interval": "5000",
    "idle_in_transaction_session_timeout": "300000",
    "statement_timeout": "900000",
    "lock_timeout": "600000",
}


# The TLS parameters a URL's query string may carry (libpq's names, which dbt's profile and
# dagster-postgres's ``params`` take as they are): a managed server's ?sslmode=verify-full&sslrootcert=...
SSL_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


@dataclass(frozen=True)
class ConnectionParts:
    """A PostgreSQL URL split into the discrete values dbt's profiles.yml reads."""

    host: str
    port: int
    user: str
    password: str
    database: str
    # The URL's TLS parameters (SSL_PARAMETERS) that are set: psycopg reads them from the URL
    # itself; the clients given discrete values (dbt, dagster-postgres) need them passed on.
    ssl: dict[str, str] = field(default_factory=dict)


def url_parts(url: str) -> ConnectionParts:
    parts = urlsplit(url)
    return ConnectionParts(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/"),
        ssl=ssl_parameters(url),
    )


def ssl_parameters(url: str) -> dict[str, str]:
    """The TLS parameters in ``url``'s query string ({"sslmode": "verify-full", ...}); empty when none."""
    query = dict(parse_qsl(urlsplit(url).query))
    return {name: query[name] for name in SSL_PARAMETERS if query.get(name)}


def ssl_environment(url: str) -> dict[str, str]:
    """SHOPSTREAM_DB_SSLMODE, _SSLROOTCERT, _SSLCERT and _SSLKEY (dbt's profile reads them) from
    ``url``; each is set, empty when the URL has none, so a value left from another URL is replaced."""
    found = ssl_parameters(url)
    return {f"SHOPSTREAM_DB_{name.upper()}": found.get(name, "") for name in SSL_PARAMETERS}


def make_url(host: str, port: int, user: str, password: str, database: str) -> str:
    return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{database}"


def with_database(url: str, database: str) -> str:
    """The same server and role, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def as_reader(url: str, password: str) -> str:
    """The same server, database and options (sslmode...), as the dashboard's read-only role."""
    parts = urlsplit(url)
    server = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(READER_ROLE, safe='')}:{quote(password, safe='')}@{server}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def reader_or_owner_url(owner_url: str, reader_password: str | None) -> str:
    """The dashboard's URL on a server we do not run, when SHOPSTREAM_DASHBOARD_DATABASE_URL is
    not set: the read-only role on the owner's database if SHOPSTREAM_READER_PASSWORD is set,
    else the owner's own URL (the dashboard's sessions are read-only, but the role could write)."""
    return as_reader(owner_url, reader_password) if reader_password else owner_url


def redact(url: str) -> str:
    """A URL safe to print: the password replaced by ***."""
    return redact_url(url)


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(url, **{"connect_timeout": 10, **CLIENT_KEEPALIVES, **kwargs})


def connect_writer(url: str, application_name: str, **kwargs: object) -> psycopg.Connection:
    """A connection for a Bronze writer: keepalives both ways and bounded waits (WRITER_SESSION_SETTINGS)."""
    given = conninfo_to_dict(url).get("options")  # a URL's own options (a search_path...) are kept
    options = " ".join(
        [*([str(given)] if given else []), *(f"-c {name}={value}" for name, value in WRITER_SESSION_SETTINGS.items())]
    )
    return connect(url, application_name=application_name, options=options, **kwargs)


@contextmanager
def autocommit(url: str) -> Iterator[psycopg.Connection]:
    with connect(url, autocommit=True) as conn:
        yield conn


def ensure_database(admin_url: str, database: str) -> None:
    """Create ``database`` on the server of ``admin_url`` unless it exists."""
    with autocommit(admin_url) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))


def drop_database(admin_url: str, database: str) -> None:
    with autocommit(admin_url) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))
