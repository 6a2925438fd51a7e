"""Bronze without Spark or Kafka: simulator messages written by the stream's own writer.

The dbt tests, the dashboard tests and the benchmarks fill Bronze here. Messages get the
Kafka positions a producer keyed by session would give them (:class:`KafkaPositions`), are
shaped as the stream's output, and go through :func:`streaming.bronze_batch.write_batch`:
the same COPY, lock and ledger row as a stream batch, so Bronze and its ledger look as if
the stream had written them.

Two ways in: :func:`write_messages` validates each message by the pure-Python reference
rules (broken ones included); :func:`bulk_load_valid_messages` is the bulk path for large
histories of valid messages (a simulator with ``bad_ratio=0``): pyarrow parses the JSON in
C++ and the writer skips the probe for event ids Bronze already holds.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.json as pajson

from streaming.bronze_batch import SOURCE_REPLAY, BatchResult, write_batch
from streaming.events import EVENT_FIELDS, Repair, parse_timestamp, validate_message
from streaming.reject_payload import reject_fields

KAFKA_PARTITIONS = 6

# Types of the columns write_batch expects (streaming.transforms.VALIDATED_COLUMNS).
_ARROW_TYPES = {"string": pa.string(), "double": pa.float64(), "long": pa.int64()}
EVENT_SCHEMA = pa.schema(
    [
        pa.field(
            event_field.name,
            pa.timestamp("us", tz="UTC")
            if event_field.name == "event_timestamp"
            else _ARROW_TYPES[event_field.spark_type],
        )
        for event_field in EVENT_FIELDS
    ]
)
VALIDATED_SCHEMA = pa.schema(
    [
        *EVENT_SCHEMA,
        pa.field("repaired", pa.bool_()),
        pa.field("repair_reason", pa.string()),
        pa.field("kafka_topic", pa.string()),
        pa.field("kafka_partition", pa.int32()),
        pa.field("kafka_offset", pa.int64()),
        pa.field("sent_at", pa.timestamp("us", tz="UTC")),
        pa.field("raw_value", pa.binary()),
        pa.field("raw_text", pa.string()),
        pa.field("raw_length", pa.int32()),
        pa.field("raw_sha256", pa.binary()),
        pa.field("reject_reason", pa.string()),
        pa.field("reject_detail", pa.string()),
    ]
)


@dataclass
class KafkaPositions:
    """Where the next message of each partition goes, as a producer keyed by session would."""

    topic: str
    partitions: int = KAFKA_PARTITIONS
    next_offsets: dict[int, int] = field(default_factory=dict)

    def place(self, key: bytes) -> tuple[int, int]:
        partition = zlib.crc32(key) % self.partitions
        offset = self.next_offsets.get(partition, 0)
        self.next_offsets[partition] = offset + 1
        return partition, offset


def validated_table(keys: Sequence[bytes], values: Sequence[bytes], positions: KafkaPositions) -> pa.Table:
    """Messages validated by the pure-Python reference rules, shaped as the stream's output.

    Equivalent to ``streaming.transforms.parse_and_validate`` without Spark (the stream's
    tests hold the two equal), so the dbt tests need no JVM.
    """
    rows: list[dict[str, Any]] = []
    for key, value in zip(keys, values, strict=True):
        partition, offset = positions.place(key)
        row: dict[str, Any] = dict.fromkeys(VALIDATED_SCHEMA.names)
        row.update(kafka_topic=positions.topic, kafka_partition=partition, kafka_offset=offset, repaired=False)
        verdict = validate_message(value)
        if verdict.accepted:
            event = json.loads(value)
            row.update({name: event.get(name) for name in EVENT_SCHEMA.names})
            row["event_timestamp"] = parse_timestamp(event["event_timestamp"])
            row["product_price"] = float(event["product_price"])
            if verdict.repair is Repair.PURCHASE_NULL_QUANTITY:
                row.update(quantity=1, repaired=True, repair_reason=verdict.repair.value)
        else:
            row.update(reject_fields(value)._asdict())
            row["reject_reason"] = verdict.reason.value if verdict.reason else None
            row["reject_detail"] = verdict.detail
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=VALIDATED_SCHEMA)


def valid_messages_table(keys: Sequence[bytes], values: Sequence[bytes], positions: KafkaPositions) -> pa.Table:
    """Messages known to be valid, parsed in bulk by pyarrow and shaped as the stream's output."""
    events = pajson.read_json(
        io.BytesIO(b"\n".join(values)),
        parse_options=pajson.ParseOptions(explicit_schema=EVENT_SCHEMA),
    )
    placed = [positions.place(key) for key in keys]
    size = events.num_rows
    columns = {
        **{name: events[name] for name in EVENT_SCHEMA.names},
        "repaired": pa.repeat(pa.scalar(False), size),
        "kafka_topic": pa.repeat(pa.scalar(positions.topic, pa.string()), size),
        "kafka_partition": pa.array([partition for partition, _ in placed], pa.int32()),
        "kafka_offset": pa.array([offset for _, offset in placed], pa.int64()),
    }
    return pa.table(
        [
            columns[name] if name in columns else pa.nulls(size, column.type)
            for name, column in zip(VALIDATED_SCHEMA.names, VALIDATED_SCHEMA, strict=True)
        ],
        schema=VALIDATED_SCHEMA,
    )


def write_messages(
    conn: psycopg.Connection, keys: Sequence[bytes], values: Sequence[bytes], positions: KafkaPositions
) -> int | None:
    """One Bronze batch through the stream's transactional writer; returns its batch_id."""
    table = validated_table(keys, values, positions)
    return write_batch(conn, table, topic=positions.topic, source=SOURCE_REPLAY).batch_id


def bulk_load_valid_messages(
    conn: psycopg.Connection, keys: Sequence[bytes], values: Sequence[bytes], positions: KafkaPositions
) -> BatchResult:
    """Many valid messages (fresh simulator ids) into Bronze as one batch: one COPY, one ledger row."""
    table = valid_messages_table(keys, values, positions)
    return write_batch(conn, table, topic=positions.topic, source=SOURCE_REPLAY, event_ids_are_new=True)
