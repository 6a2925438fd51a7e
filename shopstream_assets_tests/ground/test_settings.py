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


# The SHOPSTREAM_KAFKA_* client security settings and the one client configuration built from them.

KAFKA_PASSWORD = 'p@ss "word" \\ #%'
SASL = {
    "SHOPSTREAM_KAFKA_BOOTSTRAP": "broker-1.example.com:9096",
    "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "SHOPSTREAM_KAFKA_SASL_USERNAME": "shop",
    "SHOPSTREAM_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
}


def test_kafka_security_defaults_to_none_and_sasl_to_scram_sha_512(tmp_path: Path) -> None:
    assert not load_settings({}).kafka_security.configured
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    security = load_settings({**SASL, "SHOPSTREAM_KAFKA_SSL_CA_LOCATION": str(ca)}).kafka_security
    assert (security.security_protocol, security.sasl_mechanism, security.sasl_username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "shop",
    )
    assert security.sasl_password == KAFKA_PASSWORD and security.ssl_ca_location == str(ca.resolve())
    # Not in the settings' repr, which a traceback or a debug line may print.
    assert KAFKA_PASSWORD not in repr(load_settings(SASL)) and "shop" in repr(security)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": None}, "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL is not"),
        ({"SHOPSTREAM_KAFKA_BOOTSTRAP": None}, "SHOPSTREAM_KAFKA_BOOTSTRAP is not"),
        ({"SHOPSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "SHOPSTREAM_KAFKA_SASL_MECHANISM must be one of"),
        ({"SHOPSTREAM_KAFKA_SASL_PASSWORD": None}, "needs SHOPSTREAM_KAFKA_SASL_PASSWORD"),
        ({"SHOPSTREAM_KAFKA_SASL_USERNAME": None}, "needs SHOPSTREAM_KAFKA_SASL_USERNAME"),
        ({"SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"}, "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL=SSL uses no SASL"),
        ({"SHOPSTREAM_KAFKA_SSL_CA_LOCATION": "/nowhere/ca.pem"}, "SHOPSTREAM_KAFKA_SSL_CA_LOCATION must be a PEM"),
        (
            {"SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SHOPSTREAM_KAFKA_SSL_CA_LOCATION": "/ca.pem"},
            "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT uses no TLS",
        ),
    ],
)
def test_a_wrong_kafka_security_setting_is_named_without_the_password(
    changes: dict[str, str | None], expected: str
) -> None:
    env = {**SASL, **changes}
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value for name, value in env.items() if value is not None})
    assert expected in str(raised.value) and KAFKA_PASSWORD not in str(raised.value)


def test_one_client_configuration_for_librdkafka_and_spark(tmp_path: Path) -> None:
    from shopstream.kafka_clients import client_config, kafka_client_config, spark_kafka_options

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings({**SASL, "SHOPSTREAM_KAFKA_SSL_CA_LOCATION": str(ca)})
    assert kafka_client_config(settings) == {
        "bootstrap.servers": "broker-1.example.com:9096",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "shop",
        "sasl.password": KAFKA_PASSWORD,
        "ssl.ca.location": str(ca.resolve()),
    }
    assert client_config("other:9092", settings.kafka_security, **{"group.id": "g"})["group.id"] == "g"
    options = spark_kafka_options("broker-1.example.com:9096", settings.kafka_security)
    assert options == {
        "kafka.bootstrap.servers": "broker-1.example.com:9096",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        # The JAAS string quotes and escapes the password; Spark redacts the option (its value says password).
        "kafka.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required username="shop" '
        'password="p@ss \\"word\\" \\\\ #%";',
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": str(ca.resolve()),
    }
    # Plaintext: the brokers and nothing else, so the embedded broker's clients are unchanged.
    plain = load_settings({"SHOPSTREAM_KAFKA_BOOTSTRAP": "k:9092"})
    assert kafka_client_config(plain) == {"bootstrap.servers": "k:9092"}
    assert spark_kafka_options("k:9092", plain.kafka_security) == {"kafka.bootstrap.servers": "k:9092"}
