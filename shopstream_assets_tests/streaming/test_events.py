"""streaming.events: the reference rules' edges (Spark's agreement is test_transforms' CORPUS)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shopstream_assets_tests.streaming.conftest import good_event
from streaming.events import (
    DUPLICATE_KEY_DETAIL,
    EARLIEST_EVENT_TIME,
    EVENT_FIELDS,
    LENGTH_LIMITS,
    MAX_AHEAD_OF_BROKER,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_NESTING_DEPTH,
    MAX_NUMBER_DIGITS,
    NON_FINITE_LITERAL_DETAIL,
    TIMESTAMP_PATTERN,
    TRAILING_DATA_DETAIL,
    DuplicateKeyError,
    RejectReason,
    decode_json,
    encode_event,
    json_schema,
    parse_timestamp,
    validate_message,
)


def nested(depth: int) -> bytes:
    """A valid event whose extra field nests ``depth - 1`` arrays (the object is level 1)."""
    return encode_event(good_event())[:-1] + b',"extra":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def deep_in_the_stack(frames: int, action: Callable[[], Any]) -> Any:
    return action() if frames == 0 else deep_in_the_stack(frames - 1, action)


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "2026-01-03T14:23:45+18:01",  # Spark's timestamp cast takes offsets up to 18:00
        "2026-01-03T14:23:45+17:59:59.5",  # ... in whole seconds
    ],
)
def test_timestamps_spark_cannot_hold_are_invalid_not_an_overflow(text: str) -> None:
    assert parse_timestamp(text) is None
    assert validate_message(encode_event(good_event(event_timestamp=text))).reason is RejectReason.INVALID_TIMESTAMP


def test_the_extreme_timestamps_python_holds_are_valid() -> None:
    assert parse_timestamp("9999-12-31T23:59:59.999999Z") is not None
    assert parse_timestamp("0001-01-01T00:30:00-01:00") is not None
    assert parse_timestamp("2026-01-03T14:23:45-18:00") is not None


@pytest.mark.parametrize("name", ["event_id", "user_id", "session_id", "product_id"])
def test_ids_over_the_maximum_length_are_rejected(name: str) -> None:
    verdict = validate_message(encode_event(good_event(**{name: "会" * (MAX_ID_LENGTH + 1)})))
    assert verdict.reason is RejectReason.FIELD_TOO_LONG and verdict.detail.startswith(name)
    assert validate_message(encode_event(good_event(**{name: "会" * MAX_ID_LENGTH}))).accepted
    assert json_schema()["properties"][name]["maxLength"] == MAX_ID_LENGTH


def test_nesting_beyond_sparks_limit_is_malformed_json_never_a_recursion_error() -> None:
    recursion_limit = sys.getrecursionlimit()
    assert validate_message(nested(MAX_NESTING_DEPTH + 1)).reason is RejectReason.MALFORMED_JSON
    assert validate_message(b'{"event_id": ' + b"[" * 5_000 + b"]" * 5_000 + b"}").reason is (
        RejectReason.MALFORMED_JSON
    )
    # Spark takes 1000 levels; json's C scanner alone would raise RecursionError near there.
    assert validate_message(nested(MAX_NESTING_DEPTH)).accepted
    assert deep_in_the_stack(800, lambda: validate_message(nested(MAX_NESTING_DEPTH))).accepted
    assert decode_json(nested(MAX_NESTING_DEPTH).decode())["event_id"] == "EVT_000000000001"
    assert sys.getrecursionlimit() == recursion_limit


@pytest.mark.parametrize(
    ("number", "accepted"),
    [
        ("1" * MAX_NUMBER_DIGITS, True),
        ("-" + "1" * MAX_NUMBER_DIGITS, True),  # the sign is not a digit
        ("1" * (MAX_NUMBER_DIGITS + 1), False),
        ("1." + "5" * (MAX_NUMBER_DIGITS - 1), True),
        ("1." + "5" * MAX_NUMBER_DIGITS, False),
        ("1e-" + "0" * (MAX_NUMBER_DIGITS - 2) + "1", True),
        ("1e-" + "0" * (MAX_NUMBER_DIGITS - 1) + "1", False),
        # Jackson's leading-zero path counts an absent exponent or fraction as -1 digits.
        ("0." + "0" * (MAX_NUMBER_DIGITS - 1) + "1", True),
        ("0." + "0" * MAX_NUMBER_DIGITS + "1", False),
        ("0.5e" + "0" * (MAX_NUMBER_DIGITS - 3) + "1", True),
        ("0.5e" + "0" * (MAX_NUMBER_DIGITS - 2) + "1", False),
    ],
)
def test_numbers_over_sparks_digit_limit_are_malformed_json(number: str, accepted: bool) -> None:
    verdict = validate_message(encode_event(good_event())[:-1] + f',"extra":{number}}}'.encode())
    assert verdict.accepted is accepted, verdict
    if not accepted:
        assert verdict.reason is RejectReason.MALFORMED_JSON


def test_an_integer_price_beyond_double_range_is_invalid_not_an_overflow() -> None:
    assert validate_message(encode_event(good_event(product_price=10**400))).reason is RejectReason.INVALID_PRICE


def test_a_number_beyond_double_range_in_a_string_field_is_wrong_type() -> None:
    value = encode_event(good_event()).replace(b'"EVT_000000000001"', b"1e400")
    assert validate_message(value).reason is RejectReason.WRONG_TYPE


@pytest.mark.parametrize(
    ("text", "reason", "detail", "decode_error"),
    [
        ('{"a":1} {"a":1}', RejectReason.MALFORMED_JSON, TRAILING_DATA_DETAIL, ValueError),
        ('{"a":NaN}', RejectReason.MALFORMED_JSON, NON_FINITE_LITERAL_DETAIL, ValueError),
        ('{"a":1,"a":2}', RejectReason.DUPLICATE_KEY, DUPLICATE_KEY_DETAIL, DuplicateKeyError),
        ('{"b":[{"a":1,"a":2}]}', RejectReason.DUPLICATE_KEY, DUPLICATE_KEY_DETAIL, DuplicateKeyError),
        # Malformed text wins over a duplicate key wherever each is: one order, as Spark's.
        ('{"a":1,"a":2,"b":NaN}', RejectReason.MALFORMED_JSON, NON_FINITE_LITERAL_DETAIL, ValueError),
        ('{"b":NaN,"a":1,"a":2}', RejectReason.MALFORMED_JSON, NON_FINITE_LITERAL_DETAIL, ValueError),
        ('{"a":1,"a":2} x', RejectReason.MALFORMED_JSON, TRAILING_DATA_DETAIL, ValueError),
        ('{"a":1,"a":2,"' + "k" * (MAX_KEY_LENGTH + 1) + '":1}', RejectReason.MALFORMED_JSON, "a key over", ValueError),
        # Valid JSON with a duplicate key, but not an object: not an object comes first.
        ('[{"a":1,"a":2}]', RejectReason.MALFORMED_JSON, "JSON list, not an object", DuplicateKeyError),
    ],
)
def test_malformed_json_then_duplicate_keys_each_say_why(
    text: str, reason: RejectReason, detail: str, decode_error: type[ValueError]
) -> None:
    verdict = validate_message(text.encode())
    assert verdict.reason is reason and verdict.detail is not None and verdict.detail.startswith(detail), verdict
    with pytest.raises(ValueError) as raised:
        decode_json(text)
    assert type(raised.value) is decode_error or (
        decode_error is ValueError and not isinstance(raised.value, DuplicateKeyError)
    )


def test_a_key_of_exactly_the_maximum_length_is_accepted() -> None:
    assert decode_json('{"' + "k" * MAX_KEY_LENGTH + '":1}') == {"k" * MAX_KEY_LENGTH: 1}
    # Java counts UTF-16 code units: half as many emoji reach the limit.
    assert validate_message(('{"' + "\U0001f600" * (MAX_KEY_LENGTH // 2) + '":1}').encode()).reason is (
        RejectReason.MISSING_FIELD
    )
    assert validate_message(('{"' + "\U0001f600" * (MAX_KEY_LENGTH // 2 + 1) + '":1}').encode()).reason is (
        RejectReason.MALFORMED_JSON
    )


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("2026-01-03T14:23:45.123Z", True),
        ("2026-01-03t14:23,5+0100", True),
        ("2026-01-03 14:23:45-05", True),
        ("20260103T142345Z", False),  # basic format: fromisoformat takes it
        ("2026-W01-1T14:23:45Z", False),  # week date: fromisoformat takes it
        ("2026-01-03T14Z", False),
        ("2026-01-03T14:23:45 +01:00", False),
        ("2026-01-03T14:23:45Z\n", False),
        ("٢٠٢٦-01-03T14:23:45Z", False),  # digits are ASCII
    ],
)
def test_one_timestamp_shape(text: str, accepted: bool) -> None:
    assert (parse_timestamp(text) is not None) is accepted
    assert (re.fullmatch(TIMESTAMP_PATTERN, text) is not None) is accepted


def test_every_string_field_has_a_length_limit_and_a_reject_naming_it() -> None:
    strings = [field for field in EVENT_FIELDS if field.json_type == "string"]
    assert all(field.max_length for field in strings), [field.name for field in strings if not field.max_length]
    for field in strings:
        assert json_schema()["properties"][field.name]["maxLength"] == field.max_length
        verdict = validate_message(encode_event(good_event(**{field.name: "x" * (field.max_length + 1)})))
        assert verdict.reason is RejectReason.FIELD_TOO_LONG and verdict.detail.startswith(f"{field.name} is "), verdict
        if field.name not in ("event_type", "event_timestamp"):  # no valid value is that long
            # Characters, not bytes: a limit of 4-byte characters is accepted.
            at_limit = encode_event(good_event(**{field.name: "\U0001f600" * field.max_length}))
            assert validate_message(at_limit).accepted, field.name


# PostgreSQL's largest btree entry on an 8 KB page (BTMaxItemSize), less some room.
BTREE_ENTRY_BUDGET = 2_700
UNIQUE_INDEX = re.compile(r"\{\s*'columns':\s*\[([^\]]*)\],\s*'unique':\s*True\s*\}", re.DOTALL)
MODELS = Path(__file__).resolve().parents[2] / "dbt_project" / "models"


def btree_entry_bytes(columns: list[str]) -> int:
    """The widest entry of a unique index: strings at their limit in 4-byte UTF-8 characters."""
    limits = dict(LENGTH_LIMITS)
    size = 8  # the index tuple header
    for column in columns:
        # A long text: a 4-byte length word and its bytes; other columns are dates and numbers.
        size += 4 + 4 * limits[column] if column in limits else 8
    return size


def test_every_unique_index_of_silver_and_gold_holds_any_accepted_row() -> None:
    """A 4,000-character country passed validation and broke every dbt run on three Gold unique
    indexes (index row too big): each unique key, its strings at their limits, fits a btree entry."""
    keys = {
        (path.stem, tuple(column.strip(" '\n") for column in match.split(",")))
        for path in MODELS.rglob("*.sql")
        for match in UNIQUE_INDEX.findall(path.read_text())
    }
    names = {model for model, _ in keys}
    assert {"mart_product_daily", "mart_daily_segment_metrics", "mart_daily_segment_sessions"} <= names, names
    too_big = {(model, columns, btree_entry_bytes(list(columns))) for model, columns in keys}
    assert all(size <= BTREE_ENTRY_BUDGET for _, _, size in too_big), sorted(too_big, key=lambda item: -item[2])


def test_event_timestamp_window_is_2000_to_a_day_after_the_record() -> None:
    record = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)

    def reason(moment: datetime, broker: datetime | None = record) -> RejectReason | None:
        return validate_message(encode_event(good_event(event_timestamp=moment.isoformat())), broker).reason

    micro = timedelta(microseconds=1)
    assert reason(EARLIEST_EVENT_TIME) is None
    assert reason(EARLIEST_EVENT_TIME - micro) is RejectReason.TIMESTAMP_OUT_OF_RANGE
    assert reason(record + MAX_AHEAD_OF_BROKER) is None
    assert reason(record + MAX_AHEAD_OF_BROKER + micro) is RejectReason.TIMESTAMP_OUT_OF_RANGE
    # Without a record timestamp, the present moment bounds it.
    assert reason(datetime.now(UTC) + timedelta(hours=23), None) is None
    assert reason(datetime.now(UTC) + timedelta(hours=25), None) is RejectReason.TIMESTAMP_OUT_OF_RANGE
    verdict = validate_message(encode_event(good_event(event_timestamp="1970-01-01T00:00:00Z")), record)
    assert verdict.detail == "1970-01-01T00:00:00Z is before 2000-01-01T00:00:00Z"
