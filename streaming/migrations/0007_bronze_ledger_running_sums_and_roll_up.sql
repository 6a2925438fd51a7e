-- Running sums of the ledger, and a place for its old per-batch rows once rolled up.
--
-- The sensor, the dashboard, `shopstream up` and the Bronze checks ask for a topic's totals
-- (batches, messages, rows, rejects, duplicates, rejects by reason) every few seconds; summed
-- over bronze.ingest_batches or grouped over bronze.clickstream_rejects, that read grows with
-- every batch the stream ever wrote. These tables hold the sums, kept by triggers in the
-- writer's own transaction (statement-level on the rejects: COPY fires them too), so a read is one row per
-- topic (per reason) however long the stream has run.
--
-- Invariant: bronze.ingest_totals = the topic's bronze.ingest_batches rows + its
-- bronze.ingest_batches_hourly rows, summed. streaming/ledger_roll_up.py moves rows from the
-- first to the second with shopstream.ledger_roll_up set, which tells the delete trigger the
-- sums are not leaving the ledger.

-- No batch commits between the backfill's snapshot and the triggers.
select pg_advisory_xact_lock(hashtext('shopstream.bronze')::bigint);

-- One row per topic and clock hour of commit: the per-batch rows older than the age kept.
-- Offsets stay per partition, as in bronze.ingest_batches (start: the smallest, end: the
-- largest of the hour's batches); counts are per batch in the ledger, so per hour here.
create table if not exists bronze.ingest_batches_hourly (
    kafka_topic         text        not null,
    hour                timestamptz not null,
    batches             bigint      not null,
    stream_batches      bigint      not null,
    first_batch_id      bigint      not null,
    last_batch_id       bigint      not null,
    start_offsets       jsonb       not null,
    end_offsets         jsonb       not null,
    messages_consumed   bigint      not null,
    rows_written        bigint      not null,
    rejects             bigint      not null,
    duplicates          bigint      not null,
    repaired            bigint      not null,
    min_event_time      timestamptz,
    max_event_time      timestamptz,
    first_started_at    timestamptz not null,
    last_committed_at   timestamptz not null,
    primary key (kafka_topic, hour)
);

create table if not exists bronze.ingest_totals (
    kafka_topic             text        primary key,
    batches                 bigint      not null default 0,
    messages_consumed       bigint      not null default 0,
    rows_written            bigint      not null default 0,
    rejects                 bigint      not null default 0,
    duplicates              bigint      not null default 0,
    repaired                bigint      not null default 0,
    last_batch_id           bigint,
    last_batch_committed_at timestamptz,
    newest_event_time       timestamptz
);

create table if not exists bronze.reject_totals (
    kafka_topic text   not null,
    reason      text   not null,
    rejects     bigint not null,
    primary key (kafka_topic, reason)
);

insert into bronze.ingest_totals
select kafka_topic, count(*), sum(messages_consumed), sum(rows_written), sum(rejects), sum(duplicates),
       sum(repaired), max(batch_id), max(committed_at), max(max_event_time)
from bronze.ingest_batches
group by kafka_topic
on conflict do nothing;

insert into bronze.reject_totals
select kafka_topic, reason, count(*) from bronze.clickstream_rejects group by kafka_topic, reason
on conflict do nothing;

-- A rolled-up batch keeps its rejects: their batch no longer has a row of its own, it lies in an
-- hourly row's first_batch_id..last_batch_id (as the events' batches, whose key went in 0002).
alter table bronze.clickstream_rejects drop constraint if exists clickstream_rejects_batch_id_fkey;

-- Row-level on the ledger (one row per batch): a plan cached with the row's values costs less
-- per batch than a statement trigger's query over its transition table.
create or replace function bronze.ingest_totals_add() returns trigger
language plpgsql as $$
begin
    insert into bronze.ingest_totals as totals
        (kafka_topic, batches, messages_consumed, rows_written, rejects, duplicates, repaired, last_batch_id,
         last_batch_committed_at, newest_event_time)
    values (new.kafka_topic, 1, new.messages_consumed, new.rows_written, new.rejects, new.duplicates, new.repaired,
            new.batch_id, new.committed_at, new.max_event_time)
    on conflict (kafka_topic) do update set
        batches = totals.batches + 1,
        messages_consumed = totals.messages_consumed + excluded.messages_consumed,
        rows_written = totals.rows_written + excluded.rows_written,
        rejects = totals.rejects + excluded.rejects,
        duplicates = totals.duplicates + excluded.duplicates,
        repaired = totals.repaired + excluded.repaired,
        last_batch_id = greatest(totals.last_batch_id, excluded.last_batch_id),
        last_batch_committed_at = greatest(totals.last_batch_committed_at, excluded.last_batch_committed_at),
        newest_event_time = greatest(totals.newest_event_time, excluded.newest_event_time);
    return null;
end;
$$;

-- The sink updates only a batch's offsets (this trigger does not fire); a change to its counts
-- (by hand) moves the sums by the difference.
create or replace function bronze.ingest_totals_change() returns trigger
language plpgsql as $$
begin
    update bronze.ingest_totals as totals set
        messages_consumed = totals.messages_consumed - old.messages_consumed,
        rows_written = totals.rows_written - old.rows_written,
        rejects = totals.rejects - old.rejects,
        duplicates = totals.duplicates - old.duplicates,
        repaired = totals.repaired - old.repaired
    where totals.kafka_topic = old.kafka_topic;
    update bronze.ingest_totals as totals set
        messages_consumed = totals.messages_consumed + new.messages_consumed,
        rows_written = totals.rows_written + new.rows_written,
        rejects = totals.rejects + new.rejects,
        duplicates = totals.duplicates + new.duplicates,
        repaired = totals.repaired + new.repaired
    where totals.kafka_topic = new.kafka_topic;
    return null;
end;
$$;

-- A batch deleted (a lost commit simulated, a topic cleared) leaves the sums; a roll-up's move
-- does not. Deletes are rare, so the newest batch and event time are found again from the rows.
create or replace function bronze.ingest_totals_remove() returns trigger
language plpgsql as $$
begin
    if current_setting('shopstream.ledger_roll_up', true) = 'on' then
        return null;
    end if;
    update bronze.ingest_totals as totals set
        batches = totals.batches - gone.batches,
        messages_consumed = totals.messages_consumed - gone.messages_consumed,
        rows_written = totals.rows_written - gone.rows_written,
        rejects = totals.rejects - gone.rejects,
        duplicates = totals.duplicates - gone.duplicates,
        repaired = totals.repaired - gone.repaired,
        last_batch_id = (
            select max(last_batch_id) from (
                select max(batch_id) as last_batch_id from bronze.ingest_batches where kafka_topic = totals.kafka_topic
                union all
                select max(last_batch_id) from bronze.ingest_batches_hourly where kafka_topic = totals.kafka_topic
            ) as remaining),
        last_batch_committed_at = (
            select max(committed_at) from (
                select max(committed_at) as committed_at from bronze.ingest_batches
                where kafka_topic = totals.kafka_topic
                union all
                select max(last_committed_at) from bronze.ingest_batches_hourly where kafka_topic = totals.kafka_topic
            ) as remaining),
        newest_event_time = (
            select max(event_time) from (
                select max(max_event_time) as event_time from bronze.ingest_batches
                where kafka_topic = totals.kafka_topic
                union all
                select max(max_event_time) from bronze.ingest_batches_hourly where kafka_topic = totals.kafka_topic
            ) as remaining)
    from (
        select kafka_topic, count(*) as batches, sum(messages_consumed) as messages_consumed,
               sum(rows_written) as rows_written, sum(rejects) as rejects, sum(duplicates) as duplicates,
               sum(repaired) as repaired
        from removed group by kafka_topic
    ) as gone
    where totals.kafka_topic = gone.kafka_topic;
    return null;
end;
$$;

create or replace function bronze.reject_totals_add() returns trigger
language plpgsql as $$
begin
    insert into bronze.reject_totals as totals
    select kafka_topic, reason, count(*) from added group by kafka_topic, reason
    on conflict (kafka_topic, reason) do update set rejects = totals.rejects + excluded.rejects;
    return null;
end;
$$;

create or replace function bronze.reject_totals_remove() returns trigger
language plpgsql as $$
begin
    update bronze.reject_totals as totals set rejects = totals.rejects - gone.rejects
    from (select kafka_topic, reason, count(*) as rejects from removed group by kafka_topic, reason) as gone
    where (totals.kafka_topic, totals.reason) = (gone.kafka_topic, gone.reason);
    delete from bronze.reject_totals where rejects = 0;
    return null;
end;
$$;

-- TRUNCATE fires no delete trigger: the sums start again from what is left.
create or replace function bronze.ledger_totals_reset() returns trigger
language plpgsql as $$
begin
    if tg_table_name = 'clickstream_rejects' then
        delete from bronze.reject_totals;
        return null;
    end if;
    delete from bronze.ingest_totals;
    insert into bronze.ingest_totals
    select kafka_topic, sum(batches), sum(messages_consumed), sum(rows_written), sum(rejects), sum(duplicates),
           sum(repaired), max(last_batch_id), max(last_committed_at), max(max_event_time)
    from bronze.ingest_batches_hourly group by kafka_topic;
    return null;
end;
$$;

drop trigger if exists ingest_batches_totals_on_insert on bronze.ingest_batches;
create trigger ingest_batches_totals_on_insert
    after insert on bronze.ingest_batches
    for each row execute function bronze.ingest_totals_add();

drop trigger if exists ingest_batches_totals_on_update on bronze.ingest_batches;
create trigger ingest_batches_totals_on_update
    after update of messages_consumed, rows_written, rejects, duplicates, repaired on bronze.ingest_batches
    for each row execute function bronze.ingest_totals_change();

drop trigger if exists ingest_batches_totals_on_delete on bronze.ingest_batches;
create trigger ingest_batches_totals_on_delete
    after delete on bronze.ingest_batches referencing old table as removed
    for each statement execute function bronze.ingest_totals_remove();

drop trigger if exists ingest_batches_totals_on_truncate on bronze.ingest_batches;
create trigger ingest_batches_totals_on_truncate
    after truncate on bronze.ingest_batches
    for each statement execute function bronze.ledger_totals_reset();

drop trigger if exists clickstream_rejects_totals_on_insert on bronze.clickstream_rejects;
create trigger clickstream_rejects_totals_on_insert
    after insert on bronze.clickstream_rejects referencing new table as added
    for each statement execute function bronze.reject_totals_add();

drop trigger if exists clickstream_rejects_totals_on_delete on bronze.clickstream_rejects;
create trigger clickstream_rejects_totals_on_delete
    after delete on bronze.clickstream_rejects referencing old table as removed
    for each statement execute function bronze.reject_totals_remove();

drop trigger if exists clickstream_rejects_totals_on_truncate on bronze.clickstream_rejects;
create trigger clickstream_rejects_totals_on_truncate
    after truncate on bronze.clickstream_rejects
    for each statement execute function bronze.ledger_totals_reset();
