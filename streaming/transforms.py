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

from pyspark.sql import DataFrame

from streaming.events import EVENT_FIELDS
from streaming.parse_stages import FROM_JSON_OPTIONS, parse_stage, timestamp_stage, type_probe_stage
from streaming.stage_columns import CORRUPT_COLUMN, Projection
from streaming.verdict_stage import output_stage, verdict_stage

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
        *parse_stage(has_headers, has_timestamp),
        *timestamp_stage(),
        *type_probe_stage(),
        *verdict_stage(),
        *output_stage(),
    ]


__all__ = [
    "CORRUPT_COLUMN",
    "EVENT_COLUMNS",
    "FROM_JSON_OPTIONS",
    "REJECT_COLUMNS",
    "VALIDATED_COLUMNS",
    "Projection",
    "parse_and_validate",
]
