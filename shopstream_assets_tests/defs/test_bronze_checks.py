"""Bronze's asset checks give the right verdict and figures on a known Bronze (real PostgreSQL, Kafka, Dagster).

The messages go to the broker for real and into Bronze through the stream's own writer at the
offsets the broker gave them (``streaming.bronze_load``: no JVM needed). The expected figures
come from what the test sent and from Bronze's tables, never from the ledger the checks read.
"""

from __future__ import annotations

import dagster as dg
from confluent_kafka import Producer

from shopstream.database import connect
from shopstream.settings import Settings
from shopstream_assets.defs.streaming.checks import MAX_CONSUMER_LAG, MAX_REJECT_RATE
from shopstream_assets_tests.conftest import TEST_PARTITIONS
from streaming.bronze_load import KafkaPositions, write_messages
from streaming.producer import UNPACED_CLOCK_RATE
from streaming.simulator import Batch, Simulator

CHECK_JOB = "bronze_quality_checks"


def _evaluate(defs: dg.Definitions) -> dict[str, dg.AssetCheckEvaluation]:
    """Run Bronze's checks as their 10-minute schedule does (their job); each check's evaluation by name."""
    result = defs.resolve_job_def(CHECK_JOB).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    evaluations = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"row_count", "reject_rate", "consumer_lag"}
    return evaluations


def _figures(evaluation: dg.AssetCheckEvaluation) -> dict[str, object]:
    return {name: value.value for name, value in evaluation.metadata.items()}


def _send(kafka_bootstrap: str, topic: str, batch: Batch) -> int:
    """The messages onto the broker, keyed by session as the producer sends them (librdkafka's CRC32 partitioner)."""
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, value in zip(batch.keys, batch.values, strict=True):
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0
    return len(batch)


def _bronze_tables(database_url: str) -> tuple[int, dict[str, int]]:
    """(rows in bronze.clickstream_events, rejects by reason in bronze.clickstream_rejects)."""
    with connect(database_url) as conn:
        (rows,) = conn.execute("select count(*) from bronze.clickstream_events").fetchone()
        reasons = conn.execute("select reason, count(*) from bronze.clickstream_rejects group by reason").fetchall()
    return rows, dict(reasons)


def test_bronze_checks_pass_and_fail_on_a_known_bronze(
    defs: dg.Definitions, process_env: Settings, database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """Empty, clean, too many rejects, lagging, then a row gone behind the ledger's back.

    Broken on purpose (the reject rate taken over the messages accepted instead of all those
    consumed), this test failed: reject_rate 0.128 where Bronze's tables give 0.114.
    """
    positions = KafkaPositions(topic, partitions=TEST_PARTITIONS)

    def ingest(batch: Batch) -> int:
        sent = _send(kafka_bootstrap, topic, batch)
        with connect(database_url) as conn:
            write_messages(conn, batch.keys, batch.values, positions)
        return sent

    empty = _evaluate(defs)
    assert not empty["row_count"].passed and empty["row_count"].severity == dg.AssetCheckSeverity.WARN
    assert empty["row_count"].description == f"no rows yet for topic {topic}"
    assert empty["reject_rate"].passed and _figures(empty["reject_rate"])["messages"] == 0
    assert empty["consumer_lag"].passed and _figures(empty["consumer_lag"])["lag"] == 0

    clean = ingest(Simulator(21, events_per_second=UNPACED_CLOCK_RATE).take(2_000))
    rows, reasons = _bronze_tables(database_url)
    assert rows > 0 and not reasons
    after_clean = _evaluate(defs)
    assert after_clean["row_count"].passed
    counted = _figures(after_clean["row_count"])
    assert (counted["rows"], counted["ledger_rows_written"], counted["topic"]) == (rows, rows, topic)
    assert after_clean["reject_rate"].passed
    assert _figures(after_clean["reject_rate"])["messages"] == clean
    # Bronze holds every offset the broker has: no lag, partition by partition.
    caught_up = _figures(after_clean["consumer_lag"])
    assert after_clean["consumer_lag"].passed and caught_up["lag"] == 0
    assert caught_up["broker_end_offsets"] == caught_up["bronze_end_offsets"] != {}

    # Half the next messages broken: the hour's reject rate goes well past 5 %.
    broken = ingest(Simulator(22, events_per_second=UNPACED_CLOCK_RATE, bad_ratio=0.5).take(1_000))
    rows, reasons = _bronze_tables(database_url)
    rejects = sum(reasons.values())
    rate = rejects / (clean + broken)
    assert rate > MAX_REJECT_RATE
    rejecting = _evaluate(defs)
    assert not rejecting["reject_rate"].passed
    figures = _figures(rejecting["reject_rate"])
    assert (figures["messages"], figures["rejects"], figures["rejects_by_reason"]) == (clean + broken, rejects, reasons)
    assert abs(figures["reject_rate"] - rate) < 1e-5
    assert rejecting["row_count"].passed and _figures(rejecting["row_count"])["rows"] == rows
    assert rejecting["consumer_lag"].passed and _figures(rejecting["consumer_lag"])["lag"] == 0

    # More on the broker than the lag allows, none of it in Bronze yet.
    waiting = _send(
        kafka_bootstrap, topic, Simulator(23, events_per_second=UNPACED_CLOCK_RATE).take(MAX_CONSUMER_LAG + 1)
    )
    # A row lost behind the ledger's back: the table and the ledger disagree.
    with connect(database_url) as conn:
        conn.execute(
            "delete from bronze.clickstream_events"
            " where event_id = (select min(event_id) from bronze.clickstream_events)"
        )
    behind = _evaluate(defs)
    lag = _figures(behind["consumer_lag"])
    assert not behind["consumer_lag"].passed and lag["lag"] == waiting
    assert sum(lag["lag_by_partition"].values()) == waiting
    for partition, high in lag["broker_end_offsets"].items():
        assert high == lag["bronze_end_offsets"][partition] + lag["lag_by_partition"][partition], partition
    assert not behind["row_count"].passed and behind["row_count"].severity == dg.AssetCheckSeverity.ERROR
    assert behind["row_count"].description == (
        f"bronze.clickstream_events has {rows - 1:,} rows but the ledger says {rows:,}"
    )


def test_consumer_lag_fails_on_a_topic_the_broker_does_not_have(
    defs: dg.Definitions, process_env: Settings, monkeypatch, kafka_bootstrap: str
) -> None:
    monkeypatch.setenv("SHOPSTREAM_TOPIC", "no-such-topic-for-the-checks")
    lag = _evaluate(defs)["consumer_lag"]
    assert not lag.passed and lag.severity == dg.AssetCheckSeverity.ERROR
    assert lag.description == f"topic no-such-topic-for-the-checks does not exist on {kafka_bootstrap}"
