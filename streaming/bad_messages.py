"""The broken messages real producers send, as ``--bad-ratio`` mixes them in.

Each :class:`BadKind` has a share of the bad messages and what the stream is expected to
make of it (a reject reason, or an accepted :class:`Outcome`): :data:`BAD_MIX`. Bad messages
carry no marker; a :class:`Label` says, for the side manifest and the tests, what one is.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from streaming.events import SCHEMA_VERSION, RejectReason, encode_event, format_timestamp, parse_timestamp


class BadKind(StrEnum):
    """The kinds of broken message ``--bad-ratio`` mixes in."""

    MALFORMED_JSON = "malformed_json"  # truncated, or a Python dict repr
    INVALID_UTF8 = "invalid_utf8"  # a latin-1 encoded product name
    MISSING_FIELD = "missing_field"  # a required field absent, null or ""
    WRONG_TYPE = "wrong_type"  # e.g. the price as a string
    NEGATIVE_PRICE = "negative_price"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"  # e.g. wishlist_add
    NULL_PURCHASE_QUANTITY = "null_purchase_quantity"  # the reference's own bug
    DUPLICATE = "duplicate"  # an event already sent, re-sent byte for byte
    LATE = "late"  # event_timestamp minutes to hours before the send


class Outcome(StrEnum):
    """What the stream makes of a message that is not rejected."""

    ACCEPTED = "accepted"
    REPAIRED = "repaired"  # accepted with streaming.events.Repair
    DUPLICATE = "duplicate"  # same event_id as an accepted event: counted, not stored twice
    LATE = "late"  # accepted; its event time is well before its send time


@dataclass(frozen=True)
class BadSpec:
    weight: float  # share of the bad messages, in percent
    expected: RejectReason | Outcome
    example: str


BAD_MIX: dict[BadKind, BadSpec] = {
    BadKind.MALFORMED_JSON: BadSpec(12, RejectReason.MALFORMED_JSON, "truncated JSON, a Python dict repr"),
    BadKind.INVALID_UTF8: BadSpec(8, RejectReason.INVALID_UTF8, "product_name in latin-1"),
    BadKind.MISSING_FIELD: BadSpec(12, RejectReason.MISSING_FIELD, 'no user_id, or session_id ""'),
    BadKind.WRONG_TYPE: BadSpec(12, RejectReason.WRONG_TYPE, 'product_price "4500.0", user_id 123'),
    BadKind.NEGATIVE_PRICE: BadSpec(10, RejectReason.NEGATIVE_PRICE, "product_price -18499.99"),
    BadKind.UNKNOWN_EVENT_TYPE: BadSpec(10, RejectReason.UNKNOWN_EVENT_TYPE, "event_type wishlist_add"),
    BadKind.NULL_PURCHASE_QUANTITY: BadSpec(12, Outcome.REPAIRED, "purchase with quantity null"),
    BadKind.DUPLICATE: BadSpec(14, Outcome.DUPLICATE, "an earlier event re-sent as is"),
    BadKind.LATE: BadSpec(10, Outcome.LATE, "event_timestamp 2 min to 6 h old"),
}
assert sum(spec.weight for spec in BAD_MIX.values()) == 100

# A late event is at least this much older than its send time; good events are at most a
# few seconds older (when the producer keeps up with --rate).
LATE_MIN_SECONDS = 120
LATE_MAX_SECONDS = 6 * 3600


@dataclass(frozen=True)
class Label:
    """What a bad message is and what the stream should make of it."""

    kind: BadKind
    expected: RejectReason | Outcome
    event_id: str | None  # the id the message carries or was made from, for the manifest


def expected_outcome(label: Label | None) -> str:
    return Outcome.ACCEPTED.value if label is None else label.expected.value


def corrupt(kind: BadKind, value: bytes, rng: random.Random) -> bytes:
    """``value`` (a good event's bytes) broken the way ``kind`` says, drawing from ``rng``."""
    event: dict[str, Any] = json.loads(value)
    if kind is BadKind.MALFORMED_JSON:
        if rng.random() < 0.7:
            # Cut short, as by a client that died mid-write (any proper prefix of an
            # object is invalid JSON; the events are ASCII, so no UTF-8 char is split).
            return value[: 1 + int(rng.random() * (len(value) - 2))]
        return repr(event).encode()  # single quotes, None: a Python dict, not JSON
    if kind is BadKind.INVALID_UTF8:
        # A legacy client writing latin-1: é is one byte 0xE9, never valid alone in UTF-8.
        event["product_name"] = rng.choice(("Crème Brûlée Torch", "Café Press", "Piñata Set", "Façade Mirror"))
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("latin-1")
    if kind is BadKind.MISSING_FIELD:
        field = rng.choice(("user_id", "session_id", "event_id", "product_id", "event_timestamp"))
        if rng.random() < 0.5:
            del event[field]
        else:
            event[field] = rng.choice((None, "", "  "))
    elif kind is BadKind.WRONG_TYPE:
        choice = int(rng.random() * 4)
        if choice == 0:
            event["product_price"] = str(event["product_price"])
        elif choice == 1:
            event["user_id"] = int(event["user_id"].removeprefix("USER_"))
        elif choice == 2:
            event["schema_version"] = str(SCHEMA_VERSION)
        else:
            event["quantity"] = "1"
    elif kind is BadKind.NEGATIVE_PRICE:
        event["product_price"] = -event["product_price"]
    elif kind is BadKind.UNKNOWN_EVENT_TYPE:
        event["event_type"] = rng.choice(("wishlist_add", "remove_from_cart", "checkout_started", "PageView"))
    elif kind is BadKind.LATE:
        # A phone that was offline: the event is sent minutes to hours after it happened.
        delay_s = math.exp(rng.uniform(math.log(LATE_MIN_SECONDS), math.log(LATE_MAX_SECONDS)))
        moment = parse_timestamp(event["event_timestamp"])
        assert moment is not None  # the model writes valid timestamps
        event["event_timestamp"] = format_timestamp(moment - timedelta(seconds=delay_s))
    return encode_event(event)


def event_id_of(value: bytes) -> str | None:
    try:
        event_id = json.loads(value).get("event_id")
    except ValueError:
        return None
    return event_id if isinstance(event_id, str) else None


def bad_mix_table() -> str:
    """The bad-data mix as a Markdown table (docs/data-model.md, ``--help``)."""
    lines = ["| kind | share of bad | example | the stream makes it |", "|---|---|---|---|"]
    for kind, spec in BAD_MIX.items():
        lines.append(f"| `{kind}` | {spec.weight:g}% | {spec.example} | `{spec.expected}` |")
    return "\n".join(lines)
