"""The validation's first stages: the message parsed, its timestamp read, and a type probe for the rows that need one.

Part of :func:`streaming.transforms.parse_and_validate` (its module docstring gives the rules).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from streaming.column_rules import (
    STRICT_JSON_OPTIONS,
    first,
    in_year_range,
    json_type_of,
    maybe_duplicate_key,
    maybe_not_a_string,
    parse_timestamp,
    sent_at,
)
from streaming.events import EVENT_FIELDS, spark_schema
from streaming.stage_columns import CORRUPT_COLUMN, Projection, corrupt, fields, price_not_finite

FROM_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN, **STRICT_JSON_OPTIONS}


def parse_stage(has_headers: bool, has_timestamp: bool) -> list[Projection]:
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


def timestamp_stage() -> list[Projection]:
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
    field = fields()
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


def type_probe_stage() -> list[Projection]:
    """A VARIANT parse and the JSON type of every field, for the rows whose types or keys from_json cannot vouch for.

    Kept in columns of their own so the generated code holds them once (a JVM method above
    8 KB of bytecode is never JIT-compiled). In strict JSON the variant parse fails only on
    a duplicate key where from_json reads an object: ``_probed`` with a null ``_variant``.
    """
    maybe_not_a_string_field = F.col("_maybe_not_a_string_field").isNotNull()
    needs_type_probe = (
        corrupt()
        | maybe_not_a_string_field
        | F.coalesce(price_not_finite(), F.lit(False))
        | maybe_duplicate_key(F.col("_text"), fields(), F.col("_parsed.event_timestamp"))
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
