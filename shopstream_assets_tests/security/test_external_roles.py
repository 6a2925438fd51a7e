"""Roles by duty on a PostgreSQL ShopStream does not run: set up once from SHOPSTREAM_ADMIN_DATABASE_URL,
or by a DBA from `shopstream services setup-sql`, held to the embedded server's rules (role_checks.py).

The session's PostgreSQL stands in for the user's server, its admin for the user's admin. Roles are
cluster-wide and other workers use the same server: every role here has a name of this test's own
and is dropped at the end, with the test's databases.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql

from shopstream import database
from shopstream_assets_tests.conftest import make_test_home
from shopstream_assets_tests.ground.own_servers import CLI, env_for
from shopstream_assets_tests.security.role_checks import (
    assert_dagster_confined,
    assert_owner_confined,
    assert_reader_confined,
    assert_unprivileged_login,
    cannot_connect,
)

# Characters that break a URL unless encoded: the roles' URLs must carry them.
AWKWARD = "#/@:%"


@dataclass(frozen=True)
class ExternalServer:
    """A database, Dagster's database and three role names of this test's own on the session's server."""

    admin_url: str
    database: str
    dagster_database: str
    passwords: dict[str, str]  # role name -> password

    def url(self, role: str, database_name: str | None = None) -> str:
        parts = database.url_parts(self.admin_url)
        return database.make_url(parts.host, parts.port, role, self.passwords[role], database_name or self.database)

    @property
    def owner(self) -> str:
        return self.url(next(name for name in self.passwords if name.startswith("t_owner_")))

    @property
    def reader(self) -> str:
        return self.url(next(name for name in self.passwords if name.startswith("t_reader_")))

    @property
    def dagster(self) -> str:
        name = next(name for name in self.passwords if name.startswith("t_dagster_"))
        return self.url(name, self.dagster_database)

    def environment(self, home: Path) -> dict[str, str]:
        """What a user sets for their own server: each role's URL, no admin."""
        return env_for(home) | {
            "SHOPSTREAM_DATABASE_URL": self.owner,
            "SHOPSTREAM_DASHBOARD_DATABASE_URL": self.reader,
            "SHOPSTREAM_DAGSTER_DATABASE_URL": self.dagster,
        }


@pytest.fixture
def external(admin_database_url: str) -> Iterator[ExternalServer]:
    suffix = uuid.uuid4().hex[:8]
    server = ExternalServer(
        admin_url=database.with_database(admin_database_url, "postgres"),
        database=f"t_external_{suffix}",
        dagster_database=f"t_external_dagster_{suffix}",
        passwords={
            f"t_owner_{suffix}": f"owner{AWKWARD}{uuid.uuid4().hex}",
            f"t_reader_{suffix}": f"reader{AWKWARD}{uuid.uuid4().hex}",
            f"t_dagster_{suffix}": f"dagster{AWKWARD}{uuid.uuid4().hex}",
        },
    )
    # No database made beforehand: setting the roles up makes the pipeline's when it is missing.
    try:
        yield server
    finally:
        for name in (server.database, server.dagster_database):
            database.drop_database(admin_database_url, name)
        with database.autocommit(server.admin_url) as conn:
            for role in server.passwords:
                conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def _shopstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=180)


def _no_password_in(output: str, external: ExternalServer) -> None:
    for password in [*external.passwords.values(), database.url_parts(external.admin_url).password]:
        assert password not in output


@pytest.mark.servers
def test_the_admin_url_sets_up_the_roles_once_and_each_keeps_to_its_duty(
    external: ExternalServer, tmp_path: Path
) -> None:
    env = external.environment(make_test_home(tmp_path / "home"))
    env["SHOPSTREAM_ADMIN_DATABASE_URL"] = external.admin_url
    migrated = _shopstream(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert "roles by duty set up" in migrated.stderr
    _no_password_in(migrated.stdout + migrated.stderr, external)

    assert_owner_confined(external.owner, external.dagster_database)
    assert_reader_confined(external.reader, external.dagster_database)
    assert_dagster_confined(external.dagster, external.database)
    # Dagster's database is its own: no one else but the admin may connect.
    with database.connect(external.admin_url) as conn:
        (owner,) = conn.execute(
            "select pg_get_userbyid(datdba) from pg_database where datname = %s", (external.dagster_database,)
        ).fetchone()
    assert owner == database.url_parts(external.dagster).user

    # Once set up, the pipeline runs without the admin: a second migration as the owner is a no-op.
    del env["SHOPSTREAM_ADMIN_DATABASE_URL"]
    again = _shopstream(env, "migrate")
    assert again.returncode == 0 and again.stdout.strip() == "database already up to date", again.stderr


@pytest.mark.servers
def test_setup_sql_names_the_roles_and_a_dba_runs_it_with_the_passwords_as_psql_variables(
    external: ExternalServer, tmp_path: Path
) -> None:
    env = external.environment(make_test_home(tmp_path / "home"))
    printed = _shopstream(env, "services", "setup-sql")
    assert printed.returncode == 0, printed.stderr
    _no_password_in(printed.stdout + printed.stderr, external)
    for role in external.passwords:
        assert f'create role "{role}"' in printed.stdout

    def psql(*variables: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["psql", "-X", "-q", *variables, "-f", "-", external.admin_url],
            input=printed.stdout,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # A DBA who forgets a password gets an error and no role.
    forgot = psql()
    assert forgot.returncode != 0 and "set the psql variable owner_password" in forgot.stderr
    with database.connect(external.admin_url) as conn:
        made = conn.execute("select rolname from pg_roles where rolname = any(%s)", (list(external.passwords),))
        assert made.fetchall() == []

    variables = {
        "owner_password": external.owner,
        "reader_password": external.reader,
        "dagster_password": external.dagster,
    }
    given = [f"-v{name}={database.url_parts(url).password}" for name, url in variables.items()]
    ran = psql(*given)
    assert ran.returncode == 0, ran.stderr
    assert psql(*given).returncode == 0  # again: idempotent

    for url in (external.owner, external.reader, external.dagster):
        assert_unprivileged_login(url)  # each logs in, to the databases the script made
    cannot_connect(external.reader, external.dagster_database)
    cannot_connect(external.owner, external.dagster_database)
    with database.connect(external.reader) as conn:
        (read_only,) = conn.execute("show default_transaction_read_only").fetchone()
    assert read_only == "on"


def test_an_admin_url_naming_a_pipeline_role_is_refused(tmp_path: Path) -> None:
    """Setting up would strip the admin of its own privileges (`alter role ... nosuperuser`)."""
    owner = "postgresql://someone:pw@db.example:5432/shop"
    env = env_for(make_test_home(tmp_path / "home")) | {
        "SHOPSTREAM_DATABASE_URL": owner,
        "SHOPSTREAM_ADMIN_DATABASE_URL": "postgresql://someone:pw@db.example:5432/postgres",
    }
    refused = _shopstream(env, "services", "setup-sql")
    assert refused.returncode == 2 and "is also a pipeline role" in refused.stderr
