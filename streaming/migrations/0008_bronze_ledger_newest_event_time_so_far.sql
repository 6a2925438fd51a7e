-- The newest event time Bronze held once a batch had committed, on the batch's own ledger row.
--
-- The dashboard's event-to-Gold freshness asks "the newest event time in every batch up to
-- Gold's batch_id" on every refresh. As max(max_event_time) over bronze.ingest_batches that read
-- grew with the ledger (and missed the hours rolled up). Kept on each row when it is written,
-- the answer is one index probe: the row at or below the batch_id (and the hourly row below it).
--
-- Set by a BEFORE INSERT trigger from bronze.ingest_totals (one row per topic): the Bronze lock
-- orders the writers, so the sums hold every batch committed before this one. Nothing to
-- change in the writers.

select pg_advisory_xact_lock(hashtext('shopstream.bronze')::bigint);

alter table bronze.ingest_batches add column if not exists newest_event_time_so_far timestamptz;
alter table bronze.ingest_batches_hourly add column if not exists newest_event_time_so_far timestamptz;

comment on column bronze.ingest_batches.newest_event_time_so_far is
    'max(max_event_time) over this batch and every batch before it, all topics';
comment on column bronze.ingest_batches_hourly.newest_event_time_so_far is
    'newest_event_time_so_far of the hour''s last batch';

-- The freshness read: the newest hourly row at or below a batch_id (all topics); dbt's test of
-- the events' batch_id: the topic's hour whose range holds it.
create index if not exists ingest_batches_hourly_last_batch_idx on bronze.ingest_batches_hourly (last_batch_id);
create index if not exists ingest_batches_hourly_topic_last_batch_idx
    on bronze.ingest_batches_hourly (kafka_topic, last_batch_id);

with units as (
    select batch_id as last_batch_id, max_event_time from bronze.ingest_batches
    union all
    select last_batch_id, max_event_time from bronze.ingest_batches_hourly
), running as (
    select last_batch_id, max(max_event_time) over (order by last_batch_id) as so_far from units
), per_batch as (
    update bronze.ingest_batches as batches set newest_event_time_so_far = running.so_far
    from running where running.last_batch_id = batches.batch_id
    returning 1
)
update bronze.ingest_batches_hourly as rolled set newest_event_time_so_far = running.so_far
from running where running.last_batch_id = rolled.last_batch_id;

create or replace function bronze.ingest_batches_event_time_so_far() returns trigger
language plpgsql as $$
begin
    new.newest_event_time_so_far := greatest(
        new.max_event_time, (select max(newest_event_time) from bronze.ingest_totals)
    );
    return new;
end;
$$;

drop trigger if exists ingest_batches_event_time_so_far on bronze.ingest_batches;
create trigger ingest_batches_event_time_so_far
    before insert on bronze.ingest_batches
    for each row execute function bronze.ingest_batches_event_time_so_far();
