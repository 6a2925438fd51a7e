"""The login roles ShopStream gives its processes, each for one duty, on any PostgreSQL.

- the admin (the embedded server's initdb superuser ``shopstream``, or the one a user names in
  ``SHOPSTREAM_ADMIN_DATABASE_URL``): creates the roles and databases and runs the migrations; no
  pipeline process gets its password.
- the owner (``shopstream_owner`` on the embedded server; on another, the user of
  ``SHOPSTREAM_DATABASE_URL``): what the stream and dbt use. Owns the ``bronze``, ``silver`` and
  ``gold`` schemas and what is in them, and nothing else; no superuser, no CREATEROLE or CREATEDB,
  no ``pg_execute_server_program`` (so no ``COPY ... TO PROGRAM``).
- the reader (``shopstream_reader``, or the dashboard URL's user): ``SELECT`` on Gold and on the
  Bronze columns the Live page shows (streaming.migrations grants them), no CONNECT on Dagster's database.
- Dagster's (``shopstream_dagster``, or the Dagster URL's user): owns Dagster's database and nothing else.

:func:`duty_role_steps` is the one list of what sets them up: :func:`set_up_duty_roles` runs it
with an admin connection, :func:`setup_sql` prints it as a psql script for a DBA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from shopstream import database
from shopstream.credentials import scram_verifier
from shopstream.database import DAGSTER_DATABASE_NAME, OWNER_ROLE, PIPELINE_SCHEMAS, READER_ROLE

DAGSTER_ROLE = "shopstream_dagster"
# Whatever a role may have been given before, these login roles have none of it.
UNPRIVILEGED = "login nosuperuser nocreatedb nocreaterole noreplication nobypassrls noinherit"


@dataclass(frozen=True)
class LoginRole:
    name: str
    password: str
    # The psql variable that carries the password in setup_sql's script (never the password).
    password_variable: str


@dataclass(frozen=True)
class DutyRoles:
    """Who is who on one server: the pipeline's database and owner, the dashboard's reader, Dagster's role.

    Without a reader the dashboard uses the owner's URL; without a Dagster role Dagster's storage
    does, and Dagster's database is the owner's.
    """

    database: str
    owner: LoginRole
    reader: LoginRole | None = None
    dagster: LoginRole | None = None
    dagster_database: str = DAGSTER_DATABASE_NAME

    @property
    def login_roles(self) -> list[LoginRole]:
        return [role for role in (self.owner, self.reader, self.dagster) if role is not None]


def owner_role(name: str, password: str) -> LoginRole:
    return LoginRole(name, password, "owner_password")


def reader_role(name: str, password: str) -> LoginRole:
    return LoginRole(name, password, "reader_password")


def dagster_role(name: str, password: str) -> LoginRole:
    return LoginRole(name, password, "dagster_password")


def embedded_duty_roles(database_name: str, passwords: dict[str, str]) -> DutyRoles:
    """The embedded server's roles, with the passwords of its credentials.json."""
    return DutyRoles(
        database_name,
        owner_role(OWNER_ROLE, passwords["owner_password"]),
        reader_role(READER_ROLE, passwords["reader_password"]),
        dagster_role(DAGSTER_ROLE, passwords["dagster_password"]),
    )


@dataclass(frozen=True)
class CreateUnlessExists:
    """A role or database made when missing: ``create`` runs unless ``exists`` (one parameter, the name) finds it."""

    exists: str
    name: str
    create: sql.Composable


Step = sql.Composable | CreateUnlessExists
PasswordSql = Callable[[LoginRole], sql.Composable]

ROLE_EXISTS = "select 1 from pg_roles where rolname = %s"
DATABASE_EXISTS = "select 1 from pg_database where datname = %s"


def _login_role_steps(role: LoginRole, password: PasswordSql) -> list[Step]:
    name = sql.Identifier(role.name)
    return [
        CreateUnlessExists(ROLE_EXISTS, role.name, sql.SQL("create role {}").format(name)),
        sql.SQL("alter role {} with " + UNPRIVILEGED + " password {}").format(name, password(role)),
    ]


def _read_only_by_default(role: LoginRole) -> sql.Composable:
    # Belt and braces: even a grant given by mistake cannot let the dashboard write.
    return sql.SQL("alter role {} set default_transaction_read_only = on").format(sql.Identifier(role.name))


def duty_role_steps(roles: DutyRoles, password: PasswordSql) -> list[Step]:
    """What the admin does, in order, whoever runs it; ``password`` gives each role's password as SQL."""
    steps: list[Step] = []
    for role in roles.login_roles:
        steps += _login_role_steps(role, password)
    if roles.reader is not None:
        steps.append(_read_only_by_default(roles.reader))
    dagster_owner = sql.Identifier((roles.dagster or roles.owner).name)
    dagster = sql.Identifier(roles.dagster_database)
    pipeline = sql.Identifier(roles.database)
    create_dagster = sql.SQL("create database {} owner {}").format(dagster, dagster_owner)
    steps += [
        CreateUnlessExists(DATABASE_EXISTS, roles.dagster_database, create_dagster),
        sql.SQL("alter database {} owner to {}").format(dagster, dagster_owner),
        # Only its owner (and the admin) may connect: not the reader, not the owner when Dagster has its own role.
        sql.SQL("revoke all on database {} from public").format(dagster),
        # The pipeline's database stays the admin's: owning it, the owner could create schemas beyond its own.
        CreateUnlessExists(DATABASE_EXISTS, roles.database, sql.SQL("create database {}").format(pipeline)),
        sql.SQL("grant connect, temporary on database {} to {}").format(pipeline, sql.Identifier(roles.owner.name)),
    ]
    return steps


def _verifier(role: LoginRole) -> sql.Composable:
    return sql.Literal(scram_verifier(role.password))


def _run(conn: psycopg.Connection, step: Step) -> None:
    if isinstance(step, CreateUnlessExists):
        if conn.execute(step.exists, (step.name,)).fetchone() is None:
            conn.execute(step.create)
    else:
        conn.execute(step)


def set_up_duty_roles(admin_url: str, roles: DutyRoles) -> None:
    """Run :func:`duty_role_steps` as the admin; each password goes to the server as its SCRAM verifier.

    ``admin_url`` may name any database of the cluster. Running it again sets the passwords again.
    """
    with database.autocommit(admin_url) as conn:
        for step in duty_role_steps(roles, _verifier):
            _run(conn, step)


def setup_sql(roles: DutyRoles) -> str:
    """:func:`duty_role_steps` as a psql script for a DBA: each password is a psql variable (``-v``)."""
    variables = [role.password_variable for role in roles.login_roles]
    lines = [
        "-- ShopStream's roles by duty (docs/security-external-postgres.md). Run it as a role that may",
        "-- create roles and databases, each password given as a psql variable (not on the command line",
        "-- of a shared host: psql reads `\\set` lines from a file of mode 600 as well):",
        f"--   psql {' '.join(f'-v {name}=...' for name in variables)} -f shopstream-roles.sql ADMIN_URL",
        "\\set ON_ERROR_STOP on",
    ]
    for name in variables:
        missing = f"do $$ begin raise exception 'set the psql variable {name} (psql -v {name}=...)'; end $$;"
        lines += [f"\\if :{{?{name}}}", "\\else", f"  {missing}", "\\endif"]
    for step in duty_role_steps(roles, lambda role: sql.SQL(f":'{role.password_variable}'")):
        if isinstance(step, CreateUnlessExists):
            exists = step.exists.replace("%s", sql.Literal(step.name).as_string(None))
            lines += [f"select {sql.Literal(step.create.as_string(None)).as_string(None)} where not exists ({exists})"]
            lines += ["\\gexec"]
        else:
            lines.append(step.as_string(None) + ";")
    return "\n".join(lines) + "\n"


def ensure_reader_role(admin_url: str, password: str) -> None:
    """The dashboard's read-only login role and nothing else; its password is set on every call."""
    reader = reader_role(READER_ROLE, password)
    with database.autocommit(admin_url) as conn:
        for step in [*_login_role_steps(reader, _verifier), _read_only_by_default(reader)]:
            _run(conn, step)


def hand_over_pipeline_schemas(admin_url: str, owner_name: str = OWNER_ROLE) -> None:
    """Make ``owner_name`` the owner of the pipeline schemas and of everything in them.

    The migrations run as the admin, so what they create is the admin's until handed over;
    handing over again is a no-op.
    """
    owner = sql.Identifier(owner_name)
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
            (list(PIPELINE_SCHEMAS), owner_name),
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
            (list(PIPELINE_SCHEMAS), owner_name),
        ).fetchall()
        for (signature,) in functions:
            conn.execute(sql.SQL("alter routine " + signature + " owner to {}").format(owner))
        # The migrations' ledger stays the admin's; the owner may read which have run.
        conn.execute(sql.SQL("grant select on public.shopstream_migrations to {}").format(owner))
