"""Bronze's schema, beside its only writer (``streaming/bronze_batch.py``, driven by ``bronze_sink.py``
and ``bronze_load.py``) and its ledger (``streaming/ledger.py``): the numbered SQL scripts in
this folder, applied once each, in order, by :func:`migrate`."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

from shopstream.database import OWNER_ROLE, READER_ROLE, connect


def migration_scripts() -> list[tuple[str, str]]:
    """(name, SQL) of every migration, in order."""
    folder = resources.files(__name__)
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text()) for name in names]


def migrate(url: str, *, owner_role: str = OWNER_ROLE, reader_role: str = READER_ROLE) -> list[str]:
    """Create the schemas and Bronze tables; idempotent. Returns the scripts newly applied.

    Applied scripts are recorded in ``public.shopstream_migrations``; an advisory lock
    keeps two starting processes from migrating at once. ``owner_role`` and ``reader_role`` are the
    roles by duty on this server (named by their URLs on a server ShopStream does not run).
    """
    applied_now: list[str] = []
    with connect(url) as conn:
        conn.execute("select pg_advisory_xact_lock(hashtext('shopstream_migrations'))")
        # Only when missing: on a server ShopStream does not run the owner role re-runs this once its
        # admin has set it up, and may not create anything in public, even with "if not exists".
        if conn.execute("select to_regclass('public.shopstream_migrations')").fetchone() == (None,):
            conn.execute(
                "create table public.shopstream_migrations ("
                " name text primary key, applied_at timestamptz not null default now())"
            )
        done = {row[0] for row in conn.execute("select name from public.shopstream_migrations")}
        for name, script in migration_scripts():
            if name in done:
                continue
            conn.execute(script)
            conn.execute("insert into public.shopstream_migrations (name) values (%s)", (name,))
            applied_now.append(name)
        _grant_reader(conn, owner_role, reader_role)
    return applied_now


# What the dashboard may read of Bronze: every column of these tables (the Live page, the ledger's
# totals and offsets), and of the rejects their reason, position and time, never the raw payloads.
READER_BRONZE_TABLES = (
    "clickstream_events",
    "ingest_batches",
    "ingest_batches_hourly",
    "ingest_offsets",
    "ingest_totals",
    "reject_totals",
)
REJECTS_TABLE = "clickstream_rejects"
REJECT_PAYLOAD_COLUMNS = ("raw_value", "raw_text")


def _grant_reader(conn: psycopg.Connection, owner_role: str, reader_role: str) -> None:
    """Let the dashboard's read-only role read Gold (now and tables made later) and what the Live
    page shows of Bronze; nothing of Silver, nothing of the rejects' payloads."""
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (reader_role,)).fetchone()
    if not exists:
        return
    role = sql.Identifier(reader_role)
    # dbt makes Gold's tables as the pipeline's owner role where there is one, else as this session's role.
    creators = [sql.SQL("")]
    if conn.execute("select 1 from pg_roles where rolname = %s", (owner_role,)).fetchone():
        creators.append(sql.SQL("for role {} ").format(sql.Identifier(owner_role)))
    gold = sql.Identifier("gold")
    conn.execute(sql.SQL("grant usage on schema {} to {}").format(gold, role))
    conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(gold, role))
    for creator in creators:
        conn.execute(
            sql.SQL("alter default privileges {}in schema {} grant select on tables to {}").format(creator, gold, role)
        )
    # Grants an earlier version gave: all of Silver, all of Bronze and Bronze's future tables.
    for schema in ("silver", "bronze"):
        name = sql.Identifier(schema)
        conn.execute(sql.SQL("revoke all on all tables in schema {} from {}").format(name, role))
        for creator in creators:
            conn.execute(
                sql.SQL("alter default privileges {}in schema {} revoke all on tables from {}").format(
                    creator, name, role
                )
            )
    conn.execute(sql.SQL("revoke usage on schema {} from {}").format(sql.Identifier("silver"), role))
    conn.execute(sql.SQL("grant usage on schema {} to {}").format(sql.Identifier("bronze"), role))
    for table in READER_BRONZE_TABLES:
        conn.execute(sql.SQL("grant select on {} to {}").format(sql.Identifier("bronze", table), role))
    columns = conn.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'bronze' and table_name = %s and not (column_name = any(%s))"
        " order by ordinal_position",
        (REJECTS_TABLE, list(REJECT_PAYLOAD_COLUMNS)),
    ).fetchall()
    conn.execute(
        sql.SQL("grant select ({}) on {} to {}").format(
            sql.SQL(", ").join(sql.Identifier(column) for (column,) in columns),
            sql.Identifier("bronze", REJECTS_TABLE),
            role,
        )
    )
