"""The validation's last stages: the first rule a row breaks, then the validated columns.

Part of :func:`streaming.transforms.parse_and_validate` (its module docstring gives the rules,
in the order the verdict checks them).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from streaming.column_rules import (
    blank,
    first,
    integer_literal,
    is_json_object,
    reject,
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
)
from streaming.stage_columns import Projection, corrupt, fields, json_types, present, price_not_finite


def verdict_stage() -> list[Projection]:
    """The first rule a row breaks, as (reason, detail), in the reference's order; null for a good row."""
    field = fields()
    price = field["product_price"]
    quantity = field["quantity"]
    quantity_present = present("quantity")
    event_type = field["event_type"]
    wrong_type_detail = _wrong_type_detail()
    missing_field = _missing_field()
    too_long = too_long_field(field)
    out_of_range = timestamp_out_of_range(F.col("_event_timestamp"), F.col("_broker_timestamp"))
    is_object = is_json_object(F.col("_text"), F.col("_parsed"), corrupt(), F.col("_variant"))
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
                price_not_finite() | (price > MAX_PRICE),
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
    json_type = json_types()
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


def _missing_field() -> Column:
    """The first required field absent, null or (a string) blank; null if none."""
    field = fields()
    json_types = {f.name: f.json_type for f in EVENT_FIELDS}
    return first(
        [
            (~present(name) | blank(field[name]) if json_types[name] == "string" else ~present(name), F.lit(name))
            for name in REQUIRED_FIELDS
        ]
    )


def output_stage() -> list[Projection]:
    """The validated columns: typed event columns for a good row (quantity repaired), the raw message for a reject."""
    from streaming.reject_payload import spark_reject_columns

    # Python's rules accept exactly the rows no rule of the verdict matched.
    accepted = F.col("_verdict").isNull()
    raw_message = spark_reject_columns(F.col("raw_value"), F.col("_text"), F.col("_utf8"))
    field = fields()
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
