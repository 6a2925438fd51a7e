"""Parse and validate Kafka clickstream messages in Spark: a pure ``DataFrame -> DataFrame``.

The stream (:mod:`streaming.job`) and the batch replay that Dagster's on-demand Bronze
materialization runs both call :func:`parse_and_validate` on a Kafka source DataFrame
(``value``, ``topic``, ``partition``, ``offset`` and, when read with ``includeHeaders``,
``headers``). It returns one row per message with the typed event columns, the Kafka
position, ``sent_at`` from the producer's header and ``reject_reason``/``reject_detail``
(null for a good row); the Bronze sink splits the Arrow table of a micro-batch itself.

The rules are those of :func:`streaming.events.validate_message`, applied column-wise and
in the same order, so every message gets ONE verdict: the same acceptance, the same first
reason and the same stored values in both (a property test and a fuzz run hold them equal,
with no input set aside). ``from_json`` in PERMISSIVE mode does the parsing on the hot path,
as strict JSON (no single quotes, no NaN/Infinity literals). What it cannot tell on its own
comes from a VARIANT parse of the same text, computed only for the few rows that need it
(CASE WHEN is evaluated lazily per row): which field carries a wrong JSON type on a corrupt
row; whether a string field holding ``123``/``true``/``{...}`` was a JSON string
(``from_json`` turns any JSON value into text for a string column, and a number beyond
double range such as ``1e400`` into the quoted text ``"Infinity"``); and whether an object
has the same key twice, which the variant parse refuses (``duplicate_key``; a cheap count of
keys, :func:`streaming.column_rules.maybe_duplicate_key`, picks the rows that may).

The shared rules the two sides follow, each written once in :mod:`streaming.events` (or
:mod:`streaming.strict_json`):
a message is ONE JSON object, so text after it (``{..} {..}``, ``{..}}``) is
``malformed_json`` (``from_json`` reads the first value and ignores the rest: the end is
checked here), as is a bare ``NaN``/``Infinity``; a key twice in one object, at any depth,
is ``duplicate_key``, checked after the syntax (an array of such objects is not an object
first); an integer is any JSON number without fraction or exponent, however
many digits (Spark's variant types one over 38 digits DOUBLE: its text settles it);
``event_timestamp`` must have :data:`streaming.events.TIMESTAMP_PATTERN`'s shape (no basic
or week-date ISO-8601, which Python's ``fromisoformat`` would take). Limits both sides
share: Jackson refuses a number of more than 1000 digits, nesting deeper than 1000 levels
and a key over 50,000 characters (UTF-16 code units; ``malformed_json``), and the reference refuses them too;
a timestamp outside years 1-9999 once in UTC is ``invalid_timestamp`` (Python's datetime
cannot hold it); one outside the window from 2000 to a day after the Kafka record's
timestamp is ``timestamp_out_of_range``; a string field over its ``max_length`` characters
is ``field_too_long``; ``sent_at`` is the first ``sent_at_ms`` header's value only when it
is ASCII digits within years 1970-9999 (:func:`streaming.events.parse_sent_at_ms`). The
reference's digit count for the 1000-digit limit follows what Spark was measured to do (a
leading zero counts differently).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from streaming.column_rules import (
    STRICT_JSON_OPTIONS,
    blank,
    first,
    in_year_range,
    integer_literal,
    is_json_object,
    json_type_of,
    maybe_duplicate_key,
    maybe_not_a_string,
    parse_timestamp,
    reject,
    sent_at,
    timestamp_out_of_range,
    too_long_field,
    variant_type_allowed,
)
from streaming.events import (
    DUPLICATE_KEY_DETAIL,
    EVENT_FIELDS,
    EVENT_TYPES,
    MAX_PRICE,
    MAX_QUANTITY,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
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
    "raw_length",
    "raw_sha256",
    "reject_reason",
    "reject_detail",
    "sent_at",
)
VALIDATED_COLUMNS: tuple[str, ...] = (
    *EVENT_COLUMNS,
    "raw_value",
    "raw_text",
    "raw_length",
    "raw_sha256",
    "reject_reason",
    "reject_detail",
)

FROM_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN, **STRICT_JSON_OPTIONS}

Projection = list[Column | str]


def parse_and_validate(kafka_messages: DataFrame) -> DataFrame:
    """Kafka source rows -> one validated row per message (see the module docstring).

    Columns: :data:`VALIDATED_COLUMNS`. A good row has a null ``reject_reason`` and typed
    event columns; a rejected row keeps ``raw_value`` (and ``raw_text`` when it is UTF-8).
    """
    validated = kafka_messages
    columns = kafka_messages.columns
    for projection in _projections("headers" in columns, "timestamp" in columns, kafka_messages):
        validated = validated.select(*projection)
    return validated


# Building the expressions takes thousands of py4j calls, which a micro-batch must not pay
# each time: they are built once per SparkContext and reused (a Column is unresolved, so it
# binds to each batch's DataFrame).
_PROJECTIONS: dict[tuple[str, bool, bool], list[Projection]] = {}


def _projections(has_headers: bool, has_timestamp: bool, kafka_messages: DataFrame) -> list[Projection]:
    key = (kafka_messages.sparkSession.sparkContext.applicationId, has_headers, has_timestamp)
    if key not in _PROJECTIONS:
        _PROJECTIONS[key] = _build_projections(has_headers, has_timestamp)
    return _PROJECTIONS[key]


def _build_projections(has_headers: bool, has_timestamp: bool) -> list[Projection]:
    """The successive select lists of :func:`parse_and_validate`, stage by stage."""
    return [
        *_parse_stage(has_headers, has_timestamp),
        *_timestamp_stage(),
        *_type_probe_stage(),
        *_verdict_stage(),
        *_output_stage(),
    ]


# Column references into the stages' results (unresolved: cheap, and bound per DataFrame).


def _fields() -> dict[str, Column]:
    """from_json's value of each event field, and its corrupt-record column."""
    return {name: F.col(f"_parsed.{name}") for name in (*(f.name for f in EVENT_FIELDS), CORRUPT_COLUMN)}


def _corrupt() -> Column:
    return F.col(f"_parsed.{CORRUPT_COLUMN}").isNotNull()


def _price_not_finite() -> Column:
    price = F.col("_parsed.product_price")
    return F.isnan(price) | price.isin(float("inf"), float("-inf"))


def _json_types() -> dict[str, Column]:
    """The JSON type of each field, from the type probe (null where no probe ran)."""
    return {f.name: F.col(f"_types.{f.name}") for f in EVENT_FIELDS}


def _parse_stage(has_headers: bool, has_timestamp: bool) -> list[Projection]:
    """The message's text, whether it is UTF-8, from_json's parse, the Kafka position, its timestamp and sent_at.

    Without a ``timestamp`` column (a frame not read from Kafka) the record's timestamp is
    the query's present moment, as the reference's is when it is given none.
    """
    parse_schema = StructType([*spark_schema().fields, StructField(CORRUPT_COLUMN, StringType())])
    value = F.col("value")
    text = value.cast("string")
    return [
        [
            value.alias("raw_value"),
            text.alias("_text"),
            F.is_valid_utf8(text).alias("_utf8"),
            F.from_json(text, parse_schema, FROM_JSON_OPTIONS).alias("_parsed"),
            F.col("topic").alias("kafka_topic"),
            F.col("partition").alias("kafka_partition"),
            F.col("offset").alias("kafka_offset"),
            (F.col("timestamp") if has_timestamp else F.current_timestamp()).alias("_broker_timestamp"),
            (sent_at(F.col("headers")) if has_headers else F.lit(None).cast("timestamp")).alias("sent_at"),
        ]
    ]


def _timestamp_stage() -> list[Projection]:
    """event_timestamp parsed, then range-checked; beside the check, the first suspect string field.

    Parsed in a projection of its own, so the regexes run once, then used by the rule and as
    the typed column. The suspect field (see :func:`_first_suspect_string_field`) needs the
    checked timestamp and shares its projection.
    """
    in_range_timestamp = in_year_range(F.col("_parsed_timestamp"))
    return [
        ["*", parse_timestamp(F.col("_parsed.event_timestamp")).alias("_parsed_timestamp")],
        [
            "*",
            in_range_timestamp.alias("_event_timestamp"),
            _first_suspect_string_field(in_range_timestamp).alias("_maybe_not_a_string_field"),
        ],
    ]


def _first_suspect_string_field(in_range_timestamp: Column) -> Column:
    """The first string field whose text may be a non-string, or null: such a row is probed."""
    field = _fields()
    string_field_checks: list[tuple[Column, Column]] = []
    for event_field in EVENT_FIELDS:
        if event_field.json_type != "string":
            continue
        check = maybe_not_a_string(field[event_field.name])
        if event_field.name == "event_timestamp":
            # A timestamp that parses was a JSON string; only a failed one needs the check.
            check = in_range_timestamp.isNull() & check
        string_field_checks.append((check, F.lit(event_field.name)))
    return first(string_field_checks)


def _type_probe_stage() -> list[Projection]:
    """A VARIANT parse and the JSON type of every field, for the rows whose types or keys from_json cannot vouch for.

    Kept in columns of their own so the generated code holds them once (a JVM method above
    8 KB of bytecode is never JIT-compiled). In strict JSON the variant parse fails only on
    a duplicate key where from_json reads an object: ``_probed`` with a null ``_variant``.
    """
    maybe_not_a_string_field = F.col("_maybe_not_a_string_field").isNotNull()
    needs_type_probe = (
        _corrupt()
        | maybe_not_a_string_field
        | F.coalesce(_price_not_finite(), F.lit(False))
        | maybe_duplicate_key(F.col("_text"), _fields(), F.col("_parsed.event_timestamp"))
    )
    variant = F.col("_variant")
    return [
        [
            "*",
            needs_type_probe.alias("_probed"),
            F.when(needs_type_probe, F.try_parse_json(F.col("_text"))).alias("_variant"),
        ],
        [
            "*",
            F.when(
                variant.isNotNull(),
                F.struct(*(json_type_of(variant, f.name).alias(f.name) for f in EVENT_FIELDS)),
            ).alias("_types"),
        ],
    ]


def _verdict_stage() -> list[Projection]:
    """The first rule a row breaks, as (reason, detail), in the reference's order; null for a good row."""
    field = _fields()
    price = field["product_price"]
    quantity = field["quantity"]
    quantity_present = _present("quantity")
    event_type = field["event_type"]
    wrong_type_detail = _wrong_type_detail()
    missing_field = _missing_field()
    too_long = too_long_field(field)
    out_of_range = timestamp_out_of_range(F.col("_event_timestamp"), F.col("_broker_timestamp"))
    is_object = is_json_object(F.col("_text"), F.col("_parsed"), _corrupt(), F.col("_variant"))
    reason_and_detail = first(
        [
            (F.col("raw_value").isNull(), reject(RejectReason.MALFORMED_JSON, F.lit("null message value"))),
            (~F.col("_utf8"), reject(RejectReason.INVALID_UTF8, F.lit("value is not valid UTF-8"))),
            (~is_object, reject(RejectReason.MALFORMED_JSON, F.lit("not one JSON object"))),
            (
                F.col("_probed") & F.col("_variant").isNull(),
                reject(RejectReason.DUPLICATE_KEY, F.lit(DUPLICATE_KEY_DETAIL)),
            ),
            (wrong_type_detail.isNotNull(), reject(RejectReason.WRONG_TYPE, wrong_type_detail)),
            (missing_field.isNotNull(), reject(RejectReason.MISSING_FIELD, missing_field)),
            (too_long.isNotNull(), reject(RejectReason.FIELD_TOO_LONG, too_long)),
            (
                F.coalesce(field["schema_version"] != SCHEMA_VERSION, F.lit(True)),
                reject(
                    RejectReason.UNSUPPORTED_SCHEMA_VERSION,
                    F.coalesce(field["schema_version"].cast("string"), F.lit("out of range")),
                ),
            ),
            (
                ~event_type.isin(*EVENT_TYPES),
                reject(RejectReason.UNKNOWN_EVENT_TYPE, F.substring(event_type, 1, 100)),
            ),
            (
                F.col("_event_timestamp").isNull(),
                reject(RejectReason.INVALID_TIMESTAMP, F.substring(field["event_timestamp"], 1, 100)),
            ),
            (
                out_of_range.isNotNull(),
                reject(
                    RejectReason.TIMESTAMP_OUT_OF_RANGE,
                    F.concat(F.substring(field["event_timestamp"], 1, 100), F.lit(" "), out_of_range),
                ),
            ),
            (
                # NaN first: Spark orders NaN above every number.
                _price_not_finite() | (price > MAX_PRICE),
                reject(RejectReason.INVALID_PRICE, price.cast("string")),
            ),
            (price < 0, reject(RejectReason.NEGATIVE_PRICE, price.cast("string"))),
            (
                ~quantity_present & (event_type == "add_to_cart"),
                reject(RejectReason.INVALID_QUANTITY, F.lit("null quantity on add_to_cart")),
            ),
            (
                quantity_present & F.coalesce(~quantity.between(1, MAX_QUANTITY), F.lit(True)),
                reject(
                    RejectReason.INVALID_QUANTITY,
                    F.coalesce(quantity.cast("string"), F.lit("out of range")),
                ),
            ),
        ]
    )
    return [["*", reason_and_detail.alias("_verdict")]]


def _wrong_type_detail() -> Column:
    """The wrong_type detail (the first badly typed field), or null; every case needs a variant.

    A wrongly typed field makes the row corrupt or a string field suspect, so it is probed;
    where the probe failed, the row was a duplicate_key already.
    """
    variant = F.col("_variant")
    json_type = _json_types()
    wrong_type_cases: list[tuple[Column, Column]] = []
    for event_field in EVENT_FIELDS:
        variant_type = json_type[event_field.name]
        wrong = variant.isNotNull() & ~variant_type_allowed(event_field.json_type, variant_type)
        if event_field.json_type == "integer":
            wrong = wrong & ~((variant_type == "DOUBLE") & integer_literal(F.col("_text"), event_field.name))
        detail = F.concat(
            F.lit(f"{event_field.name} is "), F.lower(variant_type), F.lit(f", not {event_field.json_type}")
        )
        wrong_type_cases.append((wrong, detail))
    return first(wrong_type_cases)


def _present(name: str) -> Column:
    # On a corrupt row a field can be present yet null in the parse: an integer beyond
    # BIGINT. Python treats that as a value, so the range rules apply to it.
    json_type = _json_types()[name]
    return _fields()[name].isNotNull() | (_corrupt() & json_type.isNotNull() & (json_type != "VOID"))


def _missing_field() -> Column:
    """The first required field absent, null or (a string) blank; null if none."""
    field = _fields()
    json_types = {f.name: f.json_type for f in EVENT_FIELDS}
    return first(
        [
            (~_present(name) | blank(field[name]) if json_types[name] == "string" else ~_present(name), F.lit(name))
            for name in REQUIRED_FIELDS
        ]
    )


def _output_stage() -> list[Projection]:
    """The validated columns: typed event columns for a good row (quantity repaired), the raw message for a reject."""
    from streaming.reject_payload import spark_reject_columns

    # Python's rules accept exactly the rows no rule of the verdict matched.
    accepted = F.col("_verdict").isNull()
    raw_message = spark_reject_columns(F.col("raw_value"), F.col("_text"), F.col("_utf8"))
    field = _fields()
    quantity = field["quantity"]
    repair = accepted & quantity.isNull() & (field["event_type"] == "purchase")
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
    return [
        [
            *event_columns,
            F.coalesce(repair, F.lit(False)).alias("repaired"),
            F.when(repair, F.lit(Repair.PURCHASE_NULL_QUANTITY.value)).alias("repair_reason"),
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            "sent_at",
            # The raw message is kept only for rejects (good rows do not carry it to Python),
            # and only its bounded prefix, length and hash leave the task.
            *(F.when(~accepted, column).alias(name) for name, column in raw_message._asdict().items()),
            F.col("_verdict.reason").alias("reject_reason"),
            F.col("_verdict.detail").alias("reject_detail"),
        ]
    ]
