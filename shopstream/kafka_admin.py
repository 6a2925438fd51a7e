"""Topic administration and offset reading against the Kafka broker.

Every client here is configured by ``shopstream.kafka_clients``: ``security`` when given, else
the process's SHOPSTREAM_KAFKA_* settings, so a cluster that wants SASL or TLS gets them.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from shopstream.kafka_clients import client_config
from shopstream.settings import KafkaSecurity

# The reference system keeps a week of clickstream.
RETENTION_MS = 7 * 24 * 3600 * 1000
# On a cluster of three brokers or more, unless it says otherwise.
MULTI_NODE_REPLICAS = 3
MULTI_NODE_MIN_INSYNC = 2


class TopicRefusedError(RuntimeError):
    """An existing topic the pipeline cannot use as it is configured; the message says what to change."""


def ensure_topic(
    bootstrap: str, topic: str, partitions: int, *, timeout: float = 30, security: KafkaSecurity | None = None
) -> bool:
    """Create ``topic`` unless it exists; return True when it was created.

    An existing topic whose ``cleanup.policy`` includes ``compact`` is refused
    (:class:`TopicRefusedError`): compaction keeps the newest message per key, and the
    clickstream is keyed by session, so it would keep one event per session and leave gaps
    in the offsets Bronze follows.
    """
    admin = AdminClient(client_config(bootstrap, security))
    if topic in admin.list_topics(timeout=timeout).topics:
        refuse_compacted(admin, bootstrap, topic, timeout=timeout)
        return False
    factor, config = replication_for(admin, timeout=timeout)
    spec = NewTopic(topic, num_partitions=partitions, replication_factor=factor, config=config)
    future = admin.create_topics([spec], operation_timeout=timeout)[topic]
    try:
        future.result(timeout)
    except KafkaException as error:
        # Another process created it between our look and our create: that is fine.
        if "TOPIC_ALREADY_EXISTS" not in str(error):
            raise
        refuse_compacted(admin, bootstrap, topic, timeout=timeout)
        return False
    return True


def replication_for(admin: AdminClient, *, timeout: float = 30) -> tuple[int, dict[str, str]]:
    """(replication factor, topic config) for a new topic.

    The cluster's own defaults (-1: its ``default.replication.factor``) unless it has three or more
    brokers and left ``default.replication.factor`` at Kafka's built-in 1: then 3 replicas, 2 of
    them in sync (unless it sets ``min.insync.replicas``), so that an acknowledged event (the
    producer is idempotent, hence acks=all) survives the loss of a broker. A cluster that does not
    let us read its broker configs keeps its own defaults.
    """
    config = {"retention.ms": str(RETENTION_MS)}
    brokers = sorted(admin.list_topics(timeout=timeout).brokers)
    if len(brokers) < MULTI_NODE_REPLICAS:
        return -1, config
    resource = ConfigResource(ConfigResource.Type.BROKER, str(brokers[0]))
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
    except KafkaException:
        return -1, config
    if _set_by_cluster(entries.get("default.replication.factor")):
        return -1, config
    if not _set_by_cluster(entries.get("min.insync.replicas")):
        config["min.insync.replicas"] = str(MULTI_NODE_MIN_INSYNC)
    return MULTI_NODE_REPLICAS, config


def _set_by_cluster(entry: object) -> bool:
    """True when the broker's config sets the entry (not Kafka's built-in default)."""
    return getattr(entry, "value", None) is not None and not getattr(entry, "is_default", True)


def refuse_compacted(admin: AdminClient, bootstrap: str, topic: str, *, timeout: float = 30) -> None:
    """Raise :class:`TopicRefusedError` if ``topic``'s ``cleanup.policy`` includes ``compact``."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
    entry = configs.get("cleanup.policy")
    policy = entry.value if entry is not None and entry.value is not None else "delete"
    if "compact" not in {part.strip() for part in policy.split(",")}:
        return
    raise TopicRefusedError(
        f"topic {topic!r} on {bootstrap} has cleanup.policy={policy}: compaction keeps only the newest "
        "message per key, and the clickstream is keyed by session_id, so it would keep one event per session. "
        f"Set cleanup.policy=delete on it (kafka-configs.sh --bootstrap-server {bootstrap} --alter "
        f"--entity-type topics --entity-name {topic} --add-config cleanup.policy=delete), or set "
        "SHOPSTREAM_TOPIC to a topic of its own."
    )


def end_offsets(
    bootstrap: str, topic: str, *, timeout: float = 10, security: KafkaSecurity | None = None
) -> dict[int, int]:
    """High watermark (next offset to be written) of every partition of ``topic``."""
    marks = watermarks(bootstrap, topic, timeout=timeout, security=security)
    return {partition: high for partition, (_, high) in marks.items()}


def watermarks(
    bootstrap: str, topic: str, *, timeout: float = 10, security: KafkaSecurity | None = None
) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} watermarks of ``topic``; empty when the topic does not exist.

    Right after a topic is created its partitions may have no leader for a moment
    (NOT_LEADER_FOR_PARTITION), so the read is retried until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    consumer = offset_reader(bootstrap, security)
    try:
        while True:
            try:
                return read_watermarks(consumer, topic, timeout=max(1.0, deadline - time.monotonic()))
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def offset_reader(bootstrap: str, security: KafkaSecurity | None = None) -> Consumer:
    """A consumer that only reads offsets (no group membership, no commits); close it after use."""
    return Consumer(
        client_config(bootstrap, security, **{"group.id": "shopstream-offset-reader", "enable.auto.commit": False})
    )


def read_watermarks(consumer: Consumer, topic: str, *, timeout: float) -> dict[int, tuple[int, int]]:
    """:func:`watermarks` over a consumer the caller keeps (a long-lived lag watch)."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return {}
    return {
        partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        for partition in sorted(metadata.partitions)
    }
