from pathlib import Path

import pytest

from shopstream.settings import DEFAULT_TOPIC, SettingsError, load_settings, redact_url


def test_defaults_are_embedded_servers_and_the_reference_topic(tmp_path: Path) -> None:
    settings = load_settings({"SHOPSTREAM_HOME": str(tmp_path)})
    assert settings.database_embedded and settings.kafka_embedded
    assert settings.topic == DEFAULT_TOPIC == "ecommerce-clickstream"
    assert settings.spark_master == "local[*]"
    assert (settings.dagster_port, settings.dashboard_port, settings.sensor_interval_seconds) == (3000, 8501, 5)
    assert settings.home == tmp_path.resolve()
    assert settings.dagster_home.is_absolute()


def test_explicit_values_are_used() -> None:
    settings = load_settings(
        {
            "SHOPSTREAM_DATABASE_URL": "postgresql://u:p@db.internal:5433/analytics",
            "SHOPSTREAM_KAFKA_BOOTSTRAP": "k1:9092, k2:9092",
            "SHOPSTREAM_SPARK_MASTER": "spark://spark-master:7077",
            "SHOPSTREAM_TOPIC": "shop.clicks-v2",
            "SHOPSTREAM_DAGSTER_PORT": "3300",
        }
    )
    assert settings.database_url == "postgresql://u:p@db.internal:5433/analytics"
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.spark_master == "spark://spark-master:7077"
    assert settings.topic == "shop.clicks-v2"
    assert settings.dagster_port == 3300


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SHOPSTREAM_DATABASE_URL", "localhost", "is not a postgresql:// URL"),
        ("SHOPSTREAM_DATABASE_URL", "mysql://u:p@h/db", "is not a postgresql:// URL"),
        ("SHOPSTREAM_DATABASE_URL", "postgresql://u:p@h:5432/", "names no database"),
        ("SHOPSTREAM_DATABASE_URL", "postgresql://u:p@h:port/db", "port that is not a number"),
        ("SHOPSTREAM_DASHBOARD_DATABASE_URL", "http://x", "is not a postgresql:// URL"),
        ("SHOPSTREAM_KAFKA_BOOTSTRAP", "localhost", "must be host:port"),
        ("SHOPSTREAM_TOPIC", "no spaces allowed", "SHOPSTREAM_TOPIC must be"),
        ("SHOPSTREAM_TOPIC_PARTITIONS", "0", "from 1 to 1000"),
        ("SHOPSTREAM_SPARK_MASTER", "local[two]", "SHOPSTREAM_SPARK_MASTER must be"),
        ("SHOPSTREAM_SPARK_DRIVER_MEMORY", "lots", "SHOPSTREAM_SPARK_DRIVER_MEMORY must be a size"),
        ("SHOPSTREAM_DAGSTER_PORT", "70000", "from 1 to 65535"),
        ("SHOPSTREAM_DASHBOARD_PORT", "eighty", "whole number"),
        ("SHOPSTREAM_SENSOR_INTERVAL", "-5", "from 1 to 3600"),
        ("SHOPSTREAM_LOG_LEVEL", "LOUD", "SHOPSTREAM_LOG_LEVEL must be one of"),
        ("SHOPSTREAM_DAGSTER_RETENTION_DAYS", "0", "from 1 to 3650"),
        ("SHOPSTREAM_DAGSTER_RETENTION_DAYS", "a week", "whole number"),
        ("SHOPSTREAM_LOG_MAX_SIZE", "50", "must be a size"),
        ("SHOPSTREAM_LOG_MAX_SIZE", "8k", "at least 64k"),
        ("SHOPSTREAM_LOG_MAX_SIZE", "inf", "must be a size"),
        ("SHOPSTREAM_LOG_KEEP", "0", "from 1 to 100"),
    ],
)
def test_a_wrong_value_names_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value})
    message = str(raised.value)
    # The value is shown as it was given, a URL's password as *** (shopstream_assets_tests/security).
    assert name in message and expected in message and repr(redact_url(value)) in message


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(SettingsError, match="SHOPSTREAM_HOME must be a folder"):
        load_settings({"SHOPSTREAM_HOME": str(file)})


def test_the_cli_reports_a_wrong_setting_by_name(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "shopstream_cli.cli", "services", "status"],
        env={"SHOPSTREAM_HOME": str(tmp_path), "SHOPSTREAM_DATABASE_URL": "localhost", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "SHOPSTREAM_DATABASE_URL is not a postgresql:// URL: got 'localhost'" in result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("0", False), ("true", True), ("false", False), ("TRUE", True), ("False", False)],
)
def test_fast_runs_takes_one_or_zero_and_true_or_false(value: str, expected: bool) -> None:
    assert load_settings({"SHOPSTREAM_FAST_RUNS": value}).fast_runs is expected


def test_fast_runs_is_on_unless_turned_off() -> None:
    assert load_settings({}).fast_runs is True


@pytest.mark.parametrize("value", ["2", "fast", "-1", "ja"])
def test_fast_runs_refuses_anything_else_by_name(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"SHOPSTREAM_FAST_RUNS": value})
    message = str(raised.value)
    assert "SHOPSTREAM_FAST_RUNS" in message and repr(value) in message


def test_retention_and_log_rotation_defaults_and_sizes() -> None:
    defaults = load_settings({})
    assert (defaults.dagster_retention_days, defaults.log_max_bytes, defaults.log_keep) == (7, 50 * 1024**2, 3)
    given = load_settings(
        {"SHOPSTREAM_DAGSTER_RETENTION_DAYS": "30", "SHOPSTREAM_LOG_MAX_SIZE": "512K", "SHOPSTREAM_LOG_KEEP": "10"}
    )
    assert (given.dagster_retention_days, given.log_max_bytes, given.log_keep) == (30, 512 * 1024, 10)
    assert load_settings({"SHOPSTREAM_LOG_MAX_SIZE": "2g"}).log_max_bytes == 2 * 1024**3
