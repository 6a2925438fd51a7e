"""What the benchmarks measure from the Bronze ledger (``shopstream bench ingest`` and ``freshness``).

These read a benchmark's own topic whole, per batch and per event: they run once per
benchmark, on a topic younger than the ledger's roll-up age. Re-exported by :mod:`streaming.ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

_DRAIN_TIMING_SQL = """
select sum(messages_consumed), extract(epoch from max(committed_at) - min(started_at)),
       extract(epoch from min(committed_at) - min(started_at)),
       (array_agg(messages_consumed order by batch_id))[1]
from bronze.ingest_batches
where kafka_topic = %(topic)s
"""

_MESSAGES_CONSUMED_SQL = """
select coalesce(sum(messages_consumed), 0)
from bronze.ingest_batches
where kafka_topic = %(topic)s and committed_at <= coalesce(to_timestamp(%(until)s), 'infinity')
"""

# Per event, its batch's commit time minus the producer's send time (the sent_at_ms header).
_COMMIT_LATENCY_SQL = """
select count(*), percentile_cont(0.50) within group (order by seconds),
       percentile_cont(0.95) within group (order by seconds),
       percentile_cont(0.99) within group (order by seconds), max(seconds)
from (
    select extract(epoch from batches.committed_at - events.sent_at) as seconds
    from bronze.clickstream_events as events
    join bronze.ingest_batches as batches using (batch_id)
    where events.kafka_topic = %(topic)s
) as latencies
"""

_EVENTS_WITH_COMMIT_TIME_SQL = """
select (events.event_timestamp at time zone 'UTC')::date, events.batch_id,
       extract(epoch from events.sent_at), extract(epoch from batches.committed_at)
from bronze.clickstream_events as events
join bronze.ingest_batches as batches using (batch_id)
where events.kafka_topic = %(topic)s and events.sent_at >= to_timestamp(%(since)s)
"""

_BATCH_COMMIT_TIMES_SQL = """
select batch_id, extract(epoch from committed_at)::float8
from bronze.ingest_batches
where kafka_topic = %(topic)s
"""


@dataclass(frozen=True)
class DrainTiming:
    """A topic's ledger as one drain: first batch start -> last batch commit, and the first batch alone."""

    messages: int
    seconds: float
    first_batch_seconds: float
    first_batch_messages: int


def drain_timing(conn: psycopg.Connection, topic: str) -> DrainTiming:
    messages, seconds, first_batch_seconds, first_batch_messages = conn.execute(
        _DRAIN_TIMING_SQL, {"topic": topic}
    ).fetchone()
    return DrainTiming(messages, float(seconds), float(first_batch_seconds), first_batch_messages)


def messages_consumed(conn: psycopg.Connection, topic: str, committed_by: float | None = None) -> int:
    """Messages of ``topic`` in batches committed by ``committed_by`` (epoch seconds; None: all)."""
    (messages,) = conn.execute(_MESSAGES_CONSUMED_SQL, {"topic": topic, "until": committed_by}).fetchone()
    return messages


def commit_latency_percentiles(conn: psycopg.Connection, topic: str) -> tuple[int, float, float, float, float]:
    """(events, p50, p95, p99, max) seconds from an event's send to its batch's commit."""
    return conn.execute(_COMMIT_LATENCY_SQL, {"topic": topic}).fetchone()


def events_with_commit_time(conn: psycopg.Connection, topic: str, since: float) -> list[tuple]:
    """(event day, batch_id, sent_at, committed_at) of each event of ``topic`` sent since ``since``."""
    return conn.execute(_EVENTS_WITH_COMMIT_TIME_SQL, {"topic": topic, "since": since}).fetchall()


def batch_commit_times(conn: psycopg.Connection, topic: str) -> dict[int, float]:
    """batch_id -> commit time (epoch seconds) of every batch of ``topic``."""
    return dict(conn.execute(_BATCH_COMMIT_TIMES_SQL, {"topic": topic}).fetchall())
