"""The login roles ShopStream gives its processes on the embedded PostgreSQL, each for one duty.

- ``shopstream`` (the initdb superuser, "admin"): creates the roles and databases and runs the
  migrations; no pipeline process gets its password.
- ``shopstream_owner``: what the stream and dbt use. Owns the ``bronze``, ``silver`` and ``gold``
  schemas and what is in them, and nothing else; no superuser, no CREATEROLE or CREATEDB, no
  ``pg_execute_server_program`` (so no ``COPY ... TO PROGRAM``).
- ``shopstream_reader``: the dashboard's. ``SELECT`` on Gold and on the Bronze columns the Live
  page shows (streaming.migrations grants them), no CONNECT on Dagster's database.
- ``shopstream_dagster``: Dagster's storage. Owns the ``dagster`` database and nothing else.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from shopstream import database
from shopstream.credentials import scram_verifier
from shopstream.database import DAGSTER_DATABASE_NAME, OWNER_ROLE, PIPELINE_SCHEMAS, READER_ROLE

DAGSTER_ROLE = "shopstream_dagster"
# Whatever a role may have been given before, these login roles have none of it.
UNPRIVILEGED = "login nosuperuser nocreatedb nocreaterole noreplication nobypassrls noinherit"


def ensure_login_role(conn: psycopg.Connection, role: str, password: str) -> None:
    """``role`` exists, may log in with ``password`` (sent as its SCRAM verifier) and has no privilege."""
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
    verb = "alter" if exists else "create"
    conn.execute(
        sql.SQL(verb + " role {} with " + UNPRIVILEGED + " password {}").format(
            sql.Identifier(role), sql.Literal(scram_verifier(password))
        )
    )


def ensure_reader_role(admin_url: str, password: str) -> None:
    """The dashboard's read-only login role; its password is set on every call."""
    with database.autocommit(admin_url) as conn:
        ensure_login_role(conn, READER_ROLE, password)
        # Belt and braces: even a grant given by mistake cannot let the dashboard write.
        conn.execute(
            sql.SQL("alter role {} set default_transaction_read_only = on").format(sql.Identifier(READER_ROLE))
        )


def ensure_duty_roles(admin_url: str, passwords: dict[str, str]) -> None:
    """Owner, reader and Dagster roles with their passwords; Dagster's database theirs alone.

    ``admin_url`` names the cluster's ``postgres`` or pipeline database as the superuser.
    """
    ensure_reader_role(admin_url, passwords["reader_password"])
    with database.autocommit(admin_url) as conn:
        ensure_login_role(conn, OWNER_ROLE, passwords["owner_password"])
        ensure_login_role(conn, DAGSTER_ROLE, passwords["dagster_password"])
        dagster = sql.Identifier(DAGSTER_DATABASE_NAME)
        conn.execute(sql.SQL("alter database {} owner to {}").format(dagster, sql.Identifier(DAGSTER_ROLE)))
        conn.execute(sql.SQL("revoke all on database {} from public").format(dagster))


def hand_over_pipeline_schemas(admin_url: str) -> None:
    """Make the owner role the owner of the pipeline schemas and of everything in them.

    The migrations run as the admin, so what they create is the admin's until handed over;
    handing over again is a no-op.
    """
    owner = sql.Identifier(OWNER_ROLE)
    with database.autocommit(admin_url) as conn:
        conn.execute(
            sql.SQL("grant connect, temporary on database {} to {}").format(
                sql.Identifier(database.url_parts(admin_url).database), owner
            )
        )
        for schema in PIPELINE_SCHEMAS:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("alter schema {} owner to {}").format(sql.Identifier(schema), owner))
        # Tables, views and sequences not owned by a table (an identity's follows its table).
        relations = conn.execute(
            """
            select c.relkind, n.nspname, c.relname
            from pg_class c
            join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = any(%s)
              and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
              and pg_get_userbyid(c.relowner) <> %s
              and not exists (
                  select 1 from pg_depend d
                  where d.objid = c.oid and d.classid = 'pg_class'::regclass and d.deptype in ('a', 'i')
              )
            """,
            (list(PIPELINE_SCHEMAS), OWNER_ROLE),
        ).fetchall()
        for kind, schema, name in relations:
            noun = {"v": "view", "m": "materialized view", "S": "sequence", "f": "foreign table"}.get(kind, "table")
            conn.execute(
                sql.SQL("alter " + noun + " {}.{} owner to {}").format(
                    sql.Identifier(schema), sql.Identifier(name), owner
                )
            )
        functions = conn.execute(
            """
            select p.oid::regprocedure::text
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname = any(%s) and pg_get_userbyid(p.proowner) <> %s
            """,
            (list(PIPELINE_SCHEMAS), OWNER_ROLE),
        ).fetchall()
        for (signature,) in functions:
            conn.execute(sql.SQL("alter routine " + signature + " owner to {}").format(owner))
        # The migrations' ledger stays the admin's; the owner may read which have run.
        conn.execute(sql.SQL("grant select on public.shopstream_migrations to {}").format(owner))
