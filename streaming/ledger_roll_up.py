"""Rolling old ledger rows up: per-batch rows older than an age become one row per topic and hour.

``bronze.ingest_batches`` gains a row per micro-batch, 86,400 a day at one a second; past the
age kept (``SHOPSTREAM_LEDGER_KEEP_DAYS``), each (topic, clock hour of commit) becomes one
``bronze.ingest_batches_hourly`` row with its batches' sums, their batch_id range, each
partition's smallest start and largest end offset, and the running newest event time of its
last batch. Every rule of the ledger still holds after a roll-up:

- ``bronze.ingest_totals`` does not move: the delete trigger leaves the sums alone while
  ``shopstream.ledger_roll_up`` is on (migration 0007), the sums only change table;
- ``bronze.ingest_offsets`` does not move, and every batch it names keeps its row (its key
  needs it), the topic's newest batch too: the hole check and the sensor's cursor
  (:func:`streaming.ledger.batches_after`, :func:`streaming.ledger.latest_batch_id`) read the same;
- batch ids are not reused or renumbered: a rolled-up range lies below the kept batches, so
  no cursor sees it as new; an event's batch_id lies in its topic's rolled-up range or names a
  kept row (what dbt's test on ``clickstream_events.batch_id`` checks).

Micro-batches never wait for a roll-up. It does not take the Bronze writers' lock, only one of
its own (two roll-ups do not merge the same hour at once). A writer inserts its own new batch,
advances ``bronze.ingest_offsets`` to it and adds to ``bronze.ingest_totals``; the roll-up
deletes rows older than the age that no offset names and that are no topic's newest, and
writes only the hourly table, and its delete trigger touches no sum: no row is locked by
both. The roll-up goes in chunks of :data:`CHUNK_BATCHES` rows, a transaction each, so a
first roll-up of weeks of ledger holds no long transaction (nor its dead rows) either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg

# Rows per transaction: a first roll-up after weeks holds no long transaction.
CHUNK_BATCHES = 20_000

# Only roll-ups wait for this lock, never a Bronze writer.
_ROLL_UP_LOCK_SQL = "select pg_advisory_xact_lock(hashtext('shopstream.ledger_roll_up')::bigint)"

# The oldest eligible rows (by batch_id, the primary key: old rows come first), then the moved
# rows and their hours' earlier roll-ups (a batch kept once for ingest_offsets joins its hour
# later) summed again into one row per topic and hour.
_ROLL_UP_SQL = """
with moved as (
    delete from bronze.ingest_batches as batches
    where batches.batch_id in (
        select candidates.batch_id from bronze.ingest_batches as candidates
        where candidates.committed_at < now() - %(older_than)s::interval
          and not exists (select 1 from bronze.ingest_offsets as offsets
                          where offsets.batch_id = candidates.batch_id)
          and candidates.batch_id < (select totals.last_batch_id from bronze.ingest_totals as totals
                                     where totals.kafka_topic = candidates.kafka_topic)
        order by candidates.batch_id
        limit %(chunk)s
    )
    returning batches.*
), hours as (
    select distinct kafka_topic, date_trunc('hour', committed_at, 'UTC') as hour from moved
), earlier as (
    delete from bronze.ingest_batches_hourly as rolled
    using hours
    where (rolled.kafka_topic, rolled.hour) = (hours.kafka_topic, hours.hour)
    returning rolled.*
), units as (
    select kafka_topic, date_trunc('hour', committed_at, 'UTC') as hour, 1::bigint as batches,
           (source = 'stream')::int::bigint as stream_batches, batch_id as first_batch_id,
           batch_id as last_batch_id, start_offsets, end_offsets, messages_consumed::bigint,
           rows_written::bigint, rejects::bigint, duplicates::bigint, repaired::bigint, min_event_time,
           max_event_time, started_at as first_started_at, committed_at as last_committed_at,
           newest_event_time_so_far
    from moved
    union all
    select kafka_topic, hour, batches, stream_batches, first_batch_id, last_batch_id, start_offsets, end_offsets,
           messages_consumed, rows_written, rejects, duplicates, repaired, min_event_time, max_event_time,
           first_started_at, last_committed_at, newest_event_time_so_far
    from earlier
), starts as (
    select kafka_topic, hour, jsonb_object_agg(partition, start_offset) as start_offsets
    from (
        select kafka_topic, hour, offsets.key as partition, min(offsets.value::bigint) as start_offset
        from units, jsonb_each_text(units.start_offsets) as offsets
        group by 1, 2, 3
    ) as per_partition
    group by 1, 2
), ends as (
    select kafka_topic, hour, jsonb_object_agg(partition, end_offset) as end_offsets
    from (
        select kafka_topic, hour, offsets.key as partition, max(offsets.value::bigint) as end_offset
        from units, jsonb_each_text(units.end_offsets) as offsets
        group by 1, 2, 3
    ) as per_partition
    group by 1, 2
), written as (
    insert into bronze.ingest_batches_hourly (
        kafka_topic, hour, batches, stream_batches, first_batch_id, last_batch_id, start_offsets, end_offsets,
        messages_consumed, rows_written, rejects, duplicates, repaired, min_event_time, max_event_time,
        first_started_at, last_committed_at, newest_event_time_so_far)
    select sums.kafka_topic, sums.hour, sums.batches, sums.stream_batches, sums.first_batch_id,
           sums.last_batch_id, coalesce(starts.start_offsets, '{}'), coalesce(ends.end_offsets, '{}'),
           sums.messages_consumed, sums.rows_written, sums.rejects, sums.duplicates, sums.repaired,
           sums.min_event_time, sums.max_event_time, sums.first_started_at, sums.last_committed_at,
           sums.newest_event_time_so_far
    from (
        select kafka_topic, hour, sum(batches) as batches, sum(stream_batches) as stream_batches,
               min(first_batch_id) as first_batch_id, max(last_batch_id) as last_batch_id,
               sum(messages_consumed) as messages_consumed, sum(rows_written) as rows_written,
               sum(rejects) as rejects, sum(duplicates) as duplicates, sum(repaired) as repaired,
               min(min_event_time) as min_event_time, max(max_event_time) as max_event_time,
               min(first_started_at) as first_started_at, max(last_committed_at) as last_committed_at,
               max(newest_event_time_so_far) as newest_event_time_so_far
        from units
        group by kafka_topic, hour
    ) as sums
    left join starts using (kafka_topic, hour)
    left join ends using (kafka_topic, hour)
    returning kafka_topic, hour
)
select written.kafka_topic, written.hour, (select count(*) from moved) from written
"""


@dataclass(frozen=True)
class RollUp:
    """What one roll-up did: per-batch rows folded, hourly rows written (new or merged)."""

    batches: int
    hours: int


def roll_up_ledger(conn: psycopg.Connection, older_than: timedelta, chunk_batches: int = CHUNK_BATCHES) -> RollUp:
    """Fold the ledger's per-batch rows committed more than ``older_than`` ago into hourly rows,
    ``chunk_batches`` rows per transaction, oldest first, until none is left to fold."""
    batches = 0
    hours: set[tuple[str, object]] = set()
    while True:
        with conn.transaction():
            conn.execute(_ROLL_UP_LOCK_SQL)
            conn.execute("select set_config('shopstream.ledger_roll_up', 'on', true)")
            rows = conn.execute(_ROLL_UP_SQL, {"older_than": older_than, "chunk": chunk_batches}).fetchall()
        if not rows:
            return RollUp(batches, len(hours))
        batches += rows[0][2]
        hours.update((topic, hour) for topic, hour, _ in rows)
