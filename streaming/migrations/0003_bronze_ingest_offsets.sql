-- Where Bronze stands in each partition: the next offset to write. It always equals the max
-- of end_offsets over the topic's ingest_batches rows -- which is how it was computed before,
-- on every micro-batch, under the Bronze lock: 354 ms with 100,000 ledger rows, a day of one
-- batch a second. This table keeps that read at a few rows however long the stream has run.

-- The Bronze writers' lock (streaming/ledger.py): no batch commits between the backfill's
-- snapshot and the trigger, so none is missed.
select pg_advisory_xact_lock(hashtext('shopstream.bronze')::bigint);

create table if not exists bronze.ingest_offsets (
    kafka_topic         text        not null,
    kafka_partition     integer     not null,
    next_offset         bigint      not null check (next_offset >= 0),
    -- the batch that last advanced it
    batch_id            bigint      not null references bronze.ingest_batches (batch_id),
    primary key (kafka_topic, kafka_partition)
);

insert into bronze.ingest_offsets (kafka_topic, kafka_partition, next_offset, batch_id)
select distinct on (batches.kafka_topic, (offsets.key)::int)
    batches.kafka_topic, (offsets.key)::int, (offsets.value)::bigint, batches.batch_id
from bronze.ingest_batches as batches, jsonb_each_text(batches.end_offsets) as offsets
order by batches.kafka_topic, (offsets.key)::int, (offsets.value)::bigint desc, batches.batch_id desc
on conflict do nothing;

-- Advanced by the ledger row itself, in the batch's transaction: no writer can leave it
-- behind (an older build still running, a tool inserting ledger rows by hand).
create or replace function bronze.advance_ingest_offsets() returns trigger
language plpgsql as $$
begin
    insert into bronze.ingest_offsets (kafka_topic, kafka_partition, next_offset, batch_id)
    select new.kafka_topic, (offsets.key)::int, (offsets.value)::bigint, new.batch_id
    from jsonb_each_text(new.end_offsets) as offsets
    on conflict (kafka_topic, kafka_partition) do update
        set next_offset = excluded.next_offset, batch_id = excluded.batch_id
        where bronze.ingest_offsets.next_offset < excluded.next_offset;
    return null;
end;
$$;

drop trigger if exists ingest_batches_advance_offsets on bronze.ingest_batches;
create trigger ingest_batches_advance_offsets
    after insert on bronze.ingest_batches
    for each row execute function bronze.advance_ingest_offsets();
