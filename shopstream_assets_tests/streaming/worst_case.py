"""The largest events the rules accept: every free-text field at its length limit in 4-byte UTF-8 characters.

``event_type`` must be one of :data:`streaming.events.EVENT_TYPES` and ``event_timestamp``
must match ASCII's timestamp shape, so those two stay as short as valid events have them;
every other string is as long as :data:`streaming.events.LENGTH_LIMITS` allows, in
characters of four bytes each, so the typed row is as large as an accepted row can be.
"""

from __future__ import annotations

from datetime import UTC, datetime

from streaming.events import EVENT_FIELDS, LENGTH_LIMITS, SCHEMA_VERSION, encode_event, format_timestamp

# Ten characters outside the Basic Multilingual Plane (4 bytes of UTF-8 each): the digits an id is written in.
FOUR_BYTE_DIGITS = tuple(chr(0x1F600 + digit) for digit in range(10))
FILLER = "\U0001f6d2"  # a shopping cart, 4 bytes


def at_limit(index: int, length: int) -> str:
    """``length`` 4-byte characters ending in ``index`` written in :data:`FOUR_BYTE_DIGITS`: unique per index."""
    digits = "".join(FOUR_BYTE_DIGITS[int(digit)] for digit in str(index))
    return FILLER * (length - len(digits)) + digits


def worst_case_event(index: int, moment: datetime | None = None) -> dict[str, object]:
    fixed: dict[str, object] = {
        "event_type": "purchase",
        "event_timestamp": format_timestamp(moment or datetime.now(UTC)),
        "product_price": 999_999_999.99,
        "quantity": 100,
        "schema_version": SCHEMA_VERSION,
    }
    limits = dict(LENGTH_LIMITS)
    # In schema order, as producers write events.
    return {
        field.name: fixed[field.name] if field.name in fixed else at_limit(index, limits[field.name])
        for field in EVENT_FIELDS
    }


def worst_case_event_values(count: int, moment: datetime | None = None) -> list[bytes]:
    """``count`` distinct accepted events, each as large as an accepted row can be (UTF-8 JSON, not escaped)."""
    return [encode_event(worst_case_event(index, moment)) for index in range(count)]
