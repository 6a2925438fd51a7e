"""The ground floor's URL handling (shopstream/database.py)."""

from shopstream import database


def test_redact_hides_the_password() -> None:
    assert database.redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_on_a_server_we_do_not_run_the_dashboard_is_the_reader_when_a_reader_password_is_set() -> None:
    from dashboard.db import dashboard_database_url

    owner = "postgresql://owner:s3cret@db.example.com:6543/shop?sslmode=require"
    reader = "postgresql://shopstream_reader:r%2Fp%40ss@db.example.com:6543/shop?sslmode=require"
    assert database.reader_or_owner_url(owner, "r/p@ss") == reader
    assert database.reader_or_owner_url(owner, None) == owner
    env = {"SHOPSTREAM_DATABASE_URL": owner, "SHOPSTREAM_READER_PASSWORD": "r/p@ss"}
    assert dashboard_database_url(env) == reader
    given = "postgresql://someone:x@elsewhere:5432/shop"
    assert dashboard_database_url({**env, "SHOPSTREAM_DASHBOARD_DATABASE_URL": given}) == given
