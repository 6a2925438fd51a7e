"""The dashboard's one connection pool and the one function that runs a query.

The reference dashboard crashed when every refresh opened connections it never closed.
Here a process holds one bounded ``ConnectionPool`` per database URL (``st.cache_resource``),
every query borrows a connection with ``with pool.connection()`` (returned even when the
query raises) and sessions are read-only at the server. A database that is down or a Gold
table that dbt has not built yet become :class:`DataUnavailable` with a sentence for the
page; the next refresh simply tries again, and the pool reconnects by itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd
import psycopg
import streamlit as st
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from shopstream.database import reader_or_owner_url, redact
from shopstream.settings import SettingsError, load_settings

POOL_MAX_SIZE = 4  # a page runs its queries one after another; 4 covers a few open tabs
POOL_WAIT_SECONDS = 4.0  # how long a query waits for a connection before "database down"
CONNECT_TIMEOUT_SECONDS = 3
# Give up a background reconnect attempt after this long; the next query starts a new one,
# so a database that comes back is picked up within a refresh or two.
RECONNECT_TIMEOUT_SECONDS = 8.0
STATEMENT_TIMEOUT_MS = 15_000
APPLICATION_NAME = "shopstream-dashboard"

T = TypeVar("T")


class DataUnavailable(RuntimeError):
    """The data cannot be shown right now; ``str()`` is the sentence for the page."""

    kind = "unavailable"


class DatabaseDown(DataUnavailable):
    kind = "database_down"


class NotBuiltYet(DataUnavailable):
    kind = "not_built"


def dashboard_database_url(env: Mapping[str, str] | None = None) -> str:
    """SHOPSTREAM_DASHBOARD_DATABASE_URL, else the reader role on SHOPSTREAM_DATABASE_URL (or its
    owner, without SHOPSTREAM_READER_PASSWORD), else the embedded reader."""
    settings = load_settings(env)
    if settings.dashboard_database_url:
        return settings.dashboard_database_url
    if settings.database_url:
        return reader_or_owner_url(settings.database_url, settings.reader_password)
    from shopstream.embedded import ServiceError
    from shopstream.postgres_server import EmbeddedPostgres

    # Not checked for running: a stopped server shows as "database unavailable" and the
    # page recovers when `shopstream services start` brings it back.
    postgres = EmbeddedPostgres(settings)
    try:
        if postgres.port is None:  # checked first: reader_url() would create credentials
            raise ServiceError("it has never been started")
        return postgres.reader_url()
    except ServiceError as error:
        raise SettingsError(
            f"SHOPSTREAM_DASHBOARD_DATABASE_URL is not set and the embedded PostgreSQL is not set up ({error}): "
            "run `shopstream services start` (or set SHOPSTREAM_DASHBOARD_DATABASE_URL)"
        ) from None


def _close_pool(pool: ConnectionPool) -> None:
    pool.close(timeout=2)


@st.cache_resource(show_spinner=False, on_release=_close_pool)
def get_pool(url: str) -> ConnectionPool:
    """The process's pool for ``url``, opened without waiting (the database may be down)."""
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=POOL_MAX_SIZE,
        timeout=POOL_WAIT_SECONDS,
        reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
        max_idle=300,
        # A connection broken by a server restart is noticed here, not by the page's query.
        check=ConnectionPool.check_connection,
        kwargs={
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": APPLICATION_NAME,
            # Read-only even if the URL is an owner's: the dashboard never writes.
            "options": f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}",
        },
        name="shopstream-dashboard",
        open=False,
    )
    pool.open(wait=False)
    return pool


def current_url() -> str:
    try:
        return dashboard_database_url(os.environ)
    except SettingsError as error:
        raise DatabaseDown(str(error)) from None


def _why_unreachable(url: str) -> str:
    """The server's own reason, from one short direct attempt (the pool only says 'timeout')."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS):
            return "it answers now; retrying"
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def read(reader: Callable[[psycopg.Connection], T]) -> T:
    """Run ``reader`` on a pooled connection; a database problem becomes :class:`DataUnavailable`."""
    url = current_url()
    pool = get_pool(url)
    try:
        with pool.connection() as conn:
            return reader(conn)
    except PoolTimeout:
        raise DatabaseDown(f"The database at {redact(url)} is not reachable: {_why_unreachable(url)}.") from None
    except errors.UndefinedTable as error:
        raise NotBuiltYet(
            f"A table this page reads does not exist yet ({_first_line(error)}): the pipeline has not built it."
        ) from None
    except errors.QueryCanceled:
        raise DataUnavailable(
            f"The query took longer than {STATEMENT_TIMEOUT_MS // 1000} s and was cancelled; "
            "try a shorter period or fewer filters."
        ) from None
    except (errors.InsufficientPrivilege, errors.UndefinedColumn) as error:
        raise DataUnavailable(f"The dashboard cannot read its data: {_first_line(error)}.") from None
    except psycopg.OperationalError as error:
        raise DatabaseDown(f"The database at {redact(url)} stopped answering: {_first_line(error)}.") from None


def fetch(query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run one parameterized query on a pooled connection; the rows as a DataFrame."""

    def rows(conn: psycopg.Connection) -> pd.DataFrame:
        with conn.cursor() as cursor:
            cursor.execute(query, params)
            columns = [column.name for column in cursor.description or ()]
            return pd.DataFrame(cursor.fetchall(), columns=columns)

    return read(rows)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
