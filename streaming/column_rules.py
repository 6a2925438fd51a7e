"""Column expressions the validation in :mod:`streaming.transforms` is built from.

Each is a rule of :func:`streaming.events.validate_message` (or a piece of one) spelled as a
Spark ``Column``: text tests on what ``from_json`` produced, a field's JSON type read from a
VARIANT, ISO-8601 timestamps as ``datetime.fromisoformat`` reads them, the producer's
``sent_at_ms`` header. Pure expressions: nothing here touches a DataFrame.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from pyspark.sql import Column
from pyspark.sql import functions as F

from streaming.events import (
    AHEAD_DETAIL,
    EARLIEST_EVENT_TIME,
    EARLY_DETAIL,
    EPOCH,
    EVENT_FIELDS,
    LENGTH_LIMITS,
    MAX_AHEAD_OF_BROKER,
    MAX_NESTING_DEPTH,
    MAX_SENT_AT_MS,
    SENT_AT_HEADER,
    TIMESTAMP_PATTERN,
    RejectReason,
)

# Strict JSON, as the reference reads it: Jackson as Spark configures it would take single
# quotes off and NaN/Infinity (even +Infinity and -INF) as numbers.
STRICT_JSON_OPTIONS = {"allowSingleQuotes": "false", "allowNonNumericNumbers": "false"}
# The text's first '}' followed by JSON whitespace only.
_FIRST_CLOSE_THEN_BLANK = r"^[^}]*\}[ \t\n\r]*\z"
# A value from_json produced for a string column that may have been a non-string JSON
# value (number, true/false, object, array): only these rows are checked in the variant.
# Jackson writes a non-finite number (NaN, or 1e400 read as Infinity) in quotes.
_MAYBE_NOT_A_STRING = r'(?s)^(-?[0-9][0-9.eE+\-]*|true|false|[\{\[].*|"(NaN|-?Infinity)")$'
# str.strip()'s whitespace: Java's Unicode White_Space plus the ASCII separators 0x1c-0x1f.
_BLANK = r"(?U)^[\s\x{1c}-\x{1f}\x{85}\x{a0}]*$"
# The producer's own format and its near relatives, cast directly (the hot path). \z, not
# $: Java's $ also matches before a final line break, which the cast would then trim.
_PLAIN_TIMESTAMP = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+\-][0-9]{2}:[0-9]{2})\z"
)
# The rest of the one timestamp shape (hour-minute only, a lowercase t, a comma before the
# fraction, offsets as +hh, +hhmm or +hh:mm:ss), normalized before the cast.
_OTHER_ISO_TIMESTAMP = rf"^{TIMESTAMP_PATTERN}\z"
_INTEGER_VARIANT_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT")
# First characters of from_json text that a non-string JSON value can produce.
_NON_STRING_FIRST_CHARACTERS = ("-", *"0123456789", "t", "f", "{", "[", '"')
# Python's datetime holds years 1-9999: a timestamp beyond them after UTC conversion
# (9999-12-31T23:59-01:00) is invalid, as streaming.events.parse_timestamp says, and would
# not convert to Python in the sink. Bounds in microseconds since the epoch.
_MIN_TIMESTAMP_MICROS = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_MAX_TIMESTAMP_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


def first(cases: list[tuple[Column, Column]], otherwise: Column | None = None) -> Column:
    """CASE WHEN c1 THEN v1 WHEN c2 THEN v2 ... (the first matching rule wins)."""
    expression = F.when(*cases[0])
    for condition, value in cases[1:]:
        expression = expression.when(condition, value)
    return expression.otherwise(otherwise) if otherwise is not None else expression


def reject(reason: RejectReason, detail: Column) -> Column:
    """A verdict: the reject reason and its detail, as one struct."""
    return F.struct(F.lit(reason.value).alias("reason"), detail.alias("detail"))


def maybe_not_a_string(text: Column) -> Column:
    """Cheap first-character test before the regex: regexes decode the text to a Java String."""
    # A set lookup: the same test spelled as comparisons and startswith made the generated
    # code too big for the JIT, and the whole projection much slower.
    return F.coalesce(
        F.left(text, F.lit(1)).isin(*_NON_STRING_FIRST_CHARACTERS) & text.rlike(_MAYBE_NOT_A_STRING), F.lit(False)
    )


def blank(text: Column) -> Column:
    """``not text.strip()``; a first character from '!' to '~' settles it without a regex."""
    # Spark compares strings by their UTF-8 bytes: two comparisons test the first character
    # without cutting out a substring per row.
    first_is_printable = (text >= "!") & (text < "\x7f")
    return F.coalesce(~first_is_printable & text.rlike(_BLANK), F.lit(False))


def json_type_of(variant: Column, name: str) -> Column:
    """Spark's name for the JSON type of field ``name``: STRING, BIGINT, DECIMAL(2,1), VOID..."""
    return F.schema_of_variant(F.variant_get(variant, f"$.{name}", "variant"))


def variant_type_allowed(json_type: str, variant_type: Column) -> Column:
    """Does a variant type satisfy the field's JSON Schema type, as Python's checks do?"""
    absent_or_null = variant_type.isNull() | (variant_type == "VOID")
    if json_type == "string":
        return absent_or_null | (variant_type == "STRING")
    is_integer = variant_type.isin(*_INTEGER_VARIANT_TYPES) | (
        # A whole number too large for BIGINT is still a Python int; 2.0 is a float.
        variant_type.rlike(r"^DECIMAL\((19|[2-9][0-9]),0\)$")
    )
    if json_type == "integer":
        return absent_or_null | is_integer
    # "number": ints and floats alike
    return absent_or_null | is_integer | variant_type.startswith("DECIMAL") | (variant_type == "DOUBLE")


def parse_timestamp(text: Column) -> Column:
    """``streaming.events.parse_timestamp`` in Spark, without its year range (:func:`in_year_range`)."""
    normalized = F.regexp_replace(
        text,
        _OTHER_ISO_TIMESTAMP,
        # seconds default to :00 and an empty fraction to 0, as fromisoformat reads them
        "$1T$2$3.$4 $5",
    )
    normalized = F.regexp_replace(F.regexp_replace(normalized, r"T(\d{2}:\d{2})\.", "T$1:00."), r"\. ", ".0 ")
    return first(
        [
            (text.rlike(_PLAIN_TIMESTAMP), text.try_cast("timestamp")),
            (text.rlike(_OTHER_ISO_TIMESTAMP), F.regexp_replace(normalized, " ", "").try_cast("timestamp")),
        ]
    )


def in_year_range(timestamp: Column) -> Column:
    """Null for a timestamp outside years 1-9999 in UTC (a cheap comparison of longs)."""
    return F.when(F.unix_micros(timestamp).between(_MIN_TIMESTAMP_MICROS, _MAX_TIMESTAMP_MICROS), timestamp)


def sent_at(headers: Column) -> Column:
    """The producer's send time from the first ``sent_at_ms`` header: ``streaming.events.parse_sent_at_ms``.

    The producer sends it as the only header: read directly there, the lambda search over all
    headers (interpreted per row, a visible share of the stream's Spark CPU) runs only when it
    is not. Only ASCII digits up to MAX_SENT_AT_MS become a timestamp: ``timestamp_millis``
    of any long overflowed (10^16 ms) and failed the batch, and a year beyond 9999 passed
    Spark and broke the Python reject writer. ``try_cast`` gives null beyond a long (so
    beyond the window) and reads leading zeros as the reference does.
    """
    first_header = F.try_element_at(headers, F.lit(1))
    searched = F.try_element_at(F.filter(headers, lambda item: item["key"] == SENT_AT_HEADER), F.lit(1))
    header = F.when(first_header["key"] == SENT_AT_HEADER, first_header).otherwise(searched)
    text = header["value"].cast("string")
    milliseconds = F.when(text.rlike(r"^[0-9]+\z"), text.try_cast("long"))
    return F.when(milliseconds <= MAX_SENT_AT_MS, F.timestamp_millis(milliseconds))


def timestamp_out_of_range(event_timestamp: Column, broker_timestamp: Column) -> Column:
    """``streaming.events.timestamp_out_of_range`` in Spark: the detail's tail, or null inside the window."""
    event_micros = F.unix_micros(event_timestamp)
    # The moment minus a day (at least year 2000) cannot overflow, whatever the broker says.
    ahead = event_micros - _micros(MAX_AHEAD_OF_BROKER) > F.unix_micros(broker_timestamp)
    return first(
        [
            (event_micros < _micros(EARLIEST_EVENT_TIME - EPOCH), F.lit(EARLY_DETAIL)),
            (F.coalesce(ahead, F.lit(False)), F.lit(AHEAD_DETAIL)),
        ]
    )


def _micros(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds


def is_json_object(text: Column, parsed: Column, corrupt: Column, variant: Column) -> Column:
    """Is ``text`` one JSON object and nothing more? from_json (``parsed``) says so unless the row is ``corrupt``.

    A corrupt row is an object with a badly typed field, or not (strict) JSON at all: the
    ``variant`` parse settles it where there is one, a parse as a map of strings elsewhere
    (which, unlike the variant parse, takes duplicate keys).
    """
    as_map = F.from_json(text, "map<string,string>", STRICT_JSON_OPTIONS)
    return F.coalesce(
        parsed.isNotNull()
        & ends_with_first_value(text)
        & first(
            [
                (~corrupt, F.lit(True)),
                (variant.isNotNull(), F.schema_of_variant(variant).startswith("OBJECT")),
            ],
            otherwise=as_map.isNotNull(),
        ),
        F.lit(False),
    )


def ends_with_first_value(text: Column) -> Column:
    """Does the text end (but for JSON whitespace) where its first value, an object, ends?

    from_json reads the first value and ignores what follows; the reference calls that
    malformed. Hot path: the text's first '}' is its last non-blank character, so the object
    closes there. Otherwise the text is parsed twice more, wrapped: in ``[...]`` anything
    after the object but a ']' breaks the array or adds an element to it, and in
    ``{"w":...}`` a ']' after it breaks the object. Wrapping adds one level of nesting.
    """
    wrapped = {**STRICT_JSON_OPTIONS, "maxNestingDepth": str(MAX_NESTING_DEPTH + 1)}
    as_array = F.from_json(F.concat(F.lit("["), text, F.lit("]")), "array<string>", wrapped)
    as_member = F.from_json(F.concat(F.lit('{"w":'), text, F.lit("}")), "map<string,string>", wrapped)
    closes_at_the_end = (F.instr(text, "}") == F.length(text)) | text.rlike(_FIRST_CLOSE_THEN_BLANK)
    return closes_at_the_end | F.coalesce((F.size(as_array) == 1) & as_member.isNotNull(), F.lit(False))


def _colons(text: Column) -> Column:
    return F.octet_length(text) - F.octet_length(F.replace(text, F.lit(":"), F.lit("")))


def maybe_duplicate_key(text: Column, field: Mapping[str, Column], timestamp_text: Column) -> Column:
    """False only where no object in the text can have the same key twice; true where it may.

    Only the variant parse detects a duplicate key, and it is too dear for every row, so this
    counts instead. Without a backslash a string literal's text is its value, so every key
    ends at a ':' of its own and the text has at least as many keys as ':'s outside the
    event_timestamp value. Each field from_json found (non-null) or whose key ``"name":``
    appears (a null one) is at least one key with a name of its own. If those are all the
    ':'s there are, each name is a key exactly once and no other key exists: no duplicate.
    A producer's message passes; a ':' in another string (a product name) costs a probe.
    A string field holding a non-string value (its text may hold ':'s of nested keys) is
    probed anyway (:func:`maybe_not_a_string`).
    """
    named_keys = F.lit(0)
    for event_field in EVENT_FIELDS:
        value = field[event_field.name]
        key = f'"{event_field.name}"'
        null_with_key = F.when(value.isNull(), text.contains(f"{key}:") | text.rlike(f"{key}[ \\t\\n\\r]*:"))
        named_keys = named_keys + F.when(value.isNotNull() | F.coalesce(null_with_key, F.lit(False)), 1).otherwise(0)
    keys_at_least = _colons(text) - F.coalesce(_colons(timestamp_text), F.lit(0))
    return F.coalesce(text.contains("\\") | (keys_at_least > named_keys), F.lit(True))


def integer_literal(text: Column, name: str) -> Column:
    """Is field ``name`` written as a JSON integer? Spark's variant types one of over 38 digits DOUBLE.

    get_json_object keeps an integer's digits and writes a float through a double (1.0E50), so
    digits alone mean an integer (a Python int, as the reference reads it).
    """
    return F.coalesce(F.get_json_object(text, f"$.{name}").rlike(r"^-?[0-9]+\z"), F.lit(False))


def too_long_field(field: Mapping[str, Column]) -> Column:
    """The first field of ``LENGTH_LIMITS`` over its limit, described; null if none."""
    # octet_length is O(1) and bounds the character count: most rows skip counting.
    return first(
        [
            (
                (F.octet_length(field[name]) > max_length) & (F.length(field[name]) > max_length),
                F.concat(
                    F.lit(f"{name} is "), F.length(field[name]).cast("string"), F.lit(f" characters, over {max_length}")
                ),
            )
            for name, max_length in LENGTH_LIMITS
        ]
    )
