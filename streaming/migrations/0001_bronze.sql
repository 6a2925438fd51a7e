-- Bronze: what the Spark stream writes, exactly once per Kafka offset.
-- Silver and Gold belong to dbt; their schemas exist here so grants can be set once.
create schema if not exists bronze;
create schema if not exists silver;
create schema if not exists gold;

-- One row per committed micro-batch (stream) or replay chunk (Dagster), written in the
-- same transaction as the batch's events and rejects. batch_id is assigned at commit
-- under one advisory lock shared by every Bronze writer, so it grows in commit order: the ingestion cursor
-- that the Bronze sensor and dbt's incremental models follow. Spark's own batch id
-- restarts with a new checkpoint and is kept only for diagnosis.
create table if not exists bronze.ingest_batches (
    batch_id            bigint generated always as identity primary key,
    kafka_topic         text        not null,
    source              text        not null check (source in ('stream', 'replay')),
    spark_query_id      text,
    spark_batch_id      bigint,
    -- {"<partition>": <first offset>} and {"<partition>": <next offset to read>}
    start_offsets       jsonb       not null,
    end_offsets         jsonb       not null,
    messages_consumed   integer     not null check (messages_consumed >= 0),
    rows_written        integer     not null check (rows_written >= 0),
    rejects             integer     not null check (rejects >= 0),
    duplicates          integer     not null check (duplicates >= 0),
    repaired            integer     not null default 0 check (repaired >= 0),
    min_event_time      timestamptz,
    max_event_time      timestamptz,
    started_at          timestamptz not null,
    committed_at        timestamptz not null default clock_timestamp(),
    constraint ingest_batches_accounted
        check (messages_consumed = rows_written + rejects + duplicates)
);
create index if not exists ingest_batches_topic_committed_idx
    on bronze.ingest_batches (kafka_topic, committed_at);

create table if not exists bronze.clickstream_events (
    event_id            text          primary key,
    event_timestamp     timestamptz   not null,
    user_id             text          not null,
    session_id          text          not null,
    event_type          text          not null,
    product_id          text          not null,
    product_name        text          not null,
    product_category    text          not null,
    product_price       numeric(14,2) not null,
    quantity            integer,
    device_type         text          not null,
    country             text          not null,
    schema_version      smallint      not null,
    repaired            boolean       not null default false,
    repair_reason       text,
    kafka_topic         text          not null,
    kafka_partition     integer       not null,
    kafka_offset        bigint        not null,
    sent_at             timestamptz,
    ingested_at         timestamptz   not null,
    batch_id            bigint        not null references bronze.ingest_batches (batch_id)
);
-- dbt's incremental models and the sensor read by ingestion cursor.
create index if not exists clickstream_events_batch_id_idx on bronze.clickstream_events (batch_id);
-- The live dashboard reads the newest rows by arrival.
create index if not exists clickstream_events_ingested_at_idx on bronze.clickstream_events (ingested_at);
create index if not exists clickstream_events_event_timestamp_idx on bronze.clickstream_events (event_timestamp);
create unique index if not exists clickstream_events_kafka_position_idx
    on bronze.clickstream_events (kafka_topic, kafka_partition, kafka_offset);

-- Every message that failed validation, with its bytes and the reason; nothing is dropped.
create table if not exists bronze.clickstream_rejects (
    kafka_topic         text        not null,
    kafka_partition     integer     not null,
    kafka_offset        bigint      not null,
    raw_value           bytea,
    raw_text            text,
    reason              text        not null,
    reason_detail       text,
    sent_at             timestamptz,
    ingested_at         timestamptz not null,
    batch_id            bigint      not null references bronze.ingest_batches (batch_id),
    primary key (kafka_topic, kafka_partition, kafka_offset)
);
create index if not exists clickstream_rejects_batch_id_idx on bronze.clickstream_rejects (batch_id);
create index if not exists clickstream_rejects_ingested_at_idx on bronze.clickstream_rejects (ingested_at);
