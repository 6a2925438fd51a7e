"""The one Kafka client configuration: the brokers plus the SHOPSTREAM_KAFKA_* security settings.

Every Kafka client ShopStream opens is configured here, so a managed cluster's SASL/SCRAM or
TLS settings reach all of them alike: the producer, the admin client and the offset reader
(librdkafka through confluent-kafka: :func:`kafka_client_config`) and Spark's Kafka source
(the Java client, as ``kafka.``-prefixed options: :func:`spark_kafka_options`). The two
clients name their settings differently; both are derived from one :class:`KafkaSecurity`.
"""

from __future__ import annotations

from typing import Any

from shopstream.settings import KafkaSecurity, Settings, load_settings

# The Java client's login module per SASL mechanism (librdkafka needs none).
_JAVA_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def librdkafka_security(security: KafkaSecurity) -> dict[str, str]:
    """``security`` in librdkafka's names; empty for a plaintext cluster."""
    if not security.configured:
        return {}
    config = {"security.protocol": str(security.security_protocol)}
    if security.sasl_mechanism is not None:
        config.update(
            {
                "sasl.mechanism": security.sasl_mechanism,
                "sasl.username": str(security.sasl_username),
                "sasl.password": str(security.sasl_password),
            }
        )
    if security.ssl_ca_location is not None:
        config["ssl.ca.location"] = security.ssl_ca_location
    return config


def kafka_client_config(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """librdkafka's configuration for ``bootstrap`` (default ``settings.kafka_bootstrap``) with the
    security settings; a client adds only what is its own (``group.id``, ``client.id``...)."""
    servers = bootstrap or settings.kafka_bootstrap
    if servers is None:
        raise ValueError("no Kafka bootstrap address: pass the embedded broker's or set SHOPSTREAM_KAFKA_BOOTSTRAP")
    return {"bootstrap.servers": servers, **librdkafka_security(settings.kafka_security)}


def client_config(bootstrap: str, security: KafkaSecurity | None = None, **extra: Any) -> dict[str, Any]:
    """:func:`kafka_client_config` for a caller that holds only the brokers' address: the security
    settings are ``security``, else the process's SHOPSTREAM_KAFKA_* variables."""
    security = load_settings().kafka_security if security is None else security
    return {"bootstrap.servers": bootstrap, **librdkafka_security(security), **extra}


def _jaas_quoted(value: str) -> str:
    # The JAAS parser reads a double-quoted string with backslash escapes.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_kafka_security(security: KafkaSecurity) -> dict[str, str]:
    """``security`` in the Java client's names (Spark's source, the broker's own tools)."""
    if not security.configured:
        return {}
    config = {"security.protocol": str(security.security_protocol)}
    if security.sasl_mechanism is not None:
        module = _JAVA_LOGIN_MODULES[security.sasl_mechanism]
        username, password = _jaas_quoted(str(security.sasl_username)), _jaas_quoted(str(security.sasl_password))
        config.update(
            {
                "sasl.mechanism": security.sasl_mechanism,
                # Spark redacts an option whose value matches spark.redaction.regex ("password"):
                # this one does, so the UI, the event log and explain() show it as redacted.
                "sasl.jaas.config": f"{module} required username={username} password={password};",
            }
        )
    if security.ssl_ca_location is not None:
        # The Java client reads a PEM CA file directly since Kafka 2.7: no keystore to build.
        config.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": security.ssl_ca_location})
    return config


def spark_kafka_options(bootstrap: str, security: KafkaSecurity | None = None) -> dict[str, str]:
    """Spark's Kafka source options for ``bootstrap`` with the security settings (``security``,
    else the process's SHOPSTREAM_KAFKA_* variables), every one ``kafka.``-prefixed."""
    security = load_settings().kafka_security if security is None else security
    java = {"bootstrap.servers": bootstrap, **java_kafka_security(security)}
    return {f"kafka.{name}": value for name, value in java.items()}
