"""Hostile JSON for the verdict tests, and the inputs where Python's and Spark's verdicts may differ."""

from __future__ import annotations

import json
import math
import re
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
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "-0.0", "1E2", "1.0", "2.5e1",
    "00", "+1", "0x10", ".5", "1.", "9223372036854775808", "-9223372036854775809",
    "18446744073709551616", "1" * 400, "0." + "0" * 300 + "1", "'single'", "undefined", "null",
)  # fmt: skip
# Strings the rules look at: timestamps near and past the format, ids, types, whitespace.
SPECIAL_STRINGS = (
    "", " ", "\t\n", "\u00a0", "\u2003", "\x1c", "\x00", "a\x00b", "NaN", "Infinity", "-1", "123", "1e5",
    "true", "null", "{}", "[]", "{\"a\":1}", "page_view", "add_to_cart", "purchase", "PURCHASE",
    "Mobile", "2026-01-03T14:23:45.123Z", "2026-01-03T14:23:45Z", "2026-01-03 14:23:45+01:00",
    "2026-01-03T14:23:45", "2026-01-03", "2026-01-03T14:23Z", "2026-01-03t14:23:45,5+0100",
    "2026-02-30T00:00:00Z", "2026-12-31T23:59:60Z", "20260103T142345Z", "2026-W01-1T00:00:00Z",
    "2026-01-03T14:23:45.123456789Z", "٢٠٢٦-01-03T14:23:45Z", "2026-01-03T24:00:00Z",
    "\ud83d\ude00", "Ẹ̀wà Agoyin — ₦", "'; drop table bronze.clickstream_events; --", "\u202e",
)  # fmt: skip


def as_stored_text(text: str) -> str:
    """A Python str as it comes back from Spark/PostgreSQL: NUL replaced, lone surrogates as '?'."""
    return nul_replaced(text).encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------------------------------
# Known bugs (see the e2e regression tests): inputs excluded from the property test and the
# fuzz run until the fix lands, so those keep finding NEW problems. Delete with the fix.

# Spark's variant holds integers up to DECIMAL(38, 0); longer ones become DOUBLE.
MAX_DECIMAL_DIGITS = 38


def known_bug(value: bytes | None) -> str | None:
    """Which known bug ``value`` triggers, or None."""
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    integers: list[str] = []

    def remember_int(token: str) -> int:
        integers.append(token)
        return int(token)

    try:
        json.loads(text, parse_int=remember_int)
    except (ValueError, RecursionError):
        return None
    if any(len(token.lstrip("-")) > MAX_DECIMAL_DIGITS for token in integers):
        return "an integer over 38 digits: the variant probe types it DOUBLE (wrong_type), Python an int"
    return None


# Differences streaming/transforms.py documents (inputs the producer never writes): both
# sides still reject or accept without crashing and account for the message, but the verdict
# may differ, so the property test does not compare verdicts on these.
_BASIC_OR_WEEK_DATE = re.compile(r"^\s*(\d{8}|\d{4}-?W\d)")


def documented_difference(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
        json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            return "a second JSON value after the object: Jackson reads the first"
        return None
    except (ValueError, RecursionError):
        return None
    keys: list[list[str]] = []

    def remember(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys.append([key for key, _ in pairs])
        return dict(pairs)

    event = json.loads(text, object_pairs_hook=remember)
    if any(len(names) != len(set(names)) for names in keys):
        return "duplicate keys"
    if re.search(r"(?<![\w\"])-?(NaN|Infinity)(?![\w\"])", text) and _has_non_finite(event):
        return "a bare NaN/Infinity literal (the variant probe cannot parse the message)"
    timestamp = event.get("event_timestamp") if isinstance(event, dict) else None
    if isinstance(timestamp, str) and _BASIC_OR_WEEK_DATE.match(timestamp):
        return "ISO-8601 basic or week-date timestamp"
    return None


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    return False
