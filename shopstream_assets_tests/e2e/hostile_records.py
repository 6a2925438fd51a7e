"""Hostile Kafka records for the verdict tests: record timestamps at the edges of event_timestamp's
window, hostile ``sent_at_ms`` headers, strings at their length limits (issue 30)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from shopstream_assets_tests.e2e.hostile_json import ODD_SENT_AT_VALUES
from streaming.events import (
    EARLIEST_EVENT_TIME,
    LENGTH_LIMITS,
    MAX_AHEAD_OF_BROKER,
    MAX_SENT_AT_MS,
    SENT_AT_HEADER,
    encode_event,
    format_timestamp,
    from_epoch_ms,
)

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Record:
    """One Kafka record as the source gives it: value, headers and the record's timestamp."""

    value: bytes | None
    headers: Headers
    timestamp: datetime


def producer_record(value: bytes | None, timestamp: datetime | None = None) -> Record:
    """A record as the producer sends it: its send time as the only header, stamped at that time."""
    moment = timestamp or datetime.now(UTC).replace(microsecond=0)
    return Record(value, [(SENT_AT_HEADER, str(int(moment.timestamp() * 1000)).encode())], moment)


# Record timestamps (Kafka's are milliseconds): a fixed "now" (both sides are given it, so the
# examples stay the same on every run), any time since 1999, and the odd ones a producer's
# CreateTime can carry (-1 is Kafka's "none", 1970, before the window opens).
PROPERTY_NOW = datetime(2026, 12, 7, 4, 0, 0, 250000, tzinfo=UTC)
record_timestamps = st.one_of(
    st.just(PROPERTY_NOW),
    st.just(PROPERTY_NOW),
    st.datetimes(min_value=datetime(1999, 12, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)).map(
        lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    ),
    st.sampled_from([from_epoch_ms(-1), from_epoch_ms(0), EARLIEST_EVENT_TIME - MAX_AHEAD_OF_BROKER]),
)
# How far from a window edge an event lands: on it, a microsecond either side, and further.
EDGE_OFFSETS = [timedelta(microseconds=n) for n in (0, 0, -1, 1, -1_000, 1_000, -1_000_000, 1_000_000, -3.6e9, 3.6e9)]


def iso_micros(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def valid_timestamps(record_timestamp: datetime) -> st.SearchStrategy[str]:
    """Moments in the window, anywhere from 2000 to 2100, and at both edges of the window."""
    latest = max(datetime(2000, 1, 2), (record_timestamp + MAX_AHEAD_OF_BROKER).replace(tzinfo=None))
    inside = st.datetimes(min_value=datetime(2000, 1, 1), max_value=latest, timezones=st.just(UTC))
    anywhere = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
    edge = st.tuples(
        st.sampled_from([EARLIEST_EVENT_TIME, record_timestamp + MAX_AHEAD_OF_BROKER]), st.sampled_from(EDGE_OFFSETS)
    ).map(lambda pair: pair[0] + pair[1])
    return st.one_of(inside.map(format_timestamp), anywhere.map(format_timestamp), edge.map(iso_micros))


# Header lists: the producer's own (most), none, several, and any bytes in sent_at_ms.
header_values = st.one_of(
    st.sampled_from(ODD_SENT_AT_VALUES),
    st.binary(max_size=24),
    st.integers(min_value=-(10**20), max_value=10**20).map(lambda number: str(number).encode()),
    st.integers(min_value=0, max_value=MAX_SENT_AT_MS + 10).map(lambda number: str(number).encode()),
)
hostile_headers = st.lists(
    st.tuples(st.sampled_from([SENT_AT_HEADER, SENT_AT_HEADER, "trace", "SENT_AT_MS"]), header_values),
    max_size=3,
)


# Strings at, or one past, their field's limit: 4-byte characters at the limit, ASCII past it.
at_length_limits = st.one_of(
    st.just({}),
    st.just({}),
    st.sampled_from([name for name, _ in LENGTH_LIMITS if name not in ("event_type", "event_timestamp")]).flatmap(
        lambda name: st.sampled_from(
            [{name: "\U0001f600" * dict(LENGTH_LIMITS)[name]}, {name: "x" * (dict(LENGTH_LIMITS)[name] + 1)}]
        )
    ),
)


def near_window_edges(values: list[bytes | None], rng: random.Random, now: datetime) -> list[bytes | None]:
    """About 3% of the events moved to an edge of event_timestamp's window: 2000-01-01 to the
    microsecond, or an hour either side of a day after ``now`` (the records are stamped a few
    seconds later, and the run's other checks judge them against the present within the hour)."""
    moved: list[bytes | None] = []
    for value in values:
        if value is not None and rng.random() < 0.03:
            if rng.random() < 0.5:
                moment = EARLIEST_EVENT_TIME + timedelta(microseconds=rng.choice([-1, 0, 1, -1000, 1000]))
            else:
                moment = now + MAX_AHEAD_OF_BROKER + timedelta(hours=rng.choice([-1, 1]))
            try:
                event = json.loads(value)
                if isinstance(event, dict) and "event_timestamp" in event:
                    value = encode_event({**event, "event_timestamp": iso_micros(moment)})
            except ValueError:  # not JSON, or JSON encode_event refuses (NaN): left as it is
                pass
        moved.append(value)
    return moved


def fuzz_headers(count: int, rng: random.Random) -> list[list[tuple[str, bytes | None]]]:
    """The producer's header on most messages; on 5%, none, several, or any bytes in sent_at_ms."""
    now_ms = str(int(time.time() * 1000)).encode()
    header_lists: list[list[tuple[str, bytes | None]]] = []
    for _ in range(count):
        if rng.random() >= 0.05:
            header_lists.append([(SENT_AT_HEADER, now_ms)])
            continue
        header_lists.append(
            [
                (rng.choice([SENT_AT_HEADER, SENT_AT_HEADER, "trace"]), rng.choice([*ODD_SENT_AT_VALUES, now_ms]))
                for _ in range(rng.randrange(4))
            ]
        )
    return header_lists


# The Kafka source's columns, as spark.readStream.format("kafka") with includeHeaders gives them.
KAFKA_SOURCE_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp,"
    " timestampType int, headers array<struct<key:string,value:binary>>"
)
PARTITIONS = 3


def kafka_source_frame(spark: Any, topic: str, values: Sequence[bytes | None | Record]) -> Any:
    return kafka_source_frame_of_topics(spark, [(topic, values)])


def kafka_source_frame_of_topics(spark: Any, topics: Sequence[tuple[str, Sequence[bytes | None | Record]]]) -> Any:
    """One frame holding several topics' records; the record at ``index`` of a topic is at partition
    ``index % PARTITIONS``, offset ``index // PARTITIONS`` (so its index can be read back)."""
    rows = []
    for topic, values in topics:
        records = [value if isinstance(value, Record) else producer_record(value) for value in values]
        rows += [
            (b"key-%d" % index, record.value, topic, index % PARTITIONS, index // PARTITIONS, record.timestamp, 0,
             record.headers)
            for index, record in enumerate(records)
        ]  # fmt: skip
    return spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA)
