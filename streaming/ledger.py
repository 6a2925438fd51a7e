"""The Bronze ledger: ``bronze.ingest_batches`` and ``bronze.ingest_offsets``, without Spark or pyarrow.

The stream's sink, the Dagster sensor and checks, the live dashboard and the benchmarks all
ask the same question -- up to which Kafka offset is Bronze complete? -- and every Bronze
writer must take the same lock, so that SQL lives here once. ``bronze.ingest_offsets`` is
advanced by a trigger on each new ledger row (migration 0003), so no writer can forget it.
Importing this module costs only psycopg.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import psycopg

# Next offset to write per partition. Named parameter so psycopg and pandas.read_sql callers
# can both pass {"topic": ...}.
COMMITTED_OFFSETS_SQL = """\
select kafka_partition as partition, next_offset
from bronze.ingest_offsets
where kafka_topic = %(topic)s"""

# One lock for every Bronze writer (all topics, the stream, a Dagster replay, the benchmarks'
# bulk load): writers never interleave, so batch_id -- the cursor dbt and the sensor
# follow -- grows in commit order, and a probe for already-written ids is exact.
_BRONZE_LOCK_SQL = "select pg_advisory_xact_lock(hashtext('shopstream.bronze')::bigint)"


def committed_offsets(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """{partition: next offset to write} of ``topic`` in Bronze; empty before the first batch."""
    rows = conn.execute(COMMITTED_OFFSETS_SQL, {"topic": topic}).fetchall()
    return {int(partition): int(offset) for partition, offset in rows}


def read_committed_offsets(database_url: str, topic: str) -> dict[int, int]:
    """:func:`committed_offsets` over a connection of its own."""
    with psycopg.connect(database_url, connect_timeout=10, autocommit=True) as conn:
        return committed_offsets(conn, topic)


def lock_bronze(conn: psycopg.Connection) -> None:
    """Take the Bronze writers' lock until the end of the current transaction."""
    conn.execute(_BRONZE_LOCK_SQL)


def json_offsets(offsets: Mapping[int, int]) -> str:
    """{partition: offset} as the ledger's jsonb text, partitions in order."""
    return json.dumps({str(partition): offset for partition, offset in sorted(offsets.items())})


def messages_behind(watermarks: Mapping[int, tuple[int, int]], committed: Mapping[int, int]) -> dict[int, int]:
    """Consumer lag per partition: messages the broker holds that Bronze has not committed.

    ``watermarks`` are the broker's {partition: (low, high)}, ``committed`` Bronze's next
    offsets. A partition Bronze has not reached yet counts from its low watermark: what
    retention has dropped cannot be read, so it is not lag. Spark commits nothing to Kafka,
    so no Kafka tool can show this figure; the stream's log, the Dagster check, the live
    dashboard, `shopstream up` and the benchmarks all use this one definition.
    """
    return {
        partition: max(0, high - max(committed.get(partition, low), low))
        for partition, (low, high) in sorted(watermarks.items())
    }
