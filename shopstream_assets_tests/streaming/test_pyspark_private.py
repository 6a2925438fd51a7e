"""streaming.pyspark_private: every private PySpark name the project uses still exists, and without one the
stock path writes the same Bronze."""

from __future__ import annotations

import pytest

from shopstream import database
from shopstream.settings import load_settings
from shopstream_assets_tests.streaming.conftest import (
    assert_every_batch_accounted,
    bronze_snapshot,
    expected_bronze,
    produce_simulated,
)
from streaming import pyspark_private
from streaming.job import replay_topic, run_stream
from streaming.migrations import migrate
from streaming.pyspark_private import PRIVATE_NAMES, missing_private_names

REMOVED_BY_AN_UPGRADE = (
    "pyspark.util._removed_by_an_upgrade",
    "org.apache.spark.sql.classic.Dataset.removedByAnUpgrade",
)


def test_every_private_name_the_project_uses_exists_in_the_installed_pyspark(spark) -> None:
    import pyspark

    missing = missing_private_names(spark.range(1))
    assert not missing, (
        f"pyspark {pyspark.__version__} no longer has {', '.join(missing)}: the stream and the replay fall back "
        "to DataFrame.toArrow(). Find the new names (streaming/pyspark_private.py says what each one does)."
    )


def test_names_an_upgrade_removed_are_reported_by_name(spark, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a Python name and a JVM method that do not exist are named, the others are not."""
    monkeypatch.setattr(pyspark_private, "PRIVATE_NAMES", (*PRIVATE_NAMES, *REMOVED_BY_AN_UPGRADE))
    assert missing_private_names(spark.range(1)) == list(REMOVED_BY_AN_UPGRADE)


def test_the_stock_path_writes_the_same_bronze_rows(
    spark,
    shopstream_env: dict[str, str],
    database_url: str,
    admin_database_url: str,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stream without a private name it needs (an upgrade removed it) collects each batch with
    toArrow(), says so once, and leaves Bronze exactly as the replay on the private path leaves it."""
    produced = produce_simulated(kafka_bootstrap, topic, 3_000, seed=45, bad_ratio=0.2)
    settings = load_settings(shopstream_env)
    # A name of this test's own: the fallback is said once per process for each list of missing names.
    removed = "pyspark.util._load_from_socket_gone_in_the_stream"
    monkeypatch.setattr(pyspark_private, "PRIVATE_NAMES", (*PRIVATE_NAMES, removed))
    with caplog.at_level("WARNING", logger="shopstream.stream"):
        summary = run_stream(
            spark,
            settings,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            until_idle=1.5,
            max_offsets_per_trigger=1_200,
        )
    assert summary.batches >= 3 and summary.messages == 3_000
    told = [record.getMessage() for record in caplog.records if "DataFrame.toArrow()" in record.getMessage()]
    assert len(told) == 1 and removed in told[0]
    event_ids, rejects, duplicates = expected_bronze(produced.values)
    assert assert_every_batch_accounted(database_url) == (3_000, len(event_ids), rejects.total(), duplicates)

    monkeypatch.undo()  # the private path again, for the reference
    reference_name = database.url_parts(database_url).database + "_ref"
    database.ensure_database(admin_database_url, reference_name)
    reference_url = database.with_database(admin_database_url, reference_name)
    try:
        migrate(reference_url)
        replay_topic(spark, settings, database_url=reference_url, kafka_bootstrap=kafka_bootstrap)
        assert bronze_snapshot(database_url) == bronze_snapshot(reference_url)
    finally:
        database.drop_database(admin_database_url, reference_name)
