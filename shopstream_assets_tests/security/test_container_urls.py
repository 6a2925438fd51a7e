"""Compose's passwords reach PostgreSQL whatever characters they hold: the URLs the image's entry point
and the settings make from them are URL-encoded, and a role with such a password logs in with them."""

from __future__ import annotations

import uuid

import pytest
import yaml
from psycopg import sql

from shopstream import database
from shopstream.container import PASSWORD_VARIABLES, URL_PASSWORDS, container_environment
from shopstream.settings import load_settings
from shopstream_assets_tests.test_compose import REPO_ROOT

AWKWARD = "p#w/d@x:y%z 41?&="


def _compose_environment(service: str) -> dict[str, str]:
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    return compose["services"][service]["environment"]


def _compose_url() -> str:
    return _compose_environment("stream")["SHOPSTREAM_DATABASE_URL"]


def test_the_entry_point_encodes_each_password_into_its_compose_url() -> None:
    given = {variable: _compose_environment("setup")[variable] for variable in URL_PASSWORDS}
    env = container_environment({**given, **{variable: AWKWARD for variable in PASSWORD_VARIABLES}})
    assert not PASSWORD_VARIABLES & set(env)  # moved into the URLs, not left beside them
    settings = load_settings(env)
    for url_variable in URL_PASSWORDS:
        parts = database.url_parts(env[url_variable])
        expected = database.url_parts(given[url_variable])
        assert (parts.user, parts.password, parts.host, parts.port, parts.database) == (
            expected.user,
            AWKWARD,
            "postgres",
            5432,
            expected.database,
        )
    assert database.url_parts(settings.database_url or "").password == AWKWARD
    assert database.url_parts(settings.admin_database_url or "").password == AWKWARD


def test_the_dashboard_s_reader_url_is_encoded_too() -> None:
    from dashboard.db import dashboard_database_url

    url = dashboard_database_url({"SHOPSTREAM_DATABASE_URL": _compose_url(), "SHOPSTREAM_READER_PASSWORD": AWKWARD})
    assert database.url_parts(url).password == AWKWARD and database.url_parts(url).user == "shopstream_reader"


@pytest.mark.servers
def test_a_role_with_an_awkward_password_logs_in_through_the_made_url(admin_database_url: str) -> None:
    role = f"t_awkward_{uuid.uuid4().hex[:8]}"
    with database.autocommit(admin_database_url) as conn:
        conn.execute(sql.SQL("create role {} login password {}").format(sql.Identifier(role), sql.Literal(AWKWARD)))
    try:
        parts = database.url_parts(admin_database_url)
        url = f"postgresql://{role}@{parts.host}:{parts.port}/{parts.database}"
        made = container_environment({"SHOPSTREAM_DATABASE_URL": url, "SHOPSTREAM_OWNER_PASSWORD": AWKWARD})
        with database.connect(load_settings(made).database_url or "") as conn:
            assert conn.execute("select current_user").fetchone() == (role,)
    finally:
        with database.autocommit(admin_database_url) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
