"""Checks on Bronze: its rows add up, few messages are rejected, and Bronze keeps up with Kafka.

The stream writes Bronze outside Dagster, so these run on a clock (defs/quality.py), after
an on-demand Bronze materialization and from the asset's Checks tab.
"""

import dagster as dg

from shopstream.kafka_admin import watermarks
from shopstream_assets.defs.resources import KafkaResource, PostgresResource
from shopstream_assets.defs.streaming.assets import BRONZE_KEY
from streaming.ledger import committed_offsets, messages_and_rejects_since, messages_behind, row_counts

# Real producers send a little broken data (the simulator's --bad-ratio imitates it); more than
# 5 % of a recent hour means a producer or the schema changed.
MAX_REJECT_RATE = 0.05
REJECT_RATE_WINDOW = "1 hour"
# Messages in Kafka not yet in Bronze. About ten seconds at the target rate of 1,000 events/s
# plus one full micro-batch; above it the stream is down or falling behind.
MAX_CONSUMER_LAG = 10_000


@dg.asset_check(
    asset=BRONZE_KEY,
    name="row_count",
    description=(
        "Bronze is not empty and holds exactly the rows its ledger says were written for the topic's "
        "batches of the last hour of ingest (events from the window's first batch_id on = "
        "sum(rows_written) of those batches); rows of older batches are not recounted."
    ),
    blocking=False,
)
def bronze_row_count(postgres: PostgresResource, kafka: KafkaResource) -> dg.AssetCheckResult:
    topic = kafka.topic_name()
    with postgres.connect() as conn:
        counts = row_counts(conn, topic)
    table_rows, ledger_rows, batches = counts.table_rows, counts.ledger_rows, counts.batches
    metadata = {
        "rows": table_rows,
        "ledger_rows_written": ledger_rows,
        "batches": batches,
        "topic": topic,
        "window_first_batch_id": counts.first_batch_id or 0,
        "ledger_rows_written_total": counts.total_rows_written,
    }
    if table_rows != ledger_rows:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"bronze.clickstream_events has {table_rows:,} rows but the ledger says {ledger_rows:,}",
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        passed=counts.total_rows_written > 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=None if counts.total_rows_written else f"no rows yet for topic {topic}",
        metadata=metadata,
    )


@dg.asset_check(
    asset=BRONZE_KEY,
    name="reject_rate",
    description=(
        f"At most {MAX_REJECT_RATE:.0%} of the messages committed in the last {REJECT_RATE_WINDOW} were rejected."
    ),
)
def bronze_reject_rate(postgres: PostgresResource, kafka: KafkaResource) -> dg.AssetCheckResult:
    topic = kafka.topic_name()
    with postgres.connect() as conn:
        messages, rejects = messages_and_rejects_since(conn, topic, REJECT_RATE_WINDOW)
        reasons = conn.execute(
            "select reason, count(*) from bronze.clickstream_rejects"
            " where kafka_topic = %s and ingested_at > now() - %s::interval"
            " group by reason order by 2 desc",
            (topic, REJECT_RATE_WINDOW),
        ).fetchall()
    rate = rejects / messages if messages else 0.0
    return dg.AssetCheckResult(
        passed=rate <= MAX_REJECT_RATE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "reject_rate": dg.MetadataValue.float(round(rate, 5)),
            "messages": messages,
            "rejects": rejects,
            "rejects_by_reason": dg.MetadataValue.json({reason: count for reason, count in reasons}),
        },
    )


@dg.asset_check(
    asset=BRONZE_KEY,
    name="consumer_lag",
    description=(
        f"Messages in Kafka not yet in Bronze stay under {MAX_CONSUMER_LAG:,}: the broker's end offsets "
        "against Bronze's next offsets in bronze.ingest_offsets. Spark commits no consumer-group "
        "offsets to Kafka, so no Kafka tool can show this lag."
    ),
)
def bronze_consumer_lag(postgres: PostgresResource, kafka: KafkaResource) -> dg.AssetCheckResult:
    topic = kafka.topic_name()
    broker = watermarks(kafka.bootstrap_servers(), topic, security=kafka.security())
    if not broker:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"topic {topic} does not exist on {kafka.bootstrap_servers()}",
        )
    with postgres.connect() as conn:
        committed = committed_offsets(conn, topic)
    lag_by_partition = {str(partition): lag for partition, lag in messages_behind(broker, committed).items()}
    total_lag = sum(lag_by_partition.values())
    return dg.AssetCheckResult(
        passed=total_lag <= MAX_CONSUMER_LAG,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "lag": total_lag,
            "lag_by_partition": dg.MetadataValue.json(lag_by_partition),
            "broker_end_offsets": dg.MetadataValue.json({str(p): high for p, (_, high) in sorted(broker.items())}),
            "bronze_end_offsets": dg.MetadataValue.json({str(p): o for p, o in sorted(committed.items())}),
        },
    )
