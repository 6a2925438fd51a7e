"""The one clickstream event schema and its validation rules.

The producer writes events of this shape, the Spark job parses and validates them with
the StructType and rules derived here, the tests and the README describe them from here.
The field list follows the reference system's "Event Schema" plus ``schema_version``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

# The strict-JSON names stay importable from here, beside the rules that use them.
from streaming.strict_json import DUPLICATE_KEY_DETAIL as DUPLICATE_KEY_DETAIL
from streaming.strict_json import MAX_KEY_LENGTH as MAX_KEY_LENGTH
from streaming.strict_json import MAX_NESTING_DEPTH as MAX_NESTING_DEPTH
from streaming.strict_json import MAX_NUMBER_DIGITS as MAX_NUMBER_DIGITS
from streaming.strict_json import NON_FINITE_LITERAL_DETAIL as NON_FINITE_LITERAL_DETAIL
from streaming.strict_json import TRAILING_DATA_DETAIL as TRAILING_DATA_DETAIL
from streaming.strict_json import DuplicateKeyError, decode_json

if TYPE_CHECKING:  # pyspark is heavy; the producer never needs it
    from pyspark.sql.types import StructType

SCHEMA_VERSION = 1

EVENT_TYPES = ("page_view", "add_to_cart", "purchase")
DEVICE_TYPES = ("Mobile", "Desktop", "Tablet")
MAX_QUANTITY = 100
MAX_PRICE = 1_000_000_000.0
# Every string field has a length limit, in characters (code points). Strings are index keys
# downstream: Bronze's event_id, Silver's session_id, and Gold's unique keys (metric_date,
# product_id, country, device_type) in mart_product_daily and (metric_date, country,
# device_type, product_category) in mart_daily_segment_metrics. A btree entry must stay under
# ~2.7 KB; at 4 bytes of UTF-8 per character the widest key, product_id + country +
# device_type, is 4 x (256 + 128 + 64) = 1,792 bytes, and country + device_type +
# product_category 4 x 448 (streaming tests check every unique key against these limits).
MAX_ID_LENGTH = 256  # 1 KB of UTF-8 at most
MAX_COUNTRY_LENGTH = 128
MAX_DEVICE_TYPE_LENGTH = 64
MAX_CATEGORY_LENGTH = 256
MAX_PRODUCT_NAME_LENGTH = 1_000  # in no index; bounded so a row and a chart label stay small
MAX_EVENT_TYPE_LENGTH = 32  # one of EVENT_TYPES anyway
MAX_TIMESTAMP_LENGTH = 64  # TIMESTAMP_PATTERN's longest text is 45 characters

MAX_UTC_OFFSET = timedelta(hours=18)
# The one shape of event_timestamp both sides accept: ISO-8601's extended calendar form as
# RFC 3339 writes it (date, T/t/space, hh:mm[:ss][.fraction], then Z or an offset), with
# the variations Python's fromisoformat and Spark's timestamp cast read alike (a comma
# before the fraction, offsets as +hh, +hhmm, +hh:mm or +hh:mm:ss). fromisoformat alone
# also takes basic (20260103T142345Z) and week dates (2026-W01-1), an hour alone, any
# separator and a space before the offset, none of which Spark's cast or PostgreSQL read.
# Groups (used by streaming.column_rules to normalize for Spark): 1 date, 2 hh:mm,
# 3 :ss, 4 fraction digits, 5 offset. Unanchored: each side anchors it at both ends
# (Python's fullmatch, Java's ^ and \z), ASCII digits only ([0-9], never \d).
TIMESTAMP_PATTERN = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2})(:[0-9]{2})?(?:[.,]([0-9]{1,9}))?"
    r"(Z|[+\-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:\.[0-9]{1,6})?)?)?)"
)
_TIMESTAMP_SHAPE = re.compile(TIMESTAMP_PATTERN)

# Kafka message header holding the producer's send time (epoch milliseconds, ASCII digits),
# so event->Bronze latency is measurable without touching the event itself. Any producer can
# send any bytes there: parse_sent_at_ms is the one rule for what counts as a send time.
SENT_AT_HEADER = "sent_at_ms"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# sent_at's window, in epoch milliseconds: 1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z
# (Python's datetime, Arrow's conversion and PostgreSQL all hold it; no sign, so nothing before 1970).
MAX_SENT_AT_MS = 253_402_300_799_999
# Digits after the leading zeros of the largest sent_at (15): more can only be out of the window.
_MAX_SENT_AT_DIGITS = len(str(MAX_SENT_AT_MS))
_ASCII_DIGITS = re.compile(rb"[0-9]+")

# The window event_timestamp must fall in, both ends included: from EARLIEST_EVENT_TIME to
# MAX_AHEAD_OF_BROKER after the Kafka record's timestamp (the broker's, or the producer's
# CreateTime as the broker stored it). An event dated earlier or later names a moment no
# shopper acted at (a clock reset to 1970, year 9999) and would skew every period and every
# user's recency downstream: it is rejected as timestamp_out_of_range, never stored.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD_OF_BROKER = timedelta(days=1)
EARLY_DETAIL = "is before 2000-01-01T00:00:00Z"
AHEAD_DETAIL = "is more than 1 day after the Kafka record's timestamp"


@dataclass(frozen=True)
class EventField:
    name: str
    json_type: str  # JSON Schema type name
    spark_type: str  # Spark SQL type name used by from_json
    required: bool
    description: str
    example: Any
    max_length: int | None = None  # characters, for strings (every string field has one)


EVENT_FIELDS: tuple[EventField, ...] = (
    EventField(
        "event_id",
        "string",
        "string",
        True,
        "Unique event id; duplicates are counted, not stored",
        "EVT_a1b2c3d4e5f6",
        MAX_ID_LENGTH,
    ),
    EventField(
        "event_timestamp",
        "string",
        "string",
        True,
        "When the shopper acted: UTC ISO-8601 with milliseconds",
        "2026-01-03T14:23:45.123Z",
        MAX_TIMESTAMP_LENGTH,
    ),
    EventField("user_id", "string", "string", True, "Stable shopper id", "USER_12345", MAX_ID_LENGTH),
    EventField(
        "session_id",
        "string",
        "string",
        True,
        "Browsing session; the Kafka message key",
        "SESSION_abcdef012345",
        MAX_ID_LENGTH,
    ),
    EventField(
        "event_type", "string", "string", True, "page_view, add_to_cart or purchase", "purchase", MAX_EVENT_TYPE_LENGTH
    ),
    EventField("product_id", "string", "string", True, "Catalog product id", "P001", MAX_ID_LENGTH),
    EventField("product_name", "string", "string", True, "Product name", "Wireless Earbuds", MAX_PRODUCT_NAME_LENGTH),
    EventField("product_category", "string", "string", True, "Product category", "Electronics", MAX_CATEGORY_LENGTH),
    EventField("product_price", "number", "double", True, "Unit price in NGN, >= 0", 79.99),
    EventField(
        "quantity",
        "integer",
        "long",
        False,
        "Units: 1-100 on add_to_cart and purchase, null (or 1-100) on page_view",
        2,
    ),
    EventField("device_type", "string", "string", True, "Mobile, Desktop or Tablet", "Mobile", MAX_DEVICE_TYPE_LENGTH),
    EventField("country", "string", "string", True, "Shopper's country", "Nigeria", MAX_COUNTRY_LENGTH),
    EventField("schema_version", "integer", "long", True, f"Event schema version, currently {SCHEMA_VERSION}", 1),
)
FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in EVENT_FIELDS)
REQUIRED_FIELDS: tuple[str, ...] = tuple(field.name for field in EVENT_FIELDS if field.required)
# (name, maximum characters) of the fields with a length limit, in schema order.
LENGTH_LIMITS: tuple[tuple[str, int], ...] = tuple(
    (field.name, field.max_length) for field in EVENT_FIELDS if field.max_length is not None
)


class RejectReason(StrEnum):
    """Why a message was kept in ``bronze.clickstream_rejects`` instead of Bronze events.

    Checked in this order; a message gets the first reason that applies.
    """

    INVALID_UTF8 = "invalid_utf8"  # the message value is not UTF-8 text
    MALFORMED_JSON = "malformed_json"  # not one JSON object (trailing data, NaN and Infinity included)
    DUPLICATE_KEY = "duplicate_key"  # an object, at any depth, has the same key twice
    WRONG_TYPE = "wrong_type"  # a field has a JSON type the schema does not allow
    MISSING_FIELD = "missing_field"  # a required field is absent, null or empty
    FIELD_TOO_LONG = "field_too_long"  # a string field over its max_length characters
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    INVALID_TIMESTAMP = "invalid_timestamp"  # not TIMESTAMP_PATTERN, or no such moment in years 1-9999
    # before EARLIEST_EVENT_TIME, or more than MAX_AHEAD_OF_BROKER after the record's timestamp
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    INVALID_PRICE = "invalid_price"  # infinite (1e400) or absurdly large
    NEGATIVE_PRICE = "negative_price"
    INVALID_QUANTITY = "invalid_quantity"  # < 1, > MAX_QUANTITY, or null on add_to_cart


class Repair(StrEnum):
    """The only repair the stream makes, as the reference system did."""

    PURCHASE_NULL_QUANTITY = "purchase_null_quantity_set_to_1"


def format_timestamp(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``: ``2026-01-03T14:23:45.123Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime | None:
    """The timestamp rule: :data:`TIMESTAMP_PATTERN` naming a real moment, years 1-9999 in UTC.

    The offset is at most 18 hours in whole seconds, as Spark's timestamp cast takes it.
    """
    if _TIMESTAMP_SHAPE.fullmatch(text) is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = moment.utcoffset()
    # Spark (java.time.ZoneOffset) takes offsets up to 18:00 in whole seconds; Python up to 24 h.
    if offset is None or abs(offset) > MAX_UTC_OFFSET or offset.microseconds:
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-01:00 is year 10000 in UTC: no datetime holds it
        return None


def from_epoch_ms(milliseconds: int) -> datetime:
    """An epoch-milliseconds count as an exact UTC datetime (no float on the way)."""
    return EPOCH + timedelta(milliseconds=milliseconds)


def parse_sent_at_ms(value: bytes | None) -> datetime | None:
    """The sent_at rule: the header's value is the send time only when it is ASCII digits
    (leading zeros allowed, no sign, no space) naming a moment up to :data:`MAX_SENT_AT_MS`.

    Anything else (a float, an overflow, non-UTF-8 bytes, an empty or null value) is None:
    sent_at only measures latency, so an odd header never makes a message bad.
    """
    if value is None or _ASCII_DIGITS.fullmatch(value) is None:
        return None
    # int() refuses texts of over 4,300 digits; leading zeros are the only digits that may pad.
    significant = value.lstrip(b"0")
    if len(significant) > _MAX_SENT_AT_DIGITS:
        return None
    milliseconds = int(significant or b"0")
    return from_epoch_ms(milliseconds) if milliseconds <= MAX_SENT_AT_MS else None


def sent_at_from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> datetime | None:
    """sent_at of a message: the FIRST ``sent_at_ms`` header's value by :func:`parse_sent_at_ms`."""
    for key, value in headers or ():
        if key == SENT_AT_HEADER:
            return parse_sent_at_ms(value)
    return None


def timestamp_out_of_range(moment: datetime, broker_timestamp: datetime) -> str | None:
    """Why ``moment`` is outside the event_timestamp window (see :data:`EARLIEST_EVENT_TIME`), or None."""
    if moment < EARLIEST_EVENT_TIME:
        return EARLY_DETAIL
    # Subtracting from the moment (at least year 2000) cannot overflow, whatever the broker says.
    if moment - MAX_AHEAD_OF_BROKER > broker_timestamp:
        return AHEAD_DETAIL
    return None


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The wire format: compact UTF-8 JSON with fields in schema order."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


_JSON_TYPE_CHECKS = {
    "string": lambda value: isinstance(value, str),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
}


@dataclass(frozen=True)
class Verdict:
    """Outcome of validating one message: a reason to reject, or an accepted event."""

    reason: RejectReason | None
    detail: str | None = None
    repair: Repair | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None


def validate_message(value: bytes | None, broker_timestamp: datetime | None = None) -> Verdict:
    """Validate one raw Kafka message value in pure Python.

    This is the reference implementation of the rules; the Spark job applies the same
    rules column-wise (``streaming/transforms.py``), and the tests hold the two equal.
    ``broker_timestamp`` is the Kafka record's timestamp, which bounds event_timestamp
    (:data:`MAX_AHEAD_OF_BROKER`); a message not read from Kafka (None) is judged against the
    present moment, as the broker would stamp it if it were sent now.
    """
    if value is None:
        return Verdict(RejectReason.MALFORMED_JSON, "null message value")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        return Verdict(RejectReason.INVALID_UTF8, str(error))
    try:
        event = decode_json(text)
    except DuplicateKeyError as error:
        # Not an object at all (an array of objects with duplicates) is malformed first.
        if isinstance(error.decoded, dict):
            return Verdict(RejectReason.DUPLICATE_KEY, str(error))
        event = error.decoded
    except ValueError as error:
        return Verdict(RejectReason.MALFORMED_JSON, str(error))
    if not isinstance(event, dict):
        return Verdict(RejectReason.MALFORMED_JSON, f"JSON {type(event).__name__}, not an object")
    return validate_event(event, broker_timestamp)


def validate_event(event: Mapping[str, Any], broker_timestamp: datetime | None = None) -> Verdict:
    """Validate a decoded JSON object against the schema and the business rules.

    ``broker_timestamp``: as :func:`validate_message` takes it.
    """
    for field in EVENT_FIELDS:
        value = event.get(field.name)
        if value is not None and not _JSON_TYPE_CHECKS[field.json_type](value):
            return Verdict(RejectReason.WRONG_TYPE, f"{field.name} is {type(value).__name__}, not {field.json_type}")
    for name in REQUIRED_FIELDS:
        value = event.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return Verdict(RejectReason.MISSING_FIELD, name)
    for name, max_length in LENGTH_LIMITS:
        if len(event[name]) > max_length:
            return Verdict(RejectReason.FIELD_TOO_LONG, f"{name} is {len(event[name])} characters, over {max_length}")
    if event["schema_version"] != SCHEMA_VERSION:
        return Verdict(RejectReason.UNSUPPORTED_SCHEMA_VERSION, str(event["schema_version"]))
    if event["event_type"] not in EVENT_TYPES:
        return Verdict(RejectReason.UNKNOWN_EVENT_TYPE, str(event["event_type"])[:100])
    moment = parse_timestamp(event["event_timestamp"])
    if moment is None:
        return Verdict(RejectReason.INVALID_TIMESTAMP, str(event["event_timestamp"])[:100])
    out_of_range = timestamp_out_of_range(moment, broker_timestamp or datetime.now(UTC))
    if out_of_range is not None:
        return Verdict(RejectReason.TIMESTAMP_OUT_OF_RANGE, f"{event['event_timestamp'][:100]} {out_of_range}")
    try:
        price = float(event["product_price"])
    except OverflowError:  # an integer beyond double range; Spark reads it as Infinity
        price = math.inf
    if math.isnan(price) or math.isinf(price) or price > MAX_PRICE:
        return Verdict(RejectReason.INVALID_PRICE, str(event["product_price"]))
    if price < 0:
        return Verdict(RejectReason.NEGATIVE_PRICE, str(event["product_price"]))
    quantity = event.get("quantity")
    if quantity is None:
        if event["event_type"] == "purchase":
            return Verdict(None, repair=Repair.PURCHASE_NULL_QUANTITY)
        if event["event_type"] == "add_to_cart":
            return Verdict(RejectReason.INVALID_QUANTITY, "null quantity on add_to_cart")
    elif not 1 <= quantity <= MAX_QUANTITY:
        return Verdict(RejectReason.INVALID_QUANTITY, str(quantity))
    return Verdict(None)


def spark_schema() -> StructType:
    """The Spark schema ``from_json`` parses with (plus the corrupt-record column)."""
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    spark_types = {"string": StringType(), "double": DoubleType(), "long": LongType()}
    return StructType([StructField(field.name, spark_types[field.spark_type], nullable=True) for field in EVENT_FIELDS])


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a valid event, for docs and external producers."""
    properties: dict[str, Any] = {}
    for field in EVENT_FIELDS:
        spec: dict[str, Any] = {"description": field.description, "examples": [field.example]}
        spec["type"] = field.json_type if field.required else [field.json_type, "null"]
        properties[field.name] = spec
    properties["event_type"]["enum"] = list(EVENT_TYPES)
    properties["device_type"]["enum"] = list(DEVICE_TYPES)
    properties["event_timestamp"]["format"] = "date-time"
    for name, max_length in LENGTH_LIMITS:
        properties[name]["maxLength"] = max_length
    properties["product_price"]["minimum"] = 0
    properties["quantity"]["minimum"] = 1
    properties["quantity"]["maximum"] = MAX_QUANTITY
    properties["schema_version"]["const"] = SCHEMA_VERSION
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ShopStream clickstream event",
        "type": "object",
        "properties": properties,
        "required": list(REQUIRED_FIELDS),
    }
