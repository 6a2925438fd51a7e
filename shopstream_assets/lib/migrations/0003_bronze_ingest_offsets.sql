-- Where Bronze stands in each partition: the next offset to write. Every Bronze writer
-- advances it in the transaction that writes the batch (streaming/ledger.py), so it always
-- equals the max of end_offsets over the topic's ingest_batches rows -- which is how it was
-- computed before, on every micro-batch, under the Bronze lock: 354 ms with 100,000 ledger
-- rows, a day of one batch a second. This table keeps that read at a few rows however long
-- the stream has run.
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
