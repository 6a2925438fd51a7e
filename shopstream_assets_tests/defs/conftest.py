"""Fixtures for the Dagster code location: the manifest, the definitions, a PostgreSQL-backed
instance of each test's own, one SparkSession for the in-process runs, events on a topic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from shopstream_assets.lib.dagster_instance import (
    dbt_profile_environment,
    default_dbt_target_dir,
    prepare_dbt_manifest,
    write_instance_yaml,
)
from shopstream_assets.lib.database import url_parts
from shopstream_assets.lib.services import Endpoints
from shopstream_assets.lib.settings import Settings, load_settings
from streaming.producer import UNPACED_CLOCK_RATE, ClickstreamProducer, run
from streaming.simulator import Simulator


@pytest.fixture(scope="session")
def dbt_manifest(servers: Endpoints) -> Path:
    """dbt_project/target/manifest.json, parsed as `shopstream up` does before Dagster starts."""
    return prepare_dbt_manifest(
        dbt_profile_environment(servers), default_dbt_target_dir(), progress=lambda message: None
    )


@pytest.fixture(scope="session")
def defs(dbt_manifest: Path) -> dg.Definitions:
    from shopstream_assets.definitions import defs as load_defs

    return load_defs()


@pytest.fixture
def process_env(shopstream_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's SHOPSTREAM_* variables in os.environ: resources resolve endpoints from them."""
    for name, value in shopstream_env.items():
        if name.startswith("SHOPSTREAM_"):
            monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def dagster_instance(process_env: Settings, database_url: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance from our dagster.yaml, its storage in this test's own database."""
    home = write_instance_yaml(process_env.dagster_home, url_parts(database_url).database).parent
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


@pytest.fixture(scope="session")
def spark(session_home: Path) -> Iterator[object]:
    """One local[2] session for the in-process replays; the Bronze asset's resource reuses it."""
    from streaming.job import build_spark_session

    session = build_spark_session(
        load_settings({"SHOPSTREAM_HOME": str(session_home)}),
        master="local[2]",
        app_name="shopstream-defs-tests",
    )
    yield session
    session.stop()


def produce_events(kafka_bootstrap: str, topic: str, count: int, *, seed: int = 7, bad_ratio: float = 0.0) -> int:
    """``count`` simulator messages through the real producer, unpaced; returns those delivered."""
    simulator = Simulator(seed, events_per_second=UNPACED_CLOCK_RATE, bad_ratio=bad_ratio)
    result = run(simulator, ClickstreamProducer(kafka_bootstrap, topic), paced=False, events=count)
    assert result.counts.failed == 0 and result.pending == 0, result
    return result.counts.delivered
