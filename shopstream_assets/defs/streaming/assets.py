"""The clickstream as it moves: the Kafka topic and the Bronze table the Spark stream fills."""

import dagster as dg

from shopstream.settings import load_settings
from shopstream_assets.defs.resources import KafkaResource, PostgresResource, ShopstreamSparkResource

settings = load_settings()

# bronze/clickstream_events is bronze.clickstream_events; the checks, the sensor and the
# dashboard's lineage refer to it by this key.
BRONZE_KEY = dg.AssetKey(["bronze", "clickstream_events"])

kafka_clickstream = dg.AssetSpec(
    key=dg.AssetKey(["kafka", "ecommerce_clickstream"]),
    description=f"Kafka topic `{settings.topic}`: raw clickstream events from the shopper simulator, keyed by session.",
    group_name="streaming",
    kinds={"kafka"},
    owners=["team:data-engineering"],
    metadata={"topic": settings.topic, "partitions": settings.topic_partitions, "retention": "7 days"},
)


@dg.asset(
    key=BRONZE_KEY,
    deps=[kafka_clickstream],
    description=(
        "Validated clickstream events in PostgreSQL (`bronze.clickstream_events`), exactly once per Kafka "
        "offset; rejects in `bronze.clickstream_rejects`, one ledger row per batch in `bronze.ingest_batches`. "
        "The Spark stream writes it continuously (the Bronze sensor records each batch range here); "
        "materializing it replays the topic beyond the ledger's offsets in a Spark batch job."
    ),
    group_name="streaming",
    kinds={"spark", "postgres"},
    owners=["team:data-engineering"],
    metadata={"relation": "bronze.clickstream_events", "writer": "streaming/bronze_batch.py"},
)
def clickstream_events(
    context: dg.AssetExecutionContext,
    pyspark: ShopstreamSparkResource,
    postgres: PostgresResource,
    kafka: KafkaResource,
) -> dg.MaterializeResult:
    """Replay the topic into Bronze with the stream's own transforms and sink (idempotent)."""
    from streaming.job import replay_topic

    topic = kafka.topic_name()
    summary = replay_topic(
        pyspark.spark_session,
        load_settings(),
        database_url=postgres.url(),
        kafka_bootstrap=kafka.bootstrap_servers(),
        topic=topic,
    )
    context.log.info(
        f"replayed {topic}: {summary.messages:,} new messages -> {summary.rows_written:,} rows, "
        f"{summary.rejects:,} rejects, {summary.duplicates:,} duplicates, "
        f"{summary.already_committed:,} already in Bronze, in {summary.seconds:.1f} s"
    )
    batch_range = f"{summary.batch_ids[0]}-{summary.batch_ids[-1]}" if summary.batch_ids else "none"
    return dg.MaterializeResult(
        metadata={
            "source": "replay",
            "topic": topic,
            "messages": summary.messages,
            "rows_written": summary.rows_written,
            "rejects": summary.rejects,
            "duplicates": summary.duplicates,
            "already_committed": summary.already_committed,
            "batch_range": batch_range,
            "chunks": summary.chunks,
            "seconds": dg.MetadataValue.float(round(summary.seconds, 2)),
        }
    )
