"""Arrow rows into Bronze's tables: the types PostgreSQL stores, binary COPY, and the staging path.

:mod:`streaming.bronze_batch` decides which rows a batch writes; this module only moves them.
Events go over as PostgreSQL's binary COPY, encoded from Arrow in Rust (pgpq): no Python
object per row, and PostgreSQL parses no text. Rejects are few and go over as text COPY.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder
from psycopg import sql

from streaming.transforms import EVENT_COLUMNS

# PostgreSQL text cannot hold U+0000, which JSON allows ("\u0000"); it becomes U+FFFD.
NUL = "\x00"
NUL_REPLACEMENT = "\ufffd"

EVENT_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(name) for name in EVENT_COLUMNS)
_REJECT_TARGET_COLUMNS = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "raw_value",
    "raw_text",
    "raw_length",
    "raw_sha256",
    "reason",
    "reason_detail",
    "sent_at",
    "ingested_at",
    "batch_id",
)
_COPY_EVENTS_SQL = sql.SQL(
    "copy bronze.clickstream_events ({columns}, ingested_at, batch_id) from stdin (format binary)"
).format(columns=EVENT_COLUMN_LIST)
_COPY_STAGE_SQL = sql.SQL("copy clickstream_stage ({columns}) from stdin (format binary)").format(
    columns=EVENT_COLUMN_LIST
)
# Below this a price is 0.00 however it is rounded; its shortest text may need more decimal
# places than the decimal cast holds (5e-324).
_TINY_PRICE = 0.001


def without_nul(table: pa.Table) -> pa.Table:
    """``table`` with every U+0000 in its text columns replaced, as PostgreSQL text requires."""
    for index, column_field in enumerate(table.schema):
        if not pa.types.is_string(column_field.type) and not pa.types.is_large_string(column_field.type):
            continue
        column = table.column(index)
        if pc.any(pc.match_substring(column, NUL)).as_py():
            fixed = pc.replace_substring(column, NUL, NUL_REPLACEMENT)
            table = table.set_column(index, column_field, fixed)
    return table


def postgres_types(good: pa.Table) -> pa.Table:
    """The event columns in the exact types of bronze.clickstream_events, as binary COPY needs.

    The price becomes numeric(14,2) the way PostgreSQL reads a price's text: the double's
    shortest decimal form, rounded half away from zero (so 1.005 is 1.01, as it was when the
    rows went over as CSV). Quantity and schema_version are in range: validation checked.
    """
    price = good["product_price"]
    price = pc.if_else(pc.less(price, _TINY_PRICE), 0.0, price)
    as_decimal = pc.cast(pc.cast(price, pa.string()), pa.decimal128(38, 20))
    price = pc.cast(pc.round(as_decimal, 2, round_mode="half_towards_infinity"), pa.decimal128(14, 2))
    for name, column in (
        ("product_price", price),
        ("quantity", pc.cast(good["quantity"], pa.int32())),
        ("schema_version", pc.cast(good["schema_version"], pa.int16())),
    ):
        good = good.set_column(good.schema.get_field_index(name), name, column)
    return good


def _event_rows(events: pa.Table, batch_id: int, ingested_at: datetime) -> pa.Table:
    rows = postgres_types(events)
    return rows.append_column(
        "ingested_at", pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", "UTC")), rows.num_rows)
    ).append_column("batch_id", pa.repeat(pa.scalar(batch_id, pa.int64()), rows.num_rows))


def _copy_binary(conn: psycopg.Connection, statement: sql.Composable, rows: pa.Table) -> None:
    encoder = ArrowToPostgresBinaryEncoder(rows.schema)
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write(encoder.write_header())
        for record_batch in rows.to_batches():
            copy.write(encoder.write_batch(record_batch))
        copy.write(encoder.finish())


def copy_events(conn: psycopg.Connection, events: pa.Table, batch_id: int, ingested_at: datetime) -> None:
    """COPY ``events`` (:data:`EVENT_COLUMNS`) into ``bronze.clickstream_events`` as batch ``batch_id``.

    Raises ``UniqueViolation`` if an event_id is there already: run it in a savepoint.
    """
    _copy_binary(conn, _COPY_EVENTS_SQL, _event_rows(events, batch_id, ingested_at))


def insert_events_staged(
    conn: psycopg.Connection, good: pa.Table, batch_id: int, ingested_at: datetime
) -> tuple[int, int]:
    """COPY to a staging table, then insert what does not collide (the slow, always-safe path).

    Returns (rows inserted, of which repaired); the first copy of each event_id in Kafka order wins.
    """
    conn.execute(
        sql.SQL(
            "create temp table if not exists clickstream_stage on commit drop as"
            " select {columns} from bronze.clickstream_events with no data"
        ).format(columns=EVENT_COLUMN_LIST)
    )
    conn.execute("truncate clickstream_stage")
    _copy_binary(conn, _COPY_STAGE_SQL, postgres_types(good))
    with conn.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "with inserted as ("
                " insert into bronze.clickstream_events ({columns}, ingested_at, batch_id)"
                " select distinct on (event_id) {columns}, %s, %s from clickstream_stage"
                " order by event_id, kafka_partition, kafka_offset"
                " on conflict (event_id) do nothing returning repaired)"
                " select count(*), count(*) filter (where repaired) from inserted"
            ).format(columns=EVENT_COLUMN_LIST),
            (ingested_at, batch_id),
        )
        inserted, repaired = cursor.fetchone()
    return inserted, repaired


def copy_rejects(conn: psycopg.Connection, rejected: pa.Table, batch_id: int, ingested_at: datetime) -> None:
    """COPY rejected messages (``streaming.transforms.REJECT_COLUMNS``) into ``bronze.clickstream_rejects``."""
    statement = sql.SQL("copy bronze.clickstream_rejects ({columns}) from stdin").format(
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in _REJECT_TARGET_COLUMNS)
    )
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rejected.to_pylist():
            raw_text = row["raw_text"]
            copy.write_row(
                (
                    row["kafka_topic"],
                    row["kafka_partition"],
                    row["kafka_offset"],
                    row["raw_value"],
                    raw_text.replace(NUL, NUL_REPLACEMENT) if raw_text is not None else None,
                    row["raw_length"],
                    row["raw_sha256"],
                    row["reject_reason"],
                    (row["reject_detail"] or "").replace(NUL, NUL_REPLACEMENT) or None,
                    row["sent_at"],
                    ingested_at,
                    batch_id,
                )
            )
