"""The ingest lag the Live Stream page shows: which topic and broker, and how far Bronze is behind it.

The broker is read with the SHOPSTREAM_KAFKA_* client settings (``shopstream.kafka_clients``), as
every other Kafka client is, so a cluster that wants SASL or TLS shows its lag too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

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
    broker = queries.broker_watermarks(settings.kafka_bootstrap, settings.topic)
    if broker is None:
        refused = f" or refused user {settings.kafka_user!r}" if settings.kafka_user else ""
        return IngestLag(None, f"The broker at {settings.kafka_bootstrap} did not answer{refused}; lag unknown.")
    if not broker:
        return IngestLag(None, f"Topic {settings.topic!r} does not exist on {settings.kafka_bootstrap} yet.")
    behind = messages_behind(broker, queries.committed_offsets(settings.topic))
    worst = max(behind, key=lambda partition: behind[partition])
    return IngestLag(
        sum(behind.values()),
        f"Broker end offsets minus Bronze's committed offsets over {len(broker)} partitions of "
        f"{settings.topic!r}; most behind: partition {worst} ({behind[worst]:,}).",
    )
