"""No header stops the stream, and event_timestamp's window: Spark equals the reference at every edge.

``sent_at`` comes from whatever bytes a producer put in ``sent_at_ms``: the odd values of issue 30
(``10000000000000000`` overflowed ``timestamp_millis`` and failed the batch; ``300000000000000``
passed Spark as year 11476 and broke the Python reject writer) give null on both sides, and a
header never makes a message bad. event_timestamp must fall between 2000-01-01T00:00:00Z and a
day after the Kafka record's timestamp, both ends included, to the microsecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shopstream_assets_tests.e2e.hostile_json import ODD_SENT_AT_VALUES
from shopstream_assets_tests.streaming.conftest import good_event
from streaming.events import (
    EARLIEST_EVENT_TIME,
    MAX_AHEAD_OF_BROKER,
    MAX_SENT_AT_MS,
    SENT_AT_HEADER,
    RejectReason,
    encode_event,
    format_timestamp,
    from_epoch_ms,
    parse_sent_at_ms,
    sent_at_from_headers,
    validate_message,
)
from streaming.transforms import parse_and_validate

# The Kafka source's columns that parse_and_validate reads, the record timestamp included.
KAFKA_SCHEMA_WITH_TIMESTAMP = (
    "value binary, topic string, partition int, offset long, timestamp timestamp,"
    " headers array<struct<key:string,value:binary>>"
)
Headers = list[tuple[str, bytes | None]]


def frame(spark: Any, values: Sequence[bytes | None], timestamps: Sequence[datetime], headers: Sequence[Headers]):
    rows = [
        (value, "clicks", 0, offset, moment, header_list)
        for offset, (value, moment, header_list) in enumerate(zip(values, timestamps, headers, strict=True))
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA_WITH_TIMESTAMP)


def test_odd_sent_at_headers_give_null_sent_at_on_both_sides_and_never_a_reject(spark: Any) -> None:
    header_lists: list[Headers] = [[(SENT_AT_HEADER, value)] for value in ODD_SENT_AT_VALUES]
    header_lists += [
        [],
        [(SENT_AT_HEADER, b"1767450225500"), (SENT_AT_HEADER, b"x")],  # several: the first counts
        [(SENT_AT_HEADER, b"x"), (SENT_AT_HEADER, b"1767450225500")],
        [("trace", b"\xff"), (SENT_AT_HEADER, b"300000000000000"), (SENT_AT_HEADER, b"1")],
        [("trace", None), (SENT_AT_HEADER, None)],
        [("SENT_AT_MS", b"1767450225500")],  # keys are case-sensitive
    ]
    good = encode_event(good_event())
    values: list[bytes | None] = [good] * len(header_lists) + [b"x"] * len(header_lists)
    header_lists = header_lists + header_lists
    now = datetime.now(UTC)
    rows = sorted(
        parse_and_validate(frame(spark, values, [now] * len(values), header_lists)).toArrow().to_pylist(),
        key=lambda row: row["kafka_offset"],
    )
    expected = [sent_at_from_headers(header_list) for header_list in header_lists]
    assert [row["sent_at"] for row in rows] == expected
    assert [row["reject_reason"] for row in rows] == [None] * (len(values) // 2) + ["malformed_json"] * (
        len(values) // 2
    )
    legible = {from_epoch_ms(1_767_450_225_500), from_epoch_ms(MAX_SENT_AT_MS), from_epoch_ms(0)}
    assert {moment for moment in expected if moment is not None} == legible


def test_parse_sent_at_ms_is_digits_within_the_window() -> None:
    assert parse_sent_at_ms(b"1767450225500") == datetime(2026, 1, 3, 14, 23, 45, 500000, tzinfo=UTC)
    assert parse_sent_at_ms(b"0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_sent_at_ms(str(MAX_SENT_AT_MS).encode()) == datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    for value in ODD_SENT_AT_VALUES[:8]:
        assert parse_sent_at_ms(value) is None, value


def test_the_timestamp_window_edges_to_the_microsecond(spark: Any) -> None:
    broker = datetime(2026, 12, 7, 4, 0, 0, 123000, tzinfo=UTC)
    latest = broker + MAX_AHEAD_OF_BROKER
    micro = timedelta(microseconds=1)
    cases: list[tuple[datetime, datetime, RejectReason | None]] = [
        (EARLIEST_EVENT_TIME, broker, None),
        (EARLIEST_EVENT_TIME - micro, broker, RejectReason.TIMESTAMP_OUT_OF_RANGE),
        (latest, broker, None),
        (latest + micro, broker, RejectReason.TIMESTAMP_OUT_OF_RANGE),
        (latest - micro, broker, None),
        (broker, broker, None),
        (datetime(2026, 1, 3, tzinfo=UTC), broker, None),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), broker, RejectReason.TIMESTAMP_OUT_OF_RANGE),
        # A record stamped before 1970 (Kafka's -1 means "none") or before 2000 leaves no window open.
        (EARLIEST_EVENT_TIME, from_epoch_ms(-1), RejectReason.TIMESTAMP_OUT_OF_RANGE),
        (datetime(1970, 1, 2, tzinfo=UTC), from_epoch_ms(0), RejectReason.TIMESTAMP_OUT_OF_RANGE),
        (EARLIEST_EVENT_TIME, EARLIEST_EVENT_TIME - MAX_AHEAD_OF_BROKER, None),
        (EARLIEST_EVENT_TIME + micro, EARLIEST_EVENT_TIME - MAX_AHEAD_OF_BROKER, RejectReason.TIMESTAMP_OUT_OF_RANGE),
        # A record stamped in the far future bounds nothing below it.
        (latest, datetime(9999, 12, 31, tzinfo=UTC), None),
    ]
    texts = [format_timestamp(moment)[:-4] + f"{moment.microsecond:06d}Z" for moment, _, _ in cases]
    # An offset spelling of the same instant on either side of the window, too.
    texts += ["1999-12-31T23:00:00-01:00", "1999-12-31T22:59:59.999999-01:00"]
    brokers = [broker_time for _, broker_time, _ in cases] + [broker, broker]
    expected = [reason for _, _, reason in cases] + [None, RejectReason.TIMESTAMP_OUT_OF_RANGE]
    values = [encode_event(good_event(event_timestamp=text)) for text in texts]
    rows = sorted(
        parse_and_validate(frame(spark, values, brokers, [[]] * len(values))).toArrow().to_pylist(),
        key=lambda row: row["kafka_offset"],
    )
    wrong = []
    for text, broker_time, reason, value, row in zip(texts, brokers, expected, values, rows, strict=True):
        python = validate_message(value, broker_time).reason
        want = reason.value if reason else None
        if ((python.value if python else None), row["reject_reason"]) != (want, want):
            wrong.append(f"{text} vs record {broker_time}: want {want}, Python {python}, Spark {row['reject_reason']}")
    assert not wrong, "\n".join(wrong)
