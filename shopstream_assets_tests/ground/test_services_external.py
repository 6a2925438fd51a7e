"""`shopstream services start|status|stop` on servers the user already runs (README: "Your own PostgreSQL and Kafka").

The session's PostgreSQL and Kafka stand in for the user's: given by SHOPSTREAM_DATABASE_URL and
SHOPSTREAM_KAFKA_BOOTSTRAP, they are used as they are; nothing embedded starts or stops.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from shopstream import database
from shopstream.database import DAGSTER_DATABASE_NAME, redact
from shopstream.kafka_admin import watermarks
from shopstream.services import Endpoints
from shopstream_assets_tests.conftest import make_test_home
from shopstream_assets_tests.ground.own_servers import CLI, env_for, exports, processes_under
from streaming.migrations import migration_scripts

PARTITIONS = 3


def test_services_start_on_given_servers_starts_nothing_and_exports_them(
    admin_database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A `services start` that took the given URL for its own server would start a PostgreSQL under
    the home and export that server's URL: the exports, the process and the data checks fail."""
    home = make_test_home(tmp_path / "home")
    name = f"t_external_{uuid.uuid4().hex[:8]}"
    database.ensure_database(admin_database_url, name)  # empty: `services start` must migrate it
    url = database.with_database(admin_database_url, name)
    topic = f"t-external-{uuid.uuid4().hex[:8]}"
    env = env_for(home) | {
        "SHOPSTREAM_DATABASE_URL": url,
        "SHOPSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SHOPSTREAM_TOPIC": topic,
        "SHOPSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
    }

    def shopstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=180)

    try:
        started = shopstream("services", "start")
        assert started.returncode == 0, started.stderr[-3000:]
        # Exactly the given servers, the dashboard on the owner's URL (no reader password given).
        assert exports(started.stdout) == Endpoints(url, url, kafka_bootstrap).environment()
        assert "note: the dashboard connects as the database's owner" in started.stderr
        assert f"created topic {topic} ({PARTITIONS} partitions)" in started.stderr
        assert f"PostgreSQL: {redact(url)}" in started.stderr and f"Kafka:      {kafka_bootstrap}" in started.stderr
        # Nothing embedded: no process and no server data under the home.
        assert processes_under(home) == []
        assert not (home / "data" / "postgres").exists() and not (home / "data" / "kafka").exists()
        # It migrated the given database, made the topic, and Dagster has its database.
        with database.connect(url) as conn:
            applied = [row[0] for row in conn.execute("select name from public.shopstream_migrations order by 1")]
            (dagster_database,) = conn.execute(
                "select count(*) from pg_database where datname = %s", (DAGSTER_DATABASE_NAME,)
            ).fetchone()
        assert applied == [script for script, _ in migration_scripts()]
        assert dagster_database == 1
        assert sorted(watermarks(kafka_bootstrap, topic)) == list(range(PARTITIONS))

        status = shopstream("services", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].split() == ["postgresql", "running", "external", redact(url)]
        assert lines[1].split() == ["kafka", "running", "external", kafka_bootstrap]

        stopped = shopstream("services", "stop")
        assert stopped.returncode == 0 and stopped.stdout.strip() == "nothing was running"
        with database.connect(url) as conn:  # the user's server is untouched
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        database.drop_database(admin_database_url, name)
        for process in processes_under(home):  # only if it wrongly started servers of its own
            process.kill()
