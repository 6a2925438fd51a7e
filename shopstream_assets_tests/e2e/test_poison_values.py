"""Regression tests for what the hostile input found: each was one message that stopped the
stream for good, or got two verdicts (Spark's and Python's reference)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from shopstream import database
from shopstream_assets_tests.e2e.helpers import fetch
from shopstream_assets_tests.e2e.hostile_records import kafka_source_frame
from shopstream_assets_tests.streaming.conftest import good_event
from streaming.bronze_batch import write_batch
from streaming.events import encode_event, validate_message
from streaming.transforms import parse_and_validate


def _write_one(spark: Any, database_url: str, value: bytes) -> tuple[pa.Table, Any]:
    validated = parse_and_validate(kafka_source_frame(spark, "poison", [value, encode_event(good_event())])).toArrow()
    with database.connect(database_url, autocommit=True) as conn:
        return validated, write_batch(conn, validated, topic="poison")


@pytest.mark.parametrize(
    "timestamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"], ids=["year-10000", "year-0"]
)
def test_a_timestamp_beyond_python_datetime_is_rejected_not_a_poison_batch(
    spark: Any, database_url: str, timestamp: str
) -> None:
    """Spark casts it to year 10000 (or 0); write_batch's min_max().as_py() raised OverflowError,
    so foreachBatch failed on every retry and the stream stopped for good on one message."""
    value = encode_event(good_event(event_id="EVT_far_future", event_timestamp=timestamp))
    _, result = _write_one(spark, database_url, value)
    assert (result.messages_consumed, result.rows_written, result.rejects) == (2, 1, 1)
    assert fetch(database_url, "select reason from bronze.clickstream_rejects") == [("invalid_timestamp",)]
    assert validate_message(value).reason is not None and validate_message(value).reason.value == "invalid_timestamp"


def test_an_event_id_too_long_for_the_primary_key_is_rejected_not_a_poison_batch(spark: Any, database_url: str) -> None:
    """A 3,000-character event_id (9 KB of UTF-8) fails the Bronze primary key ('index row requires
    9016 bytes, maximum size is 8191'); BronzeSink retries it as an OperationalError, then the
    query fails on every restart: one message stops the stream for good."""
    long_id = "".join(chr(0x4E00 + (index * 7919) % 20_000) for index in range(3_000))
    value = encode_event(good_event(event_id=long_id))
    assert validate_message(value).accepted is False, "the reference accepts a 9 KB event_id"
    _, result = _write_one(spark, database_url, value)
    assert result.rejects == 1


def test_a_non_string_id_beside_a_nan_literal_is_rejected_not_accepted(spark: Any) -> None:
    """A NaN literal anywhere makes the variant probe fail; on a row that is not corrupt, a number
    or object in a string field then went unnoticed and the event was ACCEPTED with event_id '123'.
    A NaN literal is not JSON: the message is now malformed_json on both sides."""
    value = encode_event(good_event(event_id=123, user_id={"a": 1}))[:-1] + b',"extra":NaN}'
    assert validate_message(value).reason is not None and validate_message(value).reason.value == "malformed_json"
    (row,) = parse_and_validate(kafka_source_frame(spark, "nan-beside", [value])).select("reject_reason").collect()
    assert row.reject_reason == "malformed_json"


def test_a_number_beyond_double_range_in_a_string_field_is_wrong_type_not_accepted(spark: Any) -> None:
    """from_json turns 1e400 in a string column into the quoted text '"Infinity"', which the
    non-string probe's regex did not look at: the event was ACCEPTED with that event_id."""
    value = encode_event(good_event()).replace(b'"EVT_000000000001"', b"1e400")
    assert validate_message(value).reason is not None and validate_message(value).reason.value == "wrong_type"
    (row,) = parse_and_validate(kafka_source_frame(spark, "huge", [value])).select("reject_reason").collect()
    assert row.reject_reason == "wrong_type"


def test_deep_nesting_is_malformed_json_in_python_as_in_spark(spark: Any) -> None:
    """validate_message raised RecursionError (json.loads' recursion) where Spark says malformed_json."""
    value = b'{"event_id": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    (row,) = parse_and_validate(kafka_source_frame(spark, "deep", [value])).select("reject_reason").collect()
    assert row.reject_reason == "malformed_json"
    assert validate_message(value).reason is not None and validate_message(value).reason.value == "malformed_json"


def test_nesting_just_below_jackson_s_limit_gets_a_verdict_not_a_dead_jvm(spark: Any) -> None:
    """At 900-999 levels Jackson parses the value and Spark's schema_of_variant recursed past a
    1 MB thread stack: the StackOverflowError took the JVM down, and with it the stream, again
    on every restart. Task threads now get 16 MB (streaming.spark_session.TASK_THREAD_STACK)."""
    depth = 999
    values = [
        b'{"event_id": ' + b"[" * depth + b"]" * depth + b"}",
        b'{"event_id": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}",
    ]
    rows = parse_and_validate(kafka_source_frame(spark, "nearly-too-deep", values)).select("reject_reason").collect()
    assert [row.reject_reason for row in rows] == ["wrong_type", "wrong_type"]


def test_a_number_longer_than_1000_characters_gets_one_verdict(spark: Any) -> None:
    """Jackson refuses numbers over 1000 characters (malformed_json); Python accepted the same
    event (a price of 0.000...1 with 1,500 digits): Spark and the reference disagreed on acceptance."""
    value = encode_event(good_event()).replace(b"79.99", b"0." + b"0" * 1_500 + b"1")
    (row,) = parse_and_validate(kafka_source_frame(spark, "long-number", [value])).select("reject_reason").collect()
    verdict = validate_message(value)
    assert row.reject_reason == (verdict.reason.value if verdict.reason else None)
