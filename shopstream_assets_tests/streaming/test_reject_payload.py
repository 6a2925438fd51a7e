"""streaming.reject_payload: a reject keeps a bounded prefix, its length and SHA-256, alike in Spark and Python."""

from __future__ import annotations

import hashlib
import random
import uuid

import psycopg

from shopstream import database
from shopstream_assets_tests.streaming.conftest import kafka_frame
from streaming.bronze_batch import write_batch
from streaming.bronze_load import KafkaPositions, validated_table
from streaming.migrations import migrate, migration_scripts
from streaming.reject_payload import RAW_PREFIX_BYTES, reject_fields
from streaming.transforms import REJECT_COLUMNS, parse_and_validate


def _text_of(width: int, total_bytes: int) -> bytes:
    """Not JSON (a reject), UTF-8 of characters ``width`` bytes wide, about ``total_bytes`` long."""
    character = {1: "a", 2: "é", 3: "€", 4: "😀"}[width]
    return b"x" + (character * (total_bytes // width)).encode()


def rejected_values() -> list[bytes | None]:
    noise = random.Random(7)
    values: list[bytes | None] = [
        None,
        b"{oops",
        b"\xc3\x28{}",
        b"x" * (RAW_PREFIX_BYTES - 1),
        b"x" * RAW_PREFIX_BYTES,
        b"x" * (RAW_PREFIX_BYTES + 1),
        bytes(noise.getrandbits(8) for _ in range(100_000)),
        b"\x00" + b"x" * 5_000,
    ]
    # Each width, with the cut falling at each byte of a character.
    values += [_text_of(width, RAW_PREFIX_BYTES + shift) for width in (2, 3, 4) for shift in range(width)]
    return values


def test_python_reference_keeps_a_whole_character_prefix_length_and_hash() -> None:
    value = "é".encode() * 2_000
    fields = reject_fields(value)
    assert fields.raw_value == value[:RAW_PREFIX_BYTES]
    assert fields.raw_text == "é" * (RAW_PREFIX_BYTES // 2)
    assert (fields.raw_length, fields.raw_sha256) == (len(value), hashlib.sha256(value).digest())
    cut_in_a_character = b"x" + value
    assert reject_fields(cut_in_a_character).raw_text == "x" + "é" * (RAW_PREFIX_BYTES // 2 - 1)
    assert reject_fields(b"\xff" * 5_000).raw_text is None
    assert reject_fields(None) == (None, None, None, None)


def test_spark_keeps_the_same_prefix_text_length_and_hash_as_the_reference(spark) -> None:
    values = rejected_values()
    collected = parse_and_validate(kafka_frame(spark, values)).toArrow()
    # What reaches the driver is bounded per row (docs/memory.md), however large the values.
    assert collected.nbytes < len(values) * 3 * RAW_PREFIX_BYTES
    rows = sorted(collected.to_pylist(), key=lambda row: row["kafka_offset"])
    assert all(row["reject_reason"] is not None for row in rows)
    for value, row in zip(values, rows, strict=True):
        spark_fields = (row["raw_value"], row["raw_text"], row["raw_length"], row["raw_sha256"])
        assert spark_fields == tuple(reject_fields(value)), f"{value!r:.80}"
        if value is not None:
            assert len(row["raw_value"]) == min(len(value), RAW_PREFIX_BYTES)
            assert row["raw_text"] is None or len(row["raw_text"].encode()) <= RAW_PREFIX_BYTES


def test_bronze_stores_what_spark_and_the_reference_keep(spark, database_url: str) -> None:
    values = rejected_values()
    from_spark = parse_and_validate(kafka_frame(spark, values)).toArrow()
    assert set(REJECT_COLUMNS) <= set(from_spark.column_names)
    with psycopg.connect(database_url) as conn:
        spark_result = write_batch(conn, from_spark, topic="clicks")
        reference = validated_table([b"k%d" % index for index in range(len(values))], values, KafkaPositions("ref"))
        reference_result = write_batch(conn, reference, topic="ref")
    assert spark_result.rejects == reference_result.rejects == len(values)
    query = (
        "select raw_value, raw_text, raw_length, raw_sha256 from bronze.clickstream_rejects"
        " where kafka_topic = %s order by raw_length nulls first, raw_sha256"
    )
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(query, ("clicks",)).fetchall()
        assert stored == conn.execute(query, ("ref",)).fetchall()
    for raw_value, raw_text, raw_length, raw_sha256 in stored:
        if raw_length is None:
            continue
        assert len(raw_value) == min(raw_length, RAW_PREFIX_BYTES)
        whole = next(value for value in values if value is not None and hashlib.sha256(value).digest() == raw_sha256)
        assert (bytes(raw_value), raw_length) == (whole[:RAW_PREFIX_BYTES], len(whole))
        # NUL is stored as U+FFFD, as PostgreSQL text requires.
        assert raw_text is None or raw_text == reject_fields(whole).raw_text.replace("\x00", "\ufffd")


def test_rejects_written_before_0006_get_their_length_and_hash_from_their_whole_value(admin_database_url: str) -> None:
    name = f"t_rejects_0006_{uuid.uuid4().hex[:8]}"
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    whole = b"\xff" * 5_000
    try:
        with database.connect(url) as conn:
            conn.execute("create table public.shopstream_migrations (name text primary key, applied_at timestamptz)")
            for script_name, script in migration_scripts():
                if script_name >= "0006":
                    break
                conn.execute(script)
                conn.execute("insert into public.shopstream_migrations values (%s, now())", (script_name,))
            (batch_id,) = conn.execute(
                "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets,"
                " messages_consumed, rows_written, rejects, duplicates, started_at)"
                " values ('t', 'stream', '{\"0\": 0}', '{\"0\": 2}', 2, 0, 2, 0, now()) returning batch_id"
            ).fetchone()
            for offset, value in enumerate((whole, None)):
                conn.execute(
                    "insert into bronze.clickstream_rejects (kafka_topic, kafka_partition, kafka_offset, raw_value,"
                    " reason, ingested_at, batch_id) values ('t', 0, %s, %s, 'invalid_utf8', now(), %s)",
                    (offset, value, batch_id),
                )
        assert "0006_bronze_rejects_bounded_raw_value.sql" in migrate(url)
        with database.connect(url) as conn:
            rows = conn.execute(
                "select raw_value, raw_length, raw_sha256 from bronze.clickstream_rejects order by kafka_offset"
            ).fetchall()
        # The whole value stays: only new rejects are cut.
        assert rows == [(whole, len(whole), hashlib.sha256(whole).digest()), (None, None, None)]
    finally:
        database.drop_database(admin_database_url, name)
