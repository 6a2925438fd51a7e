"""Strict JSON as Spark's parser reads it, in pure Python: the reference's decoder.

``streaming.events.validate_message`` decodes a message with :func:`decode_json`: strict
``json.loads`` within the limits Spark's Jackson enforces, refusing what Spark refuses
(numbers, nesting and keys beyond its limits, NaN/Infinity literals, data after the value)
and telling duplicate keys apart. Spark's side of the same decisions is in
``streaming.column_rules`` and ``streaming.transforms``.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

# What Spark's JSON parser (Jackson's StreamReadConstraints) refuses: a number with more
# than 1000 digits, more than 1000 nested arrays/objects, or a key (object name) over 50,000
# characters (UTF-16 code units, as Java counts: an emoji is two). The reference refuses them too.
MAX_NUMBER_DIGITS = 1000
MAX_NESTING_DEPTH = 1000
MAX_KEY_LENGTH = 50_000
# JSON text after the first value is malformed (RFC 8259: a JSON text is ONE value); a bare
# NaN/Infinity is not JSON either. Duplicate keys are valid syntax but ambiguous (which
# value counts?), so a message with them is rejected too, under its own reason.
TRAILING_DATA_DETAIL = "data after the JSON object"
NON_FINITE_LITERAL_DETAIL = "a NaN or Infinity literal, which is not JSON"
DUPLICATE_KEY_DETAIL = "an object in the message has the same key twice"


class _JsonLimitExceeded(ValueError):
    """A number or a nesting Spark's JSON parser refuses (see MAX_NUMBER_DIGITS)."""


class DuplicateKeyError(ValueError):
    """JSON whose text is one valid value, but an object in it has the same key twice."""

    def __init__(self, message: str, decoded: Any) -> None:
        super().__init__(message)
        self.decoded = decoded  # the value, each duplicate key holding its last value


def _java_length(key: str) -> int:
    """Characters as Jackson counts them: UTF-16 code units (an emoji is two)."""
    return len(key) if len(key) <= MAX_KEY_LENGTH // 2 else len(key.encode("utf-16-le", "surrogatepass")) // 2


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{NON_FINITE_LITERAL_DETAIL}: {token}")


def _float_digits(token: str) -> int:
    """The digits Jackson counts in a float token: integer, fraction and exponent digits.

    A token with a leading zero (``0.5``, ``-0e7``) takes Jackson's other code path, which
    counts an absent fraction or exponent as -1 digits.
    """
    mantissa, has_exponent, exponent = token.lstrip("-").replace("E", "e").partition("e")
    integer, has_fraction, fraction = mantissa.partition(".")
    digits = len(integer) + len(fraction) + len(exponent.lstrip("+-"))
    if integer == "0":
        digits -= (not has_fraction) + (not has_exponent)
    return digits


def _parse_float(token: str) -> float:
    # A token is never shorter than its digit count: most tokens skip the count.
    if len(token) > MAX_NUMBER_DIGITS and _float_digits(token) > MAX_NUMBER_DIGITS:
        raise _JsonLimitExceeded(f"a number with over {MAX_NUMBER_DIGITS} digits: {token[:40]}...")
    return float(token)


def _parse_int(token: str) -> int:
    if len(token) > MAX_NUMBER_DIGITS and len(token.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _JsonLimitExceeded(f"a number with over {MAX_NUMBER_DIGITS} digits: {token[:40]}...")
    return int(token)


_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_DEEP_PARSE_LOCK = threading.Lock()


def _nesting_depth(text: str) -> int:
    """Deepest nesting of arrays and objects; brackets inside strings do not count."""
    depth = deepest = 0
    for token in _STRING_OR_BRACKET.findall(text):
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def decode_json(text: str) -> Any:
    """Strict ``json.loads`` within Spark's limits: a ValueError for what the rules call malformed.

    Malformed: not one JSON value (``Extra data``), a NaN/Infinity literal, a number, a
    nesting or a key beyond Spark's parser. Then :class:`DuplicateKeyError` (also a ValueError) for
    an object with the same key twice, however deep: malformed text wins over duplicates,
    wherever each is. Unlike ``json.loads``, never a RecursionError for nesting Spark
    accepts (up to :data:`MAX_NESTING_DEPTH`): what validate_message accepts, this decodes.
    """
    # A text with few brackets cannot nest deeply: most messages skip the depth scan.
    if text.count("[") + text.count("{") > MAX_NESTING_DEPTH and _nesting_depth(text) > MAX_NESTING_DEPTH:
        raise _JsonLimitExceeded(f"nesting deeper than {MAX_NESTING_DEPTH} levels")
    duplicates: list[str] = []
    # Only a text of more than half the limit (an emoji is two units) can hold a key over it.
    long_keys_possible = len(text) > MAX_KEY_LENGTH // 2

    def to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if long_keys_possible and any(_java_length(key) > MAX_KEY_LENGTH for key, _ in pairs):
            raise _JsonLimitExceeded(f"a key over {MAX_KEY_LENGTH} characters")
        decoded = dict(pairs)
        if len(decoded) < len(pairs) and not duplicates:
            key_counts = Counter(key for key, _ in pairs)
            duplicates.append(next(key for key, times in key_counts.items() if times > 1))
        return decoded

    decoded = _loads(text, to_dict)
    if duplicates:
        raise DuplicateKeyError(f"{DUPLICATE_KEY_DETAIL}: {duplicates[0][:100]!r}", decoded)
    return decoded


def _loads(text: str, to_dict: Callable[[list[tuple[str, Any]]], dict[str, Any]]) -> Any:
    options: dict[str, Any] = {
        "parse_float": _parse_float,
        "parse_int": _parse_int,
        "parse_constant": _refuse_constant,
        "object_pairs_hook": to_dict,
    }
    try:
        return json.loads(text, **options)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            raise ValueError(f"{TRAILING_DATA_DETAIL} (at character {error.pos})") from None
        raise
    except RecursionError:
        pass
    # Within Spark's limit yet too deep for Python's recursion limit, which json's C scanner
    # counts against: parse again with room for MAX_NESTING_DEPTH more levels. The limit is
    # process-wide, hence the lock.
    with _DEEP_PARSE_LOCK:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + MAX_NESTING_DEPTH + 100)
        try:
            return json.loads(text, **options)
        except RecursionError:  # a caller already deep in its own stack: still not a crash
            raise _JsonLimitExceeded("nesting too deep for Python's recursion limit") from None
        finally:
            sys.setrecursionlimit(limit)
