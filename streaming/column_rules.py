"""Column expressions the validation in :mod:`streaming.transforms` is built from.

Each is a rule of :func:`streaming.events.validate_message` (or a piece of one) spelled as a
Spark ``Column``: text tests on what ``from_json`` produced, a field's JSON type read from a
VARIANT, ISO-8601 timestamps as ``datetime.fromisoformat`` reads them, the producer's
``sent_at_ms`` header. Pure expressions: nothing here touches a DataFrame.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column
from pyspark.sql import functions as F

from streaming.events import LENGTH_LIMITS, SENT_AT_HEADER, RejectReason

# Python's json.loads allows only JSON whitespace after the value; Jackson ignores
# whatever follows the first object, so trailing text is caught here.
_ENDS_WITH_OBJECT = r"\}[ \t\n\r]*$"
# A value from_json produced for a string column that may have been a non-string JSON
# value (number, true/false, object, array): only these rows are checked in the variant.
# Jackson writes a non-finite number (NaN, or 1e400 read as Infinity) in quotes.
_MAYBE_NOT_A_STRING = r'(?s)^(-?[0-9][0-9.eE+\-]*|true|false|[\{\[].*|"(NaN|-?Infinity)")$'
# str.strip()'s whitespace: Java's Unicode White_Space plus the ASCII separators 0x1c-0x1f.
_BLANK = r"(?U)^[\s\x{1c}-\x{1f}\x{85}\x{a0}]*$"
# The producer's own format and its near relatives, cast directly (the hot path).
_PLAIN_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+\-]\d{2}:\d{2})$"
# Other extended ISO-8601 forms datetime.fromisoformat accepts (hour-minute only, a
# lowercase t, a comma before the fraction, offsets as +hh, +hhmm or +hh:mm:ss).
_OTHER_ISO_TIMESTAMP = (
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2})(:\d{2})?(?:[.,](\d*))?"
    r"(Z|[+\-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)$"
)
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
    """The producer's send time from the ``sent_at_ms`` header (epoch ms as ASCII digits).

    The producer sends it as the only header: read directly there, the lambda search over all
    headers (interpreted per row, a visible share of the stream's Spark CPU) runs only when it
    is not.
    """
    first_header = F.try_element_at(headers, F.lit(1))
    searched = F.try_element_at(F.filter(headers, lambda item: item["key"] == SENT_AT_HEADER), F.lit(1))
    header = F.when(first_header["key"] == SENT_AT_HEADER, first_header).otherwise(searched)
    return F.timestamp_millis(header["value"].cast("string").try_cast("long"))


def is_json_object(text: Column, parsed: Column, corrupt: Column, variant: Column) -> Column:
    """Is ``text`` a JSON object? from_json (``parsed``) says so unless the row is ``corrupt``.

    A corrupt row is an object with a badly typed field, or not JSON at all: the ``variant``
    parse settles it where there is one, a parse as a map of strings elsewhere.
    """
    as_map = F.from_json(text, "map<string,string>", {"allowSingleQuotes": "false"})
    return (
        parsed.isNotNull()
        & (text.endswith("}") | text.rlike(_ENDS_WITH_OBJECT))
        & first(
            [
                (~corrupt, F.lit(True)),
                (variant.isNotNull(), F.schema_of_variant(variant).startswith("OBJECT")),
            ],
            otherwise=as_map.isNotNull(),
        )
    )


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
