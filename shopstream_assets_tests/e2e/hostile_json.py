"""Hostile JSON for the verdict tests: tokens, strings and timestamps where parsers tend to disagree."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shopstream_assets_tests.e2e.helpers import nul_replaced

# ---------------------------------------------------------------------------------------
# Hostile JSON: objects with duplicate keys and literal tokens Python's json never writes


@dataclass(frozen=True)
class RawJson:
    """A JSON token written as is: ``NaN``, ``1e400``, ``-0``, ``[[[[...]]]]`` or plain junk."""

    text: str


@dataclass(frozen=True)
class JsonObject:
    """An object as (key, value) pairs, so a key may appear twice."""

    pairs: tuple[tuple[str, Any], ...]


def to_json(value: Any) -> str:
    """Serialize ``value`` (nested RawJson / JsonObject allowed); NaN and Infinity as literals."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, JsonObject):
        return "{" + ",".join(f"{json.dumps(key)}:{to_json(item)}" for key, item in value.pairs) + "}"
    if isinstance(value, dict):
        return to_json(JsonObject(tuple(value.items())))
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


# Tokens Jackson and Python read differently, or that look numeric but are not JSON.
RAW_TOKENS = (
    "NaN", "Infinity", "-Infinity", "+Infinity", "-INF", "1e400", "-1e400", "1e-400", "-0", "-0.0", "1E2", "1.0",
    "2.5e1", "00", "+1", "0x10", ".5", "1.", "9223372036854775808", "-9223372036854775809", "1" * 39,
    "18446744073709551616", "-" + "9" * 60, "1" * 400, "0." + "0" * 300 + "1", "'single'", "undefined", "null",
)  # fmt: skip
# Strings the rules look at: timestamps near and past the format, ids, types, whitespace.
SPECIAL_STRINGS = (
    "", " ", "\t\n", "\u00a0", "\u2003", "\x1c", "\x00", "a\x00b", "NaN", "Infinity", "-1", "123", "1e5",
    "true", "null", "{}", "[]", "{\"a\":1}", "page_view", "add_to_cart", "purchase", "PURCHASE",
    "Mobile", "2026-01-03T14:23:45.123Z", "2026-01-03T14:23:45Z", "2026-01-03 14:23:45+01:00",
    "2026-01-03T14:23:45", "2026-01-03", "2026-01-03T14:23Z", "2026-01-03t14:23:45,5+0100",
    "2026-02-30T00:00:00Z", "2026-12-31T23:59:60Z", "20260103T142345Z", "2026-W01-1T00:00:00Z",
    "2026-01-03T14:23:45.123456789Z", "٢٠٢٦-01-03T14:23:45Z", "2026-01-03T24:00:00Z", "2026-01-03T14Z",
    "2026-01-03T1423Z", "2026-01-03T14:23:45 +01:00", "2026-01-03T14:23:45.Z", "2026-01-03T14:23:45Z\n",
    "2026-01-03T14:23:45.1234567891Z", "2026W011T00:00Z",
    "\ud83d\ude00", "Ẹ̀wà Agoyin — ₦", "'; drop table bronze.clickstream_events; --", "\u202e",
)  # fmt: skip


def as_stored_text(text: str) -> str:
    """A Python str as it comes back from Spark/PostgreSQL: NUL replaced, lone surrogates as '?'."""
    return nul_replaced(text).encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------------------------------
# Hostile headers: what any producer may put in sent_at_ms (issue 30's odd values first)

ISSUE_SENT_AT_VALUES: tuple[bytes, ...] = (
    b"10000000000000000",  # overflowed timestamp_millis: the batch failed on every retry
    b"300000000000000",  # year 11476: passed Spark, broke the Python reject writer
    b"-99999999999999999999",
    b"\xff\xfe",  # not UTF-8
    b"1e400",
)
ODD_SENT_AT_VALUES: tuple[bytes | None, ...] = (
    *ISSUE_SENT_AT_VALUES,
    b"",
    None,
    b"-1",
    b"-0",
    b"+1767450225500",
    b" 1767450225500",
    b"1767450225500 ",
    b"1767450225500\n",
    b"1767450225500.0",
    b"0x1A",
    b"9223372036854775807",
    b"9223372036854775808",
    b"9" * 400,
    b"0" * 5_000 + b"1767450225500",  # leading zeros: a send time (Python's int() refuses 4,300 digits)
    b"253402300799999",  # the window's last millisecond (streaming.events.MAX_SENT_AT_MS)
    b"253402300800000",
    b"0",
    "١٧٦٧٤٥٠٢٢٥٥٠٠".encode(),  # Arabic-Indic digits are not ASCII digits
    "１２３".encode(),  # nor are full-width ones
    b"NaN",
    b"Infinity",
    b"1767450225500\x00",
)
