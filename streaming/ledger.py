"""Reading ``bronze.ingest_batches``, the Bronze ledger, without Spark or pyarrow.

The stream's sink, the Dagster checks and the live dashboard all ask the same question —
up to which Kafka offset is Bronze complete? — so the SQL lives here once. Importing this
module costs only psycopg.
"""

from __future__ import annotations

import psycopg

# Next offset to write per partition: the max of end_offsets over the topic's ledger rows
# ({"<partition>": <next offset>} jsonb). Named parameter so psycopg and pandas.read_sql
# callers can both pass {"topic": ...}.
COMMITTED_OFFSETS_SQL = """\
select (offsets.key)::int as partition, max((offsets.value)::bigint) as next_offset
from bronze.ingest_batches as batches, jsonb_each_text(batches.end_offsets) as offsets
where batches.kafka_topic = %(topic)s
group by 1"""


def committed_offsets(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """{partition: next offset to write} of ``topic`` in Bronze; empty before the first batch."""
    rows = conn.execute(COMMITTED_OFFSETS_SQL, {"topic": topic}).fetchall()
    return {int(partition): int(offset) for partition, offset in rows}


def read_committed_offsets(database_url: str, topic: str) -> dict[int, int]:
    """:func:`committed_offsets` over a connection of its own."""
    with psycopg.connect(database_url, connect_timeout=10, autocommit=True) as conn:
        return committed_offsets(conn, topic)
