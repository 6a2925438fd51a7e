"""Bronze's schema, beside its only writer (``streaming/bronze_batch.py``, driven by ``bronze_sink.py``
and ``bronze_load.py``) and its ledger (``streaming/ledger.py``): the numbered SQL scripts in
this folder, applied once each, in order, by :func:`migrate`."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

from shopstream.database import READER_ROLE, connect


def migration_scripts() -> list[tuple[str, str]]:
    """(name, SQL) of every migration, in order."""
    folder = resources.files(__name__)
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text()) for name in names]


def migrate(url: str) -> list[str]:
    """Create the schemas and Bronze tables; idempotent. Returns the scripts newly applied.

    Applied scripts are recorded in ``public.shopstream_migrations``; an advisory lock
    keeps two starting processes from migrating at once.
    """
    applied_now: list[str] = []
    with connect(url) as conn:
        conn.execute("select pg_advisory_xact_lock(hashtext('shopstream_migrations'))")
        conn.execute(
            "create table if not exists public.shopstream_migrations ("
            " name text primary key, applied_at timestamptz not null default now())"
        )
        done = {row[0] for row in conn.execute("select name from public.shopstream_migrations")}
        for name, script in migration_scripts():
            if name in done:
                continue
            conn.execute(script)
            conn.execute("insert into public.shopstream_migrations (name) values (%s)", (name,))
            applied_now.append(name)
        _grant_reader(conn)
    return applied_now


def _grant_reader(conn: psycopg.Connection) -> None:
    """Let the dashboard's read-only role read Bronze and Gold, now and for tables made later."""
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (READER_ROLE,)).fetchone()
    if not exists:
        return
    role = sql.Identifier(READER_ROLE)
    for schema in ("bronze", "silver", "gold"):
        name = sql.Identifier(schema)
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(name, role))
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(name, role))
        conn.execute(sql.SQL("alter default privileges in schema {} grant select on tables to {}").format(name, role))
