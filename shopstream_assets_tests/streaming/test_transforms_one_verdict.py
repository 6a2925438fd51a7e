"""One verdict: the inputs Python's rules and Spark's once judged differently, pinned through both.

Each test is one difference the hostile-input tests used to set aside (``known_bug`` and
``documented_difference``, now deleted) or found once nothing was set aside. Every input goes
through the reference (:func:`streaming.events.validate_message`) AND the real Spark transform
(:func:`streaming.transforms.parse_and_validate` on the session's SparkSession), and both must
give the verdict written here: the same acceptance, the same reason and, for an accepted
message, the same stored values.

Deliberately broken, they fail (tried 2026-12-07 on a copy of the tree, then thrown away):
with Spark's integer rule undone (``integer_literal`` ignored: a 39-digit quantity is DOUBLE,
wrong_type), ``test_an_integer_over_38_digits_is_an_integer_on_both_sides`` and
``test_transforms.py::test_spark_rules_agree_with_the_reference`` failed; with Spark's end
check undone (the old "ends with '}'"), ``test_data_after_the_object_is_malformed_json_on_both_sides``
and ``test_spark_rules_agree_with_the_reference`` failed, Spark accepting ``{..} {..}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shopstream_assets_tests.streaming.conftest import good_event, kafka_frame
from streaming.events import (
    FIELD_NAMES,
    MAX_KEY_LENGTH,
    RejectReason,
    decode_json,
    encode_event,
    parse_timestamp,
    validate_message,
)
from streaming.transforms import parse_and_validate

GOOD = encode_event(good_event())


def with_extra(member: bytes) -> bytes:
    """The good event with one more member (``"name":value``) at the end."""
    return GOOD[:-1] + b"," + member + b"}"


def with_timestamp(text: str) -> bytes:
    return encode_event(good_event(event_timestamp=text))


def assert_one_verdict(spark: Any, cases: Sequence[tuple[bytes, RejectReason | None]]) -> None:
    """Python and Spark both give each message the expected verdict; accepted ones are stored alike."""
    values = [value for value, _ in cases]
    rows = sorted(
        parse_and_validate(kafka_frame(spark, values)).toArrow().to_pylist(), key=lambda row: row["kafka_offset"]
    )
    wrong: list[str] = []
    for (value, expected), row in zip(cases, rows, strict=True):
        verdict = validate_message(value)
        expected_reason = expected.value if expected else None
        python_reason = verdict.reason.value if verdict.reason else None
        if (python_reason, row["reject_reason"]) != (expected_reason, expected_reason):
            wrong.append(
                f"{value[-120:]!r}: expected {expected_reason}, Python {python_reason} ({verdict.detail}),"
                f" Spark {row['reject_reason']} ({row['reject_detail']})"
            )
        elif expected is None:
            event = decode_json(value.decode())
            stored = {name: row[name] for name in FIELD_NAMES if name not in ("event_timestamp", "quantity")}
            read = {name: event.get(name) for name in stored}
            read["product_price"] = float(read["product_price"])
            if stored != read or row["event_timestamp"] != parse_timestamp(event["event_timestamp"]):
                wrong.append(f"{value[-120:]!r}: stored {row}, Python reads {event}")
    assert not wrong, "\n".join(wrong)


def test_an_integer_over_38_digits_is_an_integer_on_both_sides(spark: Any) -> None:
    """Spark's variant types an integer over 38 digits DOUBLE, so Spark said wrong_type where
    Python reads an int: the int's own rules now apply on both sides."""
    assert_one_verdict(
        spark,
        [
            (encode_event(good_event(quantity=10**38)), RejectReason.INVALID_QUANTITY),  # 39 digits
            (encode_event(good_event(quantity=-(10**60))), RejectReason.INVALID_QUANTITY),
            (encode_event(good_event(schema_version=10**45)), RejectReason.UNSUPPORTED_SCHEMA_VERSION),
            (
                encode_event(good_event(quantity=None)).replace(b'"quantity":null', b'"quantity":1e40'),
                RejectReason.WRONG_TYPE,
            ),
            (encode_event(good_event(product_price=10**40)), RejectReason.INVALID_PRICE),
            (with_extra(b'"extra":' + b"7" * 60), None),
            (encode_event(good_event(quantity=10**20)), RejectReason.INVALID_QUANTITY),  # DECIMAL(21,0) as before
        ],
    )


def test_data_after_the_object_is_malformed_json_on_both_sides(spark: Any) -> None:
    """Jackson reads the first value and ignores the rest, so Spark accepted ``{..} {..}`` and
    ``{..}}``; Python's json said "Extra data". A message is ONE JSON object: malformed_json."""
    assert_one_verdict(
        spark,
        [
            (GOOD + b" " + GOOD, RejectReason.MALFORMED_JSON),
            (GOOD + GOOD, RejectReason.MALFORMED_JSON),
            (GOOD + b"\n" + GOOD, RejectReason.MALFORMED_JSON),
            (GOOD + b"}", RejectReason.MALFORMED_JSON),
            (GOOD + b"]}", RejectReason.MALFORMED_JSON),
            (GOOD + b",{}", RejectReason.MALFORMED_JSON),
            (GOOD + b',"x"]', RejectReason.MALFORMED_JSON),
            (GOOD + b" x}", RejectReason.MALFORMED_JSON),
            (GOOD + "\u00a0".encode(), RejectReason.MALFORMED_JSON),
            (GOOD + b" \r\n\t", None),
            # A '}' before the end (in a string, a nested object) takes the slow path: still one object.
            (encode_event(good_event(product_name="Braces {} and } inside")), None),
            (with_extra(b'"extra":{"a":{"b":[1,{}]}}'), None),
            (with_extra(b'"extra":{"a":{"b":[1,{}]}}') + b"}", RejectReason.MALFORMED_JSON),
        ],
    )


def test_duplicate_keys_are_duplicate_key_on_both_sides(spark: Any) -> None:
    """The variant probe refuses duplicate keys, Python's json keeps the last value: Spark said
    wrong_type without a field where Python accepted. Which value counts is ambiguous: the
    message is rejected as duplicate_key (at any depth), before any field rule."""
    assert_one_verdict(
        spark,
        [
            (with_extra(b'"device_type":"Desktop"'), RejectReason.DUPLICATE_KEY),
            (with_extra(b'"event_id":"EVT_000000000001"'), RejectReason.DUPLICATE_KEY),
            (
                encode_event(good_event(event_type="page_view", quantity=None))[:-1] + b',"quantity":null}',
                RejectReason.DUPLICATE_KEY,
            ),
            (with_extra(b'"extra":1,"extra":2'), RejectReason.DUPLICATE_KEY),
            (with_extra(b'"extra":{"a":1,"a":2}'), RejectReason.DUPLICATE_KEY),
            (with_extra(b'"extra":[{"a":[{"b":1,"b":null}]}]'), RejectReason.DUPLICATE_KEY),
            (with_extra(b'"user_id" : "u:1" , "user_id":"u:2"'), RejectReason.DUPLICATE_KEY),
            (with_extra(b'"extra":"a\\"b","extra":"c"'), RejectReason.DUPLICATE_KEY),  # a backslash: always probed
            (encode_event(good_event(event_id={"a": 1}))[:-1] + b',"extra":{"k":1,"k":1}}', RejectReason.DUPLICATE_KEY),
            (GOOD.replace(b'"quantity":2', b'"quantity":"2","quantity":3'), RejectReason.DUPLICATE_KEY),  # corrupt row
            # Not one object first: an array of objects with duplicate keys is malformed_json.
            (b"[" + with_extra(b'"extra":1,"extra":2') + b"]", RejectReason.MALFORMED_JSON),
            (b'[{"event_timestamp":"x","event_timestamp":"y"}]', RejectReason.MALFORMED_JSON),
            # Not duplicates: the same name in different objects, colons in values.
            (with_extra(b'"extra":{"event_id":"x","quantity":null}'), None),
            (encode_event(good_event(product_name="Book: a: b", user_id="u:1")), None),
            (encode_event(good_event(event_type="page_view", quantity=None)), None),
        ],
    )


def test_nan_and_infinity_literals_are_malformed_json_on_both_sides(spark: Any) -> None:
    """Both parsers took NaN/Infinity literals, but the variant probe did not: a "123" string
    field beside a NaN was wrong_type in Spark and accepted by Python, and Jackson also took
    +Infinity and -INF, which Python refuses. They are not JSON: malformed_json on both sides."""
    user_id_123 = encode_event(good_event(user_id="123"))
    assert_one_verdict(
        spark,
        [
            (user_id_123[:-1] + b',"extra":NaN}', RejectReason.MALFORMED_JSON),
            (GOOD.replace(b"79.99", b"NaN"), RejectReason.MALFORMED_JSON),
            (GOOD.replace(b"79.99", b"Infinity"), RejectReason.MALFORMED_JSON),
            (GOOD.replace(b"79.99", b"-Infinity"), RejectReason.MALFORMED_JSON),
            (with_extra(b'"extra":[1,+Infinity]'), RejectReason.MALFORMED_JSON),
            (with_extra(b'"extra":-INF'), RejectReason.MALFORMED_JSON),
            (with_extra(b'"extra":{"a":NaN,"a":1}'), RejectReason.MALFORMED_JSON),  # malformed before duplicate
            (user_id_123, None),
            (encode_event(good_event(product_name="NaN", country="Infinity")), None),
            (GOOD.replace(b"79.99", b'"NaN"'), RejectReason.WRONG_TYPE),
            (GOOD.replace(b"79.99", b"1e400"), RejectReason.INVALID_PRICE),  # valid JSON, beyond double range
        ],
    )


def test_one_timestamp_shape_on_both_sides(spark: Any) -> None:
    """Python's fromisoformat took ISO-8601 basic and week dates, an hour alone and a space
    before the offset, which Spark's cast does not: both now require TIMESTAMP_PATTERN."""
    assert_one_verdict(
        spark,
        [
            (with_timestamp("20260103T142345Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("20260103T14:23:45Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-W01-1T14:23:45Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026W011T142345Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-01-03T14Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-01-03T1423Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-01-03T14:23:45 +01:00"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-01-03T14:23:45.Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-01-03T14:23:45.1234567891Z"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-01-03T14:23:45Z\n"), RejectReason.INVALID_TIMESTAMP),
            (with_timestamp("2026-01-03T14:23:45.123456789Z"), None),
            (with_timestamp("2026-01-03t14:23,5+0100"), None),
            (with_timestamp("2026-01-03 14:23:45-05"), None),
            (with_timestamp("2026-01-03T14:23+01:00:30"), None),
        ],
    )
    assert parse_timestamp("2026-01-03t14:23,5+0100") == datetime(2026, 1, 3, 13, 23, 0, 500000, tzinfo=UTC)


def test_a_key_over_50000_characters_is_malformed_json_on_both_sides(spark: Any) -> None:
    """Found once nothing was set aside: Jackson refuses an object key over 50,000 characters
    (its maxNameLength), Python's json took it. The reference refuses it too."""
    assert_one_verdict(
        spark,
        [
            (with_extra(b'"extra":{"' + b"k" * (MAX_KEY_LENGTH + 1) + b'":1}'), RejectReason.MALFORMED_JSON),
            (with_extra(b'"' + b"k" * (MAX_KEY_LENGTH + 1) + b'":1'), RejectReason.MALFORMED_JSON),
            (with_extra(b'"extra":{"' + b"k" * MAX_KEY_LENGTH + b'":1}'), None),
            (with_extra(('"extra":{"' + "é" * 30_000 + '":1}').encode()), None),  # characters, not bytes
            # ... as Java counts them, in UTF-16 code units: an emoji is two
            (
                with_extra(('"extra":{"' + "\U0001f600" * (MAX_KEY_LENGTH // 2 + 1) + '":1}').encode()),
                RejectReason.MALFORMED_JSON,
            ),
            (with_extra(('"extra":{"' + "\U0001f600" * (MAX_KEY_LENGTH // 2) + '":1}').encode()), None),
        ],
    )
