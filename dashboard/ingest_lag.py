"""The ingest lag the Live Stream page shows: which topic and broker, and how far Bronze is behind it.

The broker is read with the SHOPSTREAM_KAFKA_* client settings (``shopstream.kafka_clients``), as
every other Kafka client is, so a cluster that wants SASL or TLS shows its lag too.

On a cluster each partition's offsets come from its own leader, so one broker down leaves some
partitions unreadable until the controller gives them new leaders (seconds). Each partition is
read on its own: the page then names the partitions it could not read and shows no lag rather
than a sum over the others, which would look like a real figure and be too small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import streamlit as st

from dashboard import queries
from shopstream.settings import load_settings
from streaming.ledger import messages_behind


@dataclass(frozen=True)
class StreamSettings:
    topic: str
    kafka_bootstrap: str | None  # None: no broker configured or started
    # The SASL user the broker is read as (None: no authentication), named when the broker refuses.
    kafka_user: str | None = None


@dataclass(frozen=True)
class IngestLag:
    messages: int | None  # None: unknown (the broker did not answer)
    detail: str


@dataclass(frozen=True)
class BrokerOffsets:
    """What the brokers said of a topic: {partition: (low, high)} where its leader answered."""

    watermarks: dict[int, tuple[int, int]]
    unreadable: dict[int, str] = field(default_factory=dict)  # partition: the client's error
    exists: bool = True


@st.cache_data(ttl=queries.LIVE_TTL_SECONDS, show_spinner=False)
def broker_offsets(bootstrap: str, topic: str, timeout: float = 2) -> BrokerOffsets | None:
    """The topic's watermarks, partition by partition, from their leaders; None when no broker answers."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    from shopstream.kafka_clients import client_config

    admin = AdminClient(client_config(bootstrap, log_level=0))
    try:
        metadata = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException:
        return None
    if metadata is None or metadata.error is not None:
        return BrokerOffsets({}, exists=False)
    partitions = [TopicPartition(topic, partition) for partition in sorted(metadata.partitions)]
    lows = admin.list_offsets({tp: OffsetSpec.earliest() for tp in partitions}, request_timeout=timeout)
    highs = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=timeout)
    marks: dict[int, tuple[int, int]] = {}
    unreadable: dict[int, str] = {}
    for tp in partitions:
        try:
            low, high = lows[tp].result().offset, highs[tp].result().offset
        except KafkaException as error:
            unreadable[tp.partition] = error.args[0].str() if error.args else str(error)
            continue
        if low < 0 or high < 0:  # what the client gives, without an error, when the leader did not answer
            unreadable[tp.partition] = f"offset {min(low, high)} from the leader"
        else:
            marks[tp.partition] = (low, high)
    return BrokerOffsets(marks, unreadable)


@lru_cache(maxsize=4)
def _stream_settings(environment: tuple[tuple[str, str], ...]) -> StreamSettings:
    settings = load_settings(dict(environment))
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        from shopstream.embedded import ServiceError
        from shopstream.services import embedded_kafka

        try:  # one embedded broker, or the local cluster `services start --kafka-nodes N` runs
            bootstrap = embedded_kafka(settings).bootstrap
        except ServiceError:
            bootstrap = None
    return StreamSettings(settings.topic, bootstrap, settings.kafka_security.sasl_username)


def stream_settings() -> StreamSettings:
    """The topic and broker from the SHOPSTREAM_* environment (cached per environment)."""
    relevant = tuple(sorted((key, value) for key, value in os.environ.items() if key.startswith("SHOPSTREAM_")))
    return _stream_settings(relevant)


def ingest_lag() -> IngestLag:
    """Messages on the broker that Bronze has not committed yet (``streaming.ledger.messages_behind``)."""
    settings = stream_settings()
    if settings.kafka_bootstrap is None:
        return IngestLag(None, "No Kafka broker is configured (SHOPSTREAM_KAFKA_BOOTSTRAP) or started.")
    broker = broker_offsets(settings.kafka_bootstrap, settings.topic)
    if broker is None:
        refused = f" or refused user {settings.kafka_user!r}" if settings.kafka_user else ""
        return IngestLag(None, f"No broker at {settings.kafka_bootstrap} answered{refused}; lag unknown.")
    if not broker.exists:
        return IngestLag(None, f"Topic {settings.topic!r} does not exist on {settings.kafka_bootstrap} yet.")
    if broker.unreadable:
        listed = ", ".join(str(partition) for partition in sorted(broker.unreadable))
        first_error = broker.unreadable[min(broker.unreadable)]
        return IngestLag(
            None,
            f"Partitions {listed} of {settings.topic!r} gave no end offset (their leader's broker is down or a "
            f"new leader is being chosen: {first_error}); lag unknown until they do.",
        )
    behind = messages_behind(broker.watermarks, queries.committed_offsets(settings.topic))
    worst = max(behind, key=lambda partition: behind[partition])
    return IngestLag(
        sum(behind.values()),
        f"Broker end offsets minus Bronze's committed offsets over {len(behind)} partitions of "
        f"{settings.topic!r}; most behind: partition {worst} ({behind[worst]:,}).",
    )
