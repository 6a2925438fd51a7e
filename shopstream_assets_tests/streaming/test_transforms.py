"""streaming.transforms: the Spark rules equal the pure-Python reference (streaming.events)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopstream_assets_tests.streaming.conftest import KAFKA_SCHEMA, good_event, kafka_frame, raw, without
from streaming.events import (
    FIELD_NAMES,
    LENGTH_LIMITS,
    MAX_ID_LENGTH,
    SENT_AT_HEADER,
    RejectReason,
    Repair,
    decode_json,
    encode_event,
    format_timestamp,
    validate_message,
)
from streaming.simulator import Simulator
from streaming.transforms import EVENT_COLUMNS, REJECT_COLUMNS, VALIDATED_COLUMNS, parse_and_validate

# Each (message, expected reason or None) pair: the varied corpus. Reasons come from the
# reference rules; the test checks the reference too, so a rule change shows here first.
CORPUS: list[tuple[bytes | None, RejectReason | None]] = [
    (encode_event(good_event()), None),
    (encode_event(good_event(event_type="page_view", quantity=None)), None),
    (without("quantity"), None),  # purchase without quantity: repaired
    (encode_event(good_event(quantity=None)), None),  # repaired
    (encode_event(good_event(event_type="add_to_cart", quantity=None)), RejectReason.INVALID_QUANTITY),
    (encode_event(good_event(product_name='Ẹ̀wà Agoyin — ₦ "quoted", comma\nnewline')), None),
    (encode_event(good_event(product_name="nul\u0000byte")), None),
    (encode_event(good_event(user_id="12345")), None),  # a digit string is still a string
    (encode_event(good_event(product_name="true")), None),
    (encode_event(good_event(product_name="{not json}")), None),
    (encode_event(good_event(product_price=0)), None),
    (encode_event(good_event(product_price=1_000_000_000)), None),
    (encode_event(good_event(quantity=100)), None),
    (encode_event({**good_event(), "extra_field": [1, 2]}), None),
    (b"  " + encode_event(good_event()) + b"\n", None),
    (encode_event(good_event(event_timestamp="2026-01-03T14:23:45Z")), None),
    (encode_event(good_event(event_timestamp="2026-01-03 14:23:45+01:00")), None),
    (encode_event(good_event(event_timestamp="2026-01-03T14:23:45.123456789Z")), None),
    (encode_event(good_event(event_timestamp="2026-01-03T14:23+0100")), None),
    (encode_event(good_event(event_timestamp="2026-01-03t14:23:45,5-03")), None),
    (encode_event(good_event(event_timestamp="2026-01-03T14:23:45+01:00:30")), None),
    (None, RejectReason.MALFORMED_JSON),
    (b"", RejectReason.MALFORMED_JSON),
    (b"   ", RejectReason.MALFORMED_JSON),
    (b"{truncated", RejectReason.MALFORMED_JSON),
    (encode_event(good_event())[:-5], RejectReason.MALFORMED_JSON),
    (str(good_event()).encode(), RejectReason.MALFORMED_JSON),  # a Python dict repr
    (b"[1, 2, 3]", RejectReason.MALFORMED_JSON),
    (b"[" + encode_event(good_event()) + b"]", RejectReason.MALFORMED_JSON),
    (b"42", RejectReason.MALFORMED_JSON),
    (b'"a string"', RejectReason.MALFORMED_JSON),
    (b"null", RejectReason.MALFORMED_JSON),
    (b"NaN", RejectReason.MALFORMED_JSON),
    (encode_event(good_event()) + b" trailing", RejectReason.MALFORMED_JSON),
    (encode_event(good_event())[:-1] + b",}", RejectReason.MALFORMED_JSON),
    (b"\xff\xfe" + encode_event(good_event()), RejectReason.INVALID_UTF8),
    (encode_event(good_event()).replace(b"Earbuds", b"Earb\xe9ds"), RejectReason.INVALID_UTF8),
    (encode_event(good_event(user_id=12345)), RejectReason.WRONG_TYPE),
    (encode_event(good_event(event_id=True)), RejectReason.WRONG_TYPE),
    (encode_event(good_event(country={"name": "Nigeria"})), RejectReason.WRONG_TYPE),
    (encode_event(good_event(device_type=["Mobile"])), RejectReason.WRONG_TYPE),
    (encode_event(good_event(product_price="4500.0")), RejectReason.WRONG_TYPE),
    (encode_event(good_event(product_price="NaN")), RejectReason.WRONG_TYPE),
    (encode_event(good_event(product_price=True)), RejectReason.WRONG_TYPE),
    (encode_event(good_event(quantity=2.0)), RejectReason.WRONG_TYPE),
    (encode_event(good_event(quantity=2.5)), RejectReason.WRONG_TYPE),
    (encode_event(good_event(quantity="2")), RejectReason.WRONG_TYPE),
    (encode_event(good_event(schema_version="1")), RejectReason.WRONG_TYPE),
    (encode_event(good_event(schema_version=1.0)), RejectReason.WRONG_TYPE),
    # the first wrong field in schema order is named, even after a missing one
    (encode_event(good_event(user_id=None, country=7)), RejectReason.WRONG_TYPE),
    (without("user_id"), RejectReason.MISSING_FIELD),
    (without("schema_version"), RejectReason.MISSING_FIELD),
    (without("product_price"), RejectReason.MISSING_FIELD),
    (encode_event(good_event(session_id="")), RejectReason.MISSING_FIELD),
    (encode_event(good_event(product_name="  \t ")), RejectReason.MISSING_FIELD),
    (encode_event(good_event(product_name="\u00a0\u2003")), RejectReason.MISSING_FIELD),
    (encode_event(good_event(event_id=None)), RejectReason.MISSING_FIELD),
    (b"{}", RejectReason.MISSING_FIELD),
    (encode_event(good_event(schema_version=2)), RejectReason.UNSUPPORTED_SCHEMA_VERSION),
    (encode_event(good_event(schema_version=10**20)), RejectReason.UNSUPPORTED_SCHEMA_VERSION),
    (encode_event(good_event(event_type="wishlist_add")), RejectReason.UNKNOWN_EVENT_TYPE),
    (encode_event(good_event(event_type="Purchase")), RejectReason.UNKNOWN_EVENT_TYPE),
    (encode_event(good_event(event_timestamp="not a date")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-01-03T14:23:45")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-01-03")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-13-03T14:23:45Z")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-02-30T14:23:45Z")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-01-03T14:23:45.123 UTC")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp=" 2026-01-03T14:23:45Z")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="1767450225")), RejectReason.INVALID_TIMESTAMP),
    # Python's fromisoformat takes any separator; the rule, like ISO-8601, only T, t or a space.
    (encode_event(good_event(event_timestamp="2026-01-03Z14:23:45.189Z")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-01-03é14:23:45+01:00")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-01-03\n14:23:45Z")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(product_price=-18499.99)), RejectReason.NEGATIVE_PRICE),
    # A NaN or Infinity literal is not JSON (Python's json writes it; strict JSON refuses it).
    (raw(product_price=math.nan), RejectReason.MALFORMED_JSON),
    (raw(product_price=math.inf), RejectReason.MALFORMED_JSON),
    (raw(product_price=-math.inf), RejectReason.MALFORMED_JSON),
    (b'{"product_price": 1e400}', RejectReason.MISSING_FIELD),
    (encode_event(good_event(product_price=1e12)), RejectReason.INVALID_PRICE),
    (encode_event(good_event(quantity=0)), RejectReason.INVALID_QUANTITY),
    (encode_event(good_event(quantity=-3)), RejectReason.INVALID_QUANTITY),
    (encode_event(good_event(quantity=101)), RejectReason.INVALID_QUANTITY),
    (encode_event(good_event(quantity=10**20)), RejectReason.INVALID_QUANTITY),
    # Ids: at most MAX_ID_LENGTH characters, counted as characters, not UTF-8 bytes.
    (encode_event(good_event(event_id="E" * MAX_ID_LENGTH)), None),
    (encode_event(good_event(user_id="é" * MAX_ID_LENGTH)), None),
    (encode_event(good_event(event_id="E" * (MAX_ID_LENGTH + 1))), RejectReason.FIELD_TOO_LONG),
    (encode_event(good_event(session_id="会" * 3_000)), RejectReason.FIELD_TOO_LONG),
    (encode_event(good_event(product_id="P" * 300, schema_version=2)), RejectReason.FIELD_TOO_LONG),
    (encode_event(good_event(user_id=" " * 300)), RejectReason.MISSING_FIELD),  # blank comes first
    # Every string field has its limit (streaming.events.EVENT_FIELDS' max_length).
    *(
        (encode_event(good_event(**{name: "\U0001f600" * limit})), None)
        for name, limit in LENGTH_LIMITS
        if name not in ("event_type", "event_timestamp")
    ),
    *(
        (encode_event(good_event(**{name: "x" * (limit + 1)})), RejectReason.FIELD_TOO_LONG)
        for name, limit in LENGTH_LIMITS
    ),
    (encode_event(good_event(country="会" * 4_000, event_type="x" * 4_000)), RejectReason.FIELD_TOO_LONG),
    # Timestamps: years 1-9999 after conversion to UTC, as Python's datetime holds them, are
    # timestamps; outside the window (2000 to a day after the record's timestamp) out of range.
    (encode_event(good_event(event_timestamp="9999-12-31T23:59:59.999999Z")), RejectReason.TIMESTAMP_OUT_OF_RANGE),
    (encode_event(good_event(event_timestamp="0001-01-01T00:30:00-01:00")), RejectReason.TIMESTAMP_OUT_OF_RANGE),
    (encode_event(good_event(event_timestamp="1999-12-31T23:59:59.999999Z")), RejectReason.TIMESTAMP_OUT_OF_RANGE),
    (encode_event(good_event(event_timestamp="2000-01-01T00:59:59.999+01:00")), RejectReason.TIMESTAMP_OUT_OF_RANGE),
    (encode_event(good_event(event_timestamp="2000-01-01T00:00:00Z")), None),
    (encode_event(good_event(event_timestamp="1999-12-31T23:00:00-01:00")), None),
    # Without a record timestamp (kafka_frame has none) both sides bound it by the present moment.
    (encode_event(good_event(event_timestamp=format_timestamp(datetime.now(UTC) + timedelta(hours=23)))), None),
    (
        encode_event(good_event(event_timestamp=format_timestamp(datetime.now(UTC) + timedelta(days=2)))),
        RejectReason.TIMESTAMP_OUT_OF_RANGE,
    ),
    (encode_event(good_event(event_timestamp="9999-12-31T23:59:59-01:00")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="0001-01-01T00:00:00+01:00")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="0000-06-01T00:00:00Z")), RejectReason.INVALID_TIMESTAMP),
    # A number beyond double range is not a string, though from_json makes it "Infinity".
    (encode_event(good_event()).replace(b'"EVT_000000000001"', b"1e400"), RejectReason.WRONG_TYPE),
    (encode_event(good_event()).replace(b'"Mobile"', b"-1e400"), RejectReason.WRONG_TYPE),
    (encode_event(good_event(event_id="Infinity", product_name='"NaN"')), None),
    (encode_event(good_event(product_price=10**400)), RejectReason.INVALID_PRICE),
    # A NaN literal elsewhere once defeated the variant probe and let a non-string id through.
    (raw(event_id=123, extra=math.nan), RejectReason.MALFORMED_JSON),
    (raw(user_id={"a": 1}, extra=math.inf), RejectReason.MALFORMED_JSON),
    # One JSON object and nothing after it; no key twice in one object (test_transforms_one_verdict).
    (encode_event(good_event()) + b"}", RejectReason.MALFORMED_JSON),
    (encode_event(good_event()) + b" " + encode_event(good_event()), RejectReason.MALFORMED_JSON),
    (encode_event(good_event())[:-1] + b',"device_type":"Desktop"}', RejectReason.DUPLICATE_KEY),
    (encode_event(good_event(event_type="page_view"))[:-1] + b',"quantity":null}', RejectReason.DUPLICATE_KEY),
    (encode_event({**good_event(), "extra": {"a": 1}})[:-2] + b',"a":2}}', RejectReason.DUPLICATE_KEY),
    # An integer is an integer however long; ISO-8601 basic and week dates are not the shape.
    (encode_event(good_event(quantity=10**40)), RejectReason.INVALID_QUANTITY),
    (encode_event(good_event(event_timestamp="20260103T142345Z")), RejectReason.INVALID_TIMESTAMP),
    (encode_event(good_event(event_timestamp="2026-W01-1T14:23:45Z")), RejectReason.INVALID_TIMESTAMP),
    # Jackson's limits: nesting over 1000 levels and numbers over 1000 digits are malformed.
    (encode_event(good_event())[:-1] + b',"extra":' + b"[" * 999 + b"]" * 999 + b"}", None),
    (encode_event(good_event())[:-1] + b',"extra":' + b"[" * 1_000 + b"]" * 1_000 + b"}", RejectReason.MALFORMED_JSON),
    (b'{"event_id": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", RejectReason.MALFORMED_JSON),
    (encode_event(good_event())[:-1] + b',"extra":' + b"1" * 1_000 + b"}", None),
    (encode_event(good_event())[:-1] + b',"extra":-' + b"1" * 1_001 + b"}", RejectReason.MALFORMED_JSON),
    (encode_event(good_event()).replace(b"79.99", b"0." + b"0" * 999 + b"1"), None),
    (encode_event(good_event()).replace(b"79.99", b"0." + b"0" * 1_500 + b"1"), RejectReason.MALFORMED_JSON),
    (encode_event(good_event()).replace(b"79.99", b"7." + b"0" * 999 + b"1"), RejectReason.MALFORMED_JSON),
    (encode_event(good_event()).replace(b"79.99", b"7.9e" + b"0" * 997 + b"1"), None),
]


def split_good_rejected(validated: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(good rows with EVENT_COLUMNS, rejects with REJECT_COLUMNS), as the Bronze sink splits a batch."""
    good = validated.where(F.col("reject_reason").isNull()).select(*EVENT_COLUMNS)
    rejected = validated.where(F.col("reject_reason").isNotNull()).select(*REJECT_COLUMNS)
    return good, rejected


def spark_verdicts(spark, values: Sequence[bytes | None]) -> list[dict[str, object]]:
    rows = parse_and_validate(kafka_frame(spark, values)).toArrow().to_pylist()
    return sorted(rows, key=lambda row: row["kafka_offset"])


def test_corpus_expectations_match_the_reference() -> None:
    # Guards the corpus itself: its expected reasons are the reference's.
    for value, expected in CORPUS:
        assert validate_message(value).reason == expected, value


def test_spark_rules_agree_with_the_reference(spark) -> None:
    # A fixed clock: the same messages, timestamps included, on every run.
    simulated = Simulator(seed=13, start=datetime(2026, 12, 6, 9, 0, tzinfo=UTC), bad_ratio=0.3).take(3_000).values
    values = [value for value, _ in CORPUS] + simulated
    rows = spark_verdicts(spark, values)
    assert len(rows) == len(values)
    disagreements = []
    for value, row in zip(values, rows, strict=True):
        verdict = validate_message(value)
        spark_says = (row["reject_reason"], bool(row["repaired"]))
        python_says = (verdict.reason.value if verdict.reason else None, verdict.repair is not None)
        if spark_says != python_says:
            disagreements.append((value, python_says, spark_says, row["reject_detail"]))
        elif verdict.reason in (RejectReason.WRONG_TYPE, RejectReason.MISSING_FIELD) and (
            verdict.detail.split(" ")[0] != row["reject_detail"].split(" ")[0]
        ):
            # Both must name the same field first.
            disagreements.append((value, verdict.detail, row["reject_detail"]))
    assert not disagreements, "\n".join(repr(item) for item in disagreements)
    # The simulator's bad mix really was exercised.
    reasons = {row["reject_reason"] for row in rows}
    assert set(RejectReason) <= reasons


def test_good_rows_are_typed_like_the_reference_reads_them(spark) -> None:
    values = [value for value, expected in CORPUS if expected is None]
    for row, value in zip(spark_verdicts(spark, values), values, strict=True):
        event = decode_json(value.decode())
        assert row["reject_reason"] is None and row["raw_value"] is None and row["raw_text"] is None
        expected_moment = datetime.fromisoformat(event["event_timestamp"]).astimezone(UTC)
        # Spark keeps microseconds; fromisoformat reads the same digits.
        assert row["event_timestamp"] == expected_moment, event["event_timestamp"]
        assert row["product_price"] == event["product_price"]
        assert row["schema_version"] == 1
        if event["event_type"] == "purchase" and event.get("quantity") is None:
            assert (row["quantity"], row["repaired"]) == (1, True)
            assert row["repair_reason"] == Repair.PURCHASE_NULL_QUANTITY.value
        else:
            assert (row["quantity"], row["repaired"], row["repair_reason"]) == (event.get("quantity"), False, None)
        for name in ("event_id", "user_id", "product_name", "device_type", "country"):
            assert row[name] == event[name]


def test_n_good_and_m_bad_split_into_n_rows_and_m_rejects(spark) -> None:
    good = [encode_event(good_event(event_id=f"EVT_{index:012d}")) for index in range(20)]
    bad = [
        (b"{oops", RejectReason.MALFORMED_JSON),
        (encode_event(good_event(product_price=-1)), RejectReason.NEGATIVE_PRICE),
        (encode_event(good_event(event_type="refund")), RejectReason.UNKNOWN_EVENT_TYPE),
        (without("country"), RejectReason.MISSING_FIELD),
        (b"\xc3\x28{}", RejectReason.INVALID_UTF8),
    ]
    values = good[:10] + [value for value, _ in bad] + good[10:]
    validated = parse_and_validate(kafka_frame(spark, values))
    assert tuple(validated.columns) == VALIDATED_COLUMNS
    good_rows, rejected_rows = split_good_rejected(validated)
    assert tuple(good_rows.columns) == EVENT_COLUMNS and tuple(rejected_rows.columns) == REJECT_COLUMNS
    assert good_rows.count() == 20
    rejects = sorted(rejected_rows.collect(), key=lambda row: row["kafka_offset"])
    assert [row["reject_reason"] for row in rejects] == [reason.value for _, reason in bad]
    assert [row["raw_value"] for row in rejects] == [value for value, _ in bad]
    # raw_text only where the bytes are UTF-8
    assert rejects[0]["raw_text"] == "{oops" and rejects[-1]["raw_text"] is None


def test_kafka_position_and_sent_at_header_are_kept(spark) -> None:
    values = [encode_event(good_event(event_id=f"EVT_{index}")) for index in range(3)]
    rows = spark_verdicts(spark, values)
    assert [(row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) for row in rows] == [
        ("clicks", 0, 0),
        ("clicks", 1, 1),
        ("clicks", 2, 2),
    ]
    assert {row["sent_at"] for row in rows} == {datetime(2026, 1, 3, 14, 23, 45, 500000, tzinfo=UTC)}
    no_header = parse_and_validate(kafka_frame(spark, values, sent_at_ms=None)).toArrow()
    assert no_header["sent_at"].null_count == 3


def test_sent_at_is_found_among_other_headers(spark) -> None:
    """The producer sends it as the only header, which is read directly; any other producer's
    headers are searched."""
    value = encode_event(good_event())
    header_lists = [
        [("trace_id", b"abc"), (SENT_AT_HEADER, b"1767450225500")],
        [(SENT_AT_HEADER, b"1767450225500"), ("trace_id", b"abc")],
        [("trace_id", b"abc")],
        [(SENT_AT_HEADER, b"not a number")],
    ]
    rows = [(value, "clicks", 0, offset, headers) for offset, headers in enumerate(header_lists)]
    table = parse_and_validate(spark.createDataFrame(rows, KAFKA_SCHEMA)).toArrow()
    sent_at = datetime(2026, 1, 3, 14, 23, 45, 500000, tzinfo=UTC)
    assert table["sent_at"].to_pylist() == [sent_at, sent_at, None, None]
    assert table["reject_reason"].null_count == 4  # a header never makes a message bad


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_every_field_reaches_the_good_rows(spark, name: str) -> None:
    (row,) = spark_verdicts(spark, [encode_event(good_event())])
    assert row[name] is not None
