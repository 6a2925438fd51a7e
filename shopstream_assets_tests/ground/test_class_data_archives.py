"""The JVMs' class-data archives (shopstream/jvm_archive.py), trained by `shopstream test-setup`:
valid for the class paths the project's JVMs use, mapped by the JVMs that start, and harmless
where they do not fit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from shopstream import jvm_archive
from shopstream.jars import KAFKA_BROKER, require_java
from shopstream.kafka_server import EmbeddedKafka
from shopstream.settings import load_settings
from shopstream_assets_tests.conftest import REPO_ROOT
from streaming.spark_session import driver_class_data_archive

# `make test` runs `shopstream test-setup` from the repository's root first: its default home.
SETUP_SETTINGS = load_settings({"SHOPSTREAM_HOME": str(REPO_ROOT / ".shopstream")})


def kafka_class_path() -> str:
    return str(SETUP_SETTINGS.jars_dir.resolve() / KAFKA_BROKER / "*")


def trained(archive: Path) -> Path:
    if not archive.is_file():
        pytest.fail(f"no class-data archive at {archive}: run `shopstream test-setup` (make test does)")
    return archive


# Needs `shopstream test-setup`'s archives, which `make test` builds and `make check` does not.
@pytest.mark.servers
def test_the_kafka_archive_fits_the_class_path_the_broker_is_started_with() -> None:
    archive = trained(EmbeddedKafka(SETUP_SETTINGS).class_data_archive())
    # -Xshare:on: the JVM refuses to start unless it maps the archive.
    tool = [require_java(), "-Xshare:on", f"-XX:SharedArchiveFile={archive}", "-cp", kafka_class_path()]
    ran = subprocess.run([*tool, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr


# Needs `shopstream test-setup`'s archives, which `make test` builds and `make check` does not.
@pytest.mark.servers
def test_an_archive_that_does_not_fit_is_left_out_quietly() -> None:
    # The Spark driver's archive given to a Kafka tool: another class path.
    options = jvm_archive.sharing_options(trained(driver_class_data_archive(SETUP_SETTINGS)))
    ran = subprocess.run(
        [require_java(), *options, "-cp", kafka_class_path(), "kafka.tools.StorageTool", "random-uuid"],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0 and len(ran.stdout.strip()) == 22, ran
    assert "cds" not in ran.stdout + ran.stderr.replace("Picked up JAVA_TOOL_OPTIONS", "")


def test_a_missing_archive_adds_no_option(tmp_path: Path) -> None:
    assert jvm_archive.sharing_options(tmp_path / "none.jsa") == []


def test_the_sessions_spark_driver_maps_its_archive(spark: object) -> None:
    archive = trained(driver_class_data_archive(SETUP_SETTINGS))
    drivers = [
        child
        for child in psutil.Process().children(recursive=True)
        if "java" in child.name() and "pyspark-shell" in " ".join(child.cmdline())
    ]
    assert drivers, "no Spark driver JVM under this test process"
    mapped = {region.path for driver in drivers for region in driver.memory_maps()}
    assert str(archive) in mapped, sorted(path for path in mapped if path.endswith(".jsa"))


def test_the_sessions_kafka_broker_maps_its_archive(kafka_bootstrap: str, session_home: Path) -> None:
    if not (session_home / "run" / "kafka.json").exists():
        pytest.skip("the suite runs on a given broker (SHOPSTREAM_TEST_KAFKA_BOOTSTRAP)")
    broker = EmbeddedKafka(load_settings({"SHOPSTREAM_HOME": str(session_home)}))
    archive = trained(broker.class_data_archive())
    pid = broker.pid()
    assert pid is not None
    assert str(archive) in {region.path for region in psutil.Process(pid).memory_maps()}
