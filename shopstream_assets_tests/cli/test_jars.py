"""`shopstream jars`: Maven lays each jar set of the committed POM under SHOPSTREAM_HOME/jars, once."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pyspark

from shopstream.jars import KAFKA_BROKER, POM_PATH, SPARK_CONNECTOR, resolve_jars
from shopstream_assets_tests.conftest import SHARED_JARS
from shopstream_assets_tests.ground.own_servers import CLI, env_for


def test_jars_resolves_what_is_missing_and_keeps_what_the_pom_already_gave(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A home with the broker's jars from this POM and no connector: only the connector is resolved.

    A stamp that no longer matched its POM (or was ignored) would resolve the broker's jars again,
    and the progress would say so.
    """
    # The session's broker resolved the shared broker jars from this POM before it started.
    home = tmp_path / "home"
    (home / "jars").mkdir(parents=True)
    (home / "jars" / KAFKA_BROKER).symlink_to(SHARED_JARS / KAFKA_BROKER, target_is_directory=True)
    broker_jars = sorted(path.name for path in (SHARED_JARS / KAFKA_BROKER).glob("*.jar"))

    result = subprocess.run([*CLI, "jars"], env=env_for(home), capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resolving {SPARK_CONNECTOR} jars with Maven" in result.stderr
    assert f"resolving {KAFKA_BROKER}" not in result.stderr
    connector = home / "jars" / SPARK_CONNECTOR
    connector_jars = sorted(path.name for path in connector.glob("*.jar"))
    assert result.stdout.splitlines() == [
        f"{KAFKA_BROKER}: {len(broker_jars)} jars in {home / 'jars' / KAFKA_BROKER}",
        f"{SPARK_CONNECTOR}: {len(connector_jars)} jars in {connector}",
    ]
    # The connector Spark loads must be built for the installed pyspark.
    assert f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar" in connector_jars
    assert (connector / ".pom-sha256").read_text() == hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
    assert not connector.with_name(connector.name + ".partial").exists()

    # Resolved once: the next call reads the folder and asks Maven nothing.
    said: list[str] = []
    again = resolve_jars(SPARK_CONNECTOR, home / "jars", progress=said.append)
    assert said == [] and sorted(path.name for path in again) == connector_jars
