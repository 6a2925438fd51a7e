"""The SHOPSTREAM_KAFKA_* client settings against a broker that wants SASL/SCRAM, as a managed cluster does.

A second embedded broker from the project's own Kafka jars, its client listener SASL_PLAINTEXT
with SCRAM-SHA-512 and its user created when its storage is formatted (``kafka-storage format
--add-scram``). The producer, ``shopstream stream --until-idle`` and Bronze's consumer-lag
check run against it with the credentials in SHOPSTREAM_KAFKA_* variables; a client without
credentials, or with a wrong password, is refused; the password shows in no output or log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from shopstream.kafka_admin import ensure_topic, watermarks
from shopstream.kafka_clients import kafka_client_config
from shopstream.kafka_server import EmbeddedKafka
from shopstream.settings import KafkaSecurity, environment_overridden, load_settings
from shopstream_assets.defs.resources import KafkaResource, PostgresResource
from shopstream_assets.defs.streaming.checks import bronze_consumer_lag
from shopstream_assets_tests.conftest import TEST_PARTITIONS, Spawn, make_test_home
from shopstream_assets_tests.ground.own_servers import CLI
from shopstream_assets_tests.streaming.conftest import assert_every_batch_accounted

# Both tests on one worker: they share the module's SCRAM broker, started once.
pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.same_worker]

CLIENT_USER = "shopstream-client"
EVENTS = 3_000
BAD_RATIO = 0.05
REFUSAL_TIMEOUT_MS = 3_000


@dataclass(frozen=True)
class SaslBroker:
    bootstrap: str
    password: str
    home: Path

    def environment(self, password: str | None = None) -> dict[str, str]:
        """The SHOPSTREAM_KAFKA_* variables a client of this broker needs."""
        return {
            "SHOPSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SHOPSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SHOPSTREAM_KAFKA_SASL_USERNAME": CLIENT_USER,
            "SHOPSTREAM_KAFKA_SASL_PASSWORD": self.password if password is None else password,
        }


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[SaslBroker]:
    """One SCRAM broker for the module, in a home of its own; stopped (and its home removed) pass or fail."""
    home = make_test_home(Path(tempfile.mkdtemp(prefix="shopstream-sasl-home-")) / "home")
    # Characters a JAAS string must escape, so the Java client's quoting is exercised too.
    password = secrets.token_urlsafe(18) + '"\\#%'
    kafka = EmbeddedKafka(load_settings({"SHOPSTREAM_HOME": str(home)}), scram_users={CLIENT_USER: password})
    try:
        yield SaslBroker(kafka.start(progress=lambda message: None), password, home)
    finally:
        kafka.stop(progress=lambda message: None, immediate=True)  # its data is deleted next
        shutil.rmtree(home.parent, ignore_errors=True)


def _refusal(config: dict[str, object], topic: str) -> list[KafkaError]:
    """The errors a producer with ``config`` meets sending one message; asserts it was not delivered."""
    errors: list[KafkaError] = []
    delivered = threading.Event()

    def on_delivery(error: KafkaError | None, message: object) -> None:
        if error is None:
            delivered.set()

    producer = Producer({**config, "message.timeout.ms": REFUSAL_TIMEOUT_MS, "error_cb": errors.append, "log_level": 0})
    producer.produce(topic, b"{}", on_delivery=on_delivery)
    producer.flush(REFUSAL_TIMEOUT_MS / 1000 + 5)
    assert not delivered.is_set()
    return errors


def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(sasl_broker: SaslBroker) -> None:
    settings = load_settings(sasl_broker.environment())
    topic = "refusal"
    ensure_topic(sasl_broker.bootstrap, topic, 1, security=settings.kafka_security)

    without = _refusal({"bootstrap.servers": sasl_broker.bootstrap}, topic)
    # The SASL listener closes a connection that does not start with a SASL handshake.
    assert without and all(error.code() != KafkaError.NO_ERROR for error in without)
    with pytest.raises(KafkaException):
        watermarks(sasl_broker.bootstrap, topic, timeout=3, security=KafkaSecurity())

    wrong = load_settings(sasl_broker.environment(password="not-the-password"))
    refused = _refusal(kafka_client_config(wrong), topic)
    assert any(error.code() == KafkaError._AUTHENTICATION for error in refused), refused
    assert all(sasl_broker.password not in str(error) for error in refused)
    with pytest.raises(KafkaException):
        watermarks(sasl_broker.bootstrap, topic, timeout=3, security=wrong.kafka_security)

    # The right credentials through the same functions: the refusals above were the credentials'.
    assert sorted(watermarks(sasl_broker.bootstrap, topic, security=settings.kafka_security)) == [0]


def _lag_check(database_url: str, bootstrap: str, topic: str) -> dg.ExecuteInProcessResult:
    """Bronze's consumer-lag check run as Dagster runs it (a job of the check), its resources on this broker."""
    defs = dg.Definitions(
        asset_checks=[bronze_consumer_lag],
        jobs=[dg.define_asset_job("sasl_lag", selection=dg.AssetSelection.checks(bronze_consumer_lag))],
        resources={
            "postgres": PostgresResource(database_url=database_url),
            "kafka": KafkaResource(bootstrap=bootstrap, topic=topic),
        },
    )
    return defs.resolve_job_def("sasl_lag").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def _files_holding(folder: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [
        str(path)
        for path in folder.rglob("*")
        if not path.is_symlink() and path.is_file() and needle in path.read_bytes()
    ]


def test_producer_stream_and_lag_check_run_with_scram_credentials(
    sasl_broker: SaslBroker,
    database_url: str,
    test_home: Path,
    tmp_path: Path,
    spawn_process: Spawn,
    capfd: pytest.CaptureFixture[str],
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    topic = f"sasl-{secrets.token_hex(4)}"
    env.update(
        {
            **sasl_broker.environment(),
            "SHOPSTREAM_HOME": str(test_home),
            "SHOPSTREAM_DATABASE_URL": database_url,
            "SHOPSTREAM_TOPIC": topic,
            "SHOPSTREAM_TOPIC_PARTITIONS": str(TEST_PARTITIONS),
            "SHOPSTREAM_SPARK_MASTER": "local[2]",
        }
    )
    settings = load_settings(env)

    # The producer: `shopstream produce`, its client configuration from the variables alone.
    produce = [*CLI, "produce", "--events", str(EVENTS), "--rate", "0", "--bad-ratio", str(BAD_RATIO), "--quiet"]
    produced = spawn_process(produce, env=env, name="produce")
    assert produced.wait(120) == 0, (tmp_path / "logs" / "produce.log").read_text()[-3000:]
    offsets = watermarks(sasl_broker.bootstrap, topic, security=settings.kafka_security)
    assert sum(high for _, high in offsets.values()) == EVENTS

    # The stream, every Kafka client in it (Spark's source, the offset readers) from the same variables.
    stream = spawn_process([*CLI, "stream", "--until-idle", "3"], env=env, name="stream")
    assert stream.wait(300) == 0, (tmp_path / "logs" / "stream.log").read_text()[-3000:]
    consumed, written, rejects, duplicates = assert_every_batch_accounted(database_url)
    assert consumed == EVENTS and rejects > 0
    with psycopg.connect(database_url) as conn:
        (events,) = conn.execute("select count(*) from bronze.clickstream_events").fetchone()
        (reject_rows,) = conn.execute("select count(*) from bronze.clickstream_rejects").fetchone()
    assert (events, reject_rows) == (written, rejects)

    # Bronze's consumer-lag check: the broker's offsets read with the variables' credentials.
    with environment_overridden(sasl_broker.environment()):
        checked = _lag_check(database_url, sasl_broker.bootstrap, topic)
    assert checked.success
    (evaluation,) = checked.get_asset_check_evaluations()
    figures = {name: value.value for name, value in evaluation.metadata.items()}
    assert evaluation.passed and figures["lag"] == 0
    assert sum(figures["broker_end_offsets"].values()) == EVENTS

    # The same check without the credentials fails: it is the variables that let it in.
    without_credentials = {name: "" for name in sasl_broker.environment() if "KAFKA_S" in name}
    with environment_overridden(without_credentials):
        refused = _lag_check(database_url, sasl_broker.bootstrap, topic)
    assert not refused.success

    # The password in no output or log of those runs.
    captured = capfd.readouterr()
    outputs = [captured.out, captured.err]
    outputs += [(tmp_path / "logs" / f"{name}.log").read_text(errors="replace") for name in ("produce", "stream")]
    outputs += [str(event) for event in [*checked.all_events, *refused.all_events]]
    assert all(sasl_broker.password not in output for output in outputs)
    assert _files_holding(test_home, sasl_broker.password) == []
    assert _files_holding(sasl_broker.home, sasl_broker.password) == []
