"""streaming.events: the reference rules' edges (Spark's agreement is test_transforms' CORPUS)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import pytest

from shopstream_assets_tests.streaming.conftest import good_event
from streaming.events import (
    DUPLICATE_KEY_DETAIL,
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
