"""Parse and validate Kafka clickstream messages in Spark: a pure ``DataFrame -> DataFrame``.

The stream (``streaming/job.py``) and the batch replay that Dagster's on-demand Bronze
materialization runs both call :func:`parse_and_validate` on a Kafka source DataFrame
(``value``, ``topic``, ``partition``, ``offset`` and, when read with ``includeHeaders``,
``headers``). It returns one row per message with the typed event columns, the Kafka
position, ``sent_at`` from the producer's header and ``reject_reason``/``reject_detail``
(null for a good row); :func:`split_good_rejected` splits it for writers that want two
DataFrames, while the Bronze sink splits the single Arrow table of a micro-batch itself.

The rules are those of :func:`streaming.events.validate_message`, applied column-wise and
in the same order, so a message gets the same first reason in both. ``from_json`` in
PERMISSIVE mode does the parsing on the hot path. Two things it cannot tell on its own are
resolved from a VARIANT parse of the same text, computed only for the few rows that need
it (CASE WHEN is evaluated lazily per row): which field carries a wrong JSON type on a
corrupt row, and whether a string field holding ``123``/``true``/``{...}`` was a JSON
string (``from_json`` turns any JSON value into text for a string column, and a number
beyond double range such as ``1e400`` into the quoted text ``"Infinity"``).

Limits both sides share: Jackson refuses a number of more than 1000 digits and nesting
deeper than 1000 levels (``malformed_json``), and the reference refuses them too; a
timestamp outside years 1-9999 once in UTC is ``invalid_timestamp`` (Python's datetime
cannot hold it); ids over ``MAX_ID_LENGTH`` characters are ``field_too_long``.

Known differences from the Python reference, all on inputs the producer never writes:
a JSON object followed by a second object (``{..} {..}``) is accepted by Jackson;
duplicate keys, or a bare ``NaN``/``Infinity`` literal anywhere in the message, make the
variant probe fail: a corrupt row is then rejected as ``wrong_type`` without naming the
field, and a string field whose text looks like a non-string (``123``, ``{..}``, ``true``)
is taken to hold one (``wrong_type``, that field named) even where it was a JSON string
(``"123"`` beside a ``NaN``), which Python accepts; ISO-8601 basic and week-date
timestamps (``20260103T142345Z``, ``2026-W01-1T...``), which Python's ``fromisoformat``
accepts, are ``invalid_timestamp`` here. The reference's digit count for the 1000-digit
limit follows what Spark was measured to do (a leading zero counts differently); a number
right at the limit that Jackson reads through another code path may still differ by one.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from streaming.events import (
    EVENT_FIELDS,
    EVENT_TYPES,
    LENGTH_LIMITS,
    MAX_PRICE,
    MAX_QUANTITY,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    SENT_AT_HEADER,
    RejectReason,
    Repair,
    spark_schema,
)

CORRUPT_COLUMN = "_corrupt"

# Column order of the COPY into bronze.clickstream_events (ingested_at and batch_id are
# added by the sink) and into bronze.clickstream_rejects.
EVENT_COLUMNS: tuple[str, ...] = (
    *(field.name for field in EVENT_FIELDS),
    "repaired",
    "repair_reason",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "sent_at",
)
REJECT_COLUMNS: tuple[str, ...] = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "raw_value",
    "raw_text",
    "reject_reason",
    "reject_detail",
    "sent_at",
)
VALIDATED_COLUMNS: tuple[str, ...] = (
    *EVENT_COLUMNS,
    "raw_value",
    "raw_text",
    "reject_reason",
    "reject_detail",
)

# Jackson's defaults differ from Python's json module in one way that matters: single
# quotes. NaN/Infinity literals are allowed by both.
FROM_JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT_COLUMN,
    "allowSingleQuotes": "false",
}

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


def _maybe_not_a_string(text: Column) -> Column:
    """Cheap first-character test before the regex: regexes decode the text to a Java String."""
    # A set lookup: the same test spelled as comparisons and startswith made the generated
    # code too big for the JIT, and the whole projection twice as slow.
    return F.coalesce(
        F.left(text, F.lit(1)).isin(*_NON_STRING_FIRST_CHARACTERS) & text.rlike(_MAYBE_NOT_A_STRING), F.lit(False)
    )


def _blank(text: Column) -> Column:
    """``not text.strip()``; a first character from '!' to '~' settles it without a regex."""
    # Spark compares strings by their UTF-8 bytes: two comparisons test the first character
    # without cutting out a substring per row.
    first_is_printable = (text >= "!") & (text < "\x7f")
    return F.coalesce(~first_is_printable & text.rlike(_BLANK), F.lit(False))


def _json_type_of(variant: Column, name: str) -> Column:
    """Spark's name for the JSON type of field ``name``: STRING, BIGINT, DECIMAL(2,1), VOID..."""
    return F.schema_of_variant(F.variant_get(variant, f"$.{name}", "variant"))


def _variant_type_allowed(json_type: str, variant_type: Column) -> Column:
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


def _verdict(reason: RejectReason, detail: Column) -> Column:
    return F.struct(F.lit(reason.value).alias("reason"), detail.alias("detail"))


def _first(cases: list[tuple[Column, Column]], otherwise: Column | None = None) -> Column:
    """CASE WHEN c1 THEN v1 WHEN c2 THEN v2 ... (the first matching rule wins)."""
    expression = F.when(*cases[0])
    for condition, value in cases[1:]:
        expression = expression.when(condition, value)
    return expression.otherwise(otherwise) if otherwise is not None else expression


def _parse_timestamp(text: Column) -> Column:
    """``streaming.events.parse_timestamp`` in Spark, without its year range (:func:`_in_year_range`)."""
    normalized = F.regexp_replace(
        text,
        _OTHER_ISO_TIMESTAMP,
        # seconds default to :00 and an empty fraction to 0, as fromisoformat reads them
        "$1T$2$3.$4 $5",
    )
    normalized = F.regexp_replace(F.regexp_replace(normalized, r"T(\d{2}:\d{2})\.", "T$1:00."), r"\. ", ".0 ")
    return _first(
        [
            (text.rlike(_PLAIN_TIMESTAMP), text.try_cast("timestamp")),
            (text.rlike(_OTHER_ISO_TIMESTAMP), F.regexp_replace(normalized, " ", "").try_cast("timestamp")),
        ]
    )


def _in_year_range(timestamp: Column) -> Column:
    """Null for a timestamp outside years 1-9999 in UTC (a cheap comparison of longs)."""
    return F.when(F.unix_micros(timestamp).between(_MIN_TIMESTAMP_MICROS, _MAX_TIMESTAMP_MICROS), timestamp)


def _sent_at(headers: Column) -> Column:
    """The producer's send time from the ``sent_at_ms`` header (epoch ms as ASCII digits).

    The producer sends it as the only header: read directly there, the lambda search over all
    headers (interpreted per row, ~13% of the stream's Spark CPU) runs only when it is not.
    """
    first = F.try_element_at(headers, F.lit(1))
    searched = F.try_element_at(F.filter(headers, lambda item: item["key"] == SENT_AT_HEADER), F.lit(1))
    header = F.when(first["key"] == SENT_AT_HEADER, first).otherwise(searched)
    return F.timestamp_millis(header["value"].cast("string").try_cast("long"))


def parse_and_validate(kafka_messages: DataFrame) -> DataFrame:
    """Kafka source rows -> one validated row per message (see the module docstring).

    Columns: :data:`VALIDATED_COLUMNS`. A good row has a null ``reject_reason`` and typed
    event columns; a rejected row keeps ``raw_value`` (and ``raw_text`` when it is UTF-8).
    """
    validated = kafka_messages
    for projection in _projections("headers" in kafka_messages.columns):
        validated = validated.select(*projection)
    return validated


# Building the expressions takes thousands of py4j calls (~0.7 s), which a micro-batch must
# not pay each time: they are built once per JVM and reused (a Column is unresolved, so
# it binds to each batch's DataFrame).
_PROJECTIONS: dict[tuple[int, bool], list[list[Column | str]]] = {}


def _projections(has_headers: bool) -> list[list[Column | str]]:
    from pyspark import SparkContext

    key = (id(SparkContext._gateway), has_headers)
    if key not in _PROJECTIONS:
        _PROJECTIONS[key] = _build_projections(has_headers)
    return _PROJECTIONS[key]


def _build_projections(has_headers: bool) -> list[list[Column | str]]:
    """The successive select lists of :func:`parse_and_validate`."""
    projections: list[list[Column | str]] = []
    parse_schema = StructType([*spark_schema().fields, StructField(CORRUPT_COLUMN, StringType())])

    value = F.col("value")
    text = value.cast("string")
    parsed = F.from_json(text, parse_schema, FROM_JSON_OPTIONS)
    projections.append(
        [
            value.alias("raw_value"),
            text.alias("_text"),
            F.is_valid_utf8(text).alias("_utf8"),
            parsed.alias("_parsed"),
            F.col("topic").alias("kafka_topic"),
            F.col("partition").alias("kafka_partition"),
            F.col("offset").alias("kafka_offset"),
            (_sent_at(F.col("headers")) if has_headers else F.lit(None).cast("timestamp")).alias("sent_at"),
        ]
    )
    # Parsed once here, range-checked in the next projection (a column of its own, so the
    # regexes run once), then used by the rule and as the typed column.
    projections.append(["*", _parse_timestamp(F.col("_parsed.event_timestamp")).alias("_parsed_timestamp")])

    text = F.col("_text")
    field = {name: F.col(f"_parsed.{name}") for name in (*(f.name for f in EVENT_FIELDS), CORRUPT_COLUMN)}
    corrupt = field[CORRUPT_COLUMN].isNotNull()
    price = field["product_price"]
    price_not_finite = F.isnan(price) | price.isin(float("inf"), float("-inf"))

    in_range_timestamp = _in_year_range(F.col("_parsed_timestamp"))
    # The first string field whose text may be a non-string, or null: the name serves as
    # the wrong_type detail when the variant probe fails, without a second regex pass.
    string_field_checks: list[tuple[Column, Column]] = []
    for event_field in EVENT_FIELDS:
        if event_field.json_type != "string":
            continue
        check = _maybe_not_a_string(field[event_field.name])
        if event_field.name == "event_timestamp":
            # A timestamp that parses was a JSON string; only a failed one needs the check.
            check = in_range_timestamp.isNull() & check
        string_field_checks.append((check, F.lit(event_field.name)))
    projections.append(
        [
            "*",
            in_range_timestamp.alias("_event_timestamp"),
            _first(string_field_checks).alias("_maybe_not_a_string_field"),
        ]
    )
    event_timestamp = F.col("_event_timestamp")
    maybe_not_a_string = F.col("_maybe_not_a_string_field").isNotNull()
    # Rows whose JSON types from_json cannot vouch for. A string "NaN" parses as a double NaN.
    needs_type_probe = corrupt | maybe_not_a_string | F.coalesce(price_not_finite, F.lit(False))

    # The variant parse and the JSON type of every field, for those rows only. Kept in
    # columns of their own so the generated code holds them once (a JVM method above 8 KB
    # of bytecode is never JIT-compiled).
    projections.append(["*", F.when(needs_type_probe, F.try_parse_json(text)).alias("_variant")])
    variant = F.col("_variant")
    projections.append(
        [
            "*",
            F.when(
                variant.isNotNull(),
                F.struct(*(_json_type_of(variant, f.name).alias(f.name) for f in EVENT_FIELDS)),
            ).alias("_types"),
        ]
    )
    json_type = {f.name: F.col(f"_types.{f.name}") for f in EVENT_FIELDS}

    # Is the value a JSON object? from_json says so unless the row is corrupt; a corrupt row
    # is an object with a badly typed field, or not JSON at all.
    as_map = F.from_json(text, "map<string,string>", {"allowSingleQuotes": "false"})
    is_object = (
        F.col("_parsed").isNotNull()
        & (text.endswith("}") | text.rlike(_ENDS_WITH_OBJECT))
        & _first(
            [
                (~corrupt, F.lit(True)),
                (variant.isNotNull(), F.schema_of_variant(variant).startswith("OBJECT")),
            ],
            otherwise=as_map.isNotNull(),
        )
    )

    wrong_type_cases: list[tuple[Column, Column]] = [
        # Parsed as an object by Jackson but not by the variant parser (a NaN literal or a
        # duplicate key beside the bad field): the field cannot be named.
        (corrupt & variant.isNull(), F.lit("a field has a JSON type the schema does not allow")),
        # Not corrupt, but the probe failed while a string field's text looks like a
        # non-string: taken to be one (it nearly always is), and that field named.
        (
            maybe_not_a_string & variant.isNull(),
            F.concat(F.col("_maybe_not_a_string_field"), F.lit(" is not a string (JSON type unknown)")),
        ),
    ]
    for event_field in EVENT_FIELDS:
        variant_type = json_type[event_field.name]
        wrong = variant.isNotNull() & ~_variant_type_allowed(event_field.json_type, variant_type)
        detail = F.concat(
            F.lit(f"{event_field.name} is "), F.lower(variant_type), F.lit(f", not {event_field.json_type}")
        )
        wrong_type_cases.append((wrong, detail))
    wrong_type_detail = _first(wrong_type_cases)  # every case needs a corrupt row or a variant

    def present(name: str) -> Column:
        # On a corrupt row a field can be present yet null in the parse: an integer beyond
        # BIGINT. Python treats that as a value, so the range rules apply to it.
        return field[name].isNotNull() | (corrupt & json_type[name].isNotNull() & (json_type[name] != "VOID"))

    missing_cases = [
        (
            ~present(name) | _blank(field[name])
            if dict((f.name, f.json_type) for f in EVENT_FIELDS)[name] == "string"
            else ~present(name),
            F.lit(name),
        )
        for name in REQUIRED_FIELDS
    ]
    missing_field = _first(missing_cases)

    # octet_length is O(1) and bounds the character count: most rows skip counting.
    too_long = _first(
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

    quantity = field["quantity"]
    quantity_present = present("quantity")
    event_type = field["event_type"]

    reason_and_detail = _first(
        [
            (F.col("raw_value").isNull(), _verdict(RejectReason.MALFORMED_JSON, F.lit("null message value"))),
            (~F.col("_utf8"), _verdict(RejectReason.INVALID_UTF8, F.lit("value is not valid UTF-8"))),
            (~is_object, _verdict(RejectReason.MALFORMED_JSON, F.lit("not a JSON object"))),
            (wrong_type_detail.isNotNull(), _verdict(RejectReason.WRONG_TYPE, wrong_type_detail)),
            (missing_field.isNotNull(), _verdict(RejectReason.MISSING_FIELD, missing_field)),
            (too_long.isNotNull(), _verdict(RejectReason.FIELD_TOO_LONG, too_long)),
            (
                F.coalesce(field["schema_version"] != SCHEMA_VERSION, F.lit(True)),
                _verdict(
                    RejectReason.UNSUPPORTED_SCHEMA_VERSION,
                    F.coalesce(field["schema_version"].cast("string"), F.lit("out of range")),
                ),
            ),
            (
                ~event_type.isin(*EVENT_TYPES),
                _verdict(RejectReason.UNKNOWN_EVENT_TYPE, F.substring(event_type, 1, 100)),
            ),
            (
                event_timestamp.isNull(),
                _verdict(RejectReason.INVALID_TIMESTAMP, F.substring(field["event_timestamp"], 1, 100)),
            ),
            (
                # NaN first: Spark orders NaN above every number.
                price_not_finite | (price > MAX_PRICE),
                _verdict(RejectReason.INVALID_PRICE, price.cast("string")),
            ),
            (price < 0, _verdict(RejectReason.NEGATIVE_PRICE, price.cast("string"))),
            (
                ~quantity_present & (event_type == "add_to_cart"),
                _verdict(RejectReason.INVALID_QUANTITY, F.lit("null quantity on add_to_cart")),
            ),
            (
                quantity_present & F.coalesce(~quantity.between(1, MAX_QUANTITY), F.lit(True)),
                _verdict(
                    RejectReason.INVALID_QUANTITY,
                    F.coalesce(quantity.cast("string"), F.lit("out of range")),
                ),
            ),
        ]
    )

    # Python's rules accept exactly the rows no case above matched.
    projections.append(["*", reason_and_detail.alias("_verdict")])
    accepted = F.col("_verdict").isNull()
    repair = accepted & quantity.isNull() & (event_type == "purchase")

    event_columns: list[Column] = []
    for event_field in EVENT_FIELDS:
        name = event_field.name
        if name == "event_timestamp":
            column = F.col("_event_timestamp")
        elif name == "quantity":
            column = F.when(repair, F.lit(1).cast("long")).otherwise(quantity)
        else:
            column = field[name]
        event_columns.append(F.when(accepted, column).alias(name))

    projections.append(
        [
            *event_columns,
            F.coalesce(repair, F.lit(False)).alias("repaired"),
            F.when(repair, F.lit(Repair.PURCHASE_NULL_QUANTITY.value)).alias("repair_reason"),
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            "sent_at",
            # The raw message is kept only for rejects: good rows do not carry it to Python.
            F.when(~accepted, F.col("raw_value")).alias("raw_value"),
            F.when(~accepted & F.col("_utf8"), text).alias("raw_text"),
            F.col("_verdict.reason").alias("reject_reason"),
            F.col("_verdict.detail").alias("reject_detail"),
        ]
    )
    return projections


def split_good_rejected(validated: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(good rows with :data:`EVENT_COLUMNS`, rejects with :data:`REJECT_COLUMNS`)."""
    good = validated.where(F.col("reject_reason").isNull()).select(*EVENT_COLUMNS)
    rejected = validated.where(F.col("reject_reason").isNotNull()).select(*REJECT_COLUMNS)
    return good, rejected
