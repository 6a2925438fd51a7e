"""The clickstream as it moves: the Kafka topic and the Bronze table the Spark stream fills."""

import dagster as dg

from shopstream_assets.lib.settings import load_settings

settings = load_settings()

kafka_clickstream = dg.AssetSpec(
    key=dg.AssetKey(["kafka", "ecommerce_clickstream"]),
    description=f"Kafka topic `{settings.topic}`: raw clickstream events from the shopper simulator, keyed by session.",
    group_name="streaming",
    kinds={"kafka"},
    owners=["team:data-engineering"],
    metadata={"topic": settings.topic, "partitions": settings.topic_partitions, "retention": "7 days"},
)
