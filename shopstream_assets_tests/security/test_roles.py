"""Roles by duty on the embedded PostgreSQL: what `services start` exports may do only its own job.

One server of the test's own (a fresh SHOPSTREAM_HOME), driven as a user does; what each role may
and may not do is in role_checks.py, shared with the external server's test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopstream import database
from shopstream.database import DAGSTER_DATABASE_NAME, OWNER_ROLE, READER_ROLE
from shopstream.postgres_roles import DAGSTER_ROLE
from shopstream_assets_tests.ground.own_servers import cli, exports
from shopstream_assets_tests.security.role_checks import (
    assert_dagster_confined,
    assert_owner_confined,
    assert_reader_confined,
)


@pytest.mark.servers
def test_each_exported_role_may_do_its_duty_and_nothing_more(own_home: Path) -> None:
    exported = exports(cli(own_home, "services", "start").stdout)
    owner, reader = exported["SHOPSTREAM_DATABASE_URL"], exported["SHOPSTREAM_DASHBOARD_DATABASE_URL"]
    assert database.url_parts(owner).user == OWNER_ROLE and database.url_parts(reader).user == READER_ROLE
    assert exported["SHOPSTREAM_DAGSTER_DB_USER"] == DAGSTER_ROLE
    admin_password = json.loads((own_home / "credentials.json").read_text())["admin_password"]
    assert admin_password not in "".join(exported.values())  # the admin is never handed out

    assert_owner_confined(owner, DAGSTER_DATABASE_NAME)
    assert_reader_confined(reader, DAGSTER_DATABASE_NAME)
    dagster = database.make_url(
        exported["SHOPSTREAM_DB_HOST"],
        int(exported["SHOPSTREAM_DB_PORT"]),
        exported["SHOPSTREAM_DAGSTER_DB_USER"],
        exported["SHOPSTREAM_DAGSTER_DB_PASSWORD"],
        DAGSTER_DATABASE_NAME,
    )
    assert_dagster_confined(dagster, database.url_parts(owner).database)
