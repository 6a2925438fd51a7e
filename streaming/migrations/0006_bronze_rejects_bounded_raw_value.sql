-- A reject keeps a bounded prefix of its message (streaming/reject_payload.py): a batch's
-- memory must not grow with message sizes (docs/memory.md). What the prefix loses, the
-- full length and a SHA-256 of the whole value stand for: a cut reject can still be told
-- from another and matched with its message in Kafka.
alter table bronze.clickstream_rejects
    add column if not exists raw_length integer,
    add column if not exists raw_sha256 bytea;

comment on column bronze.clickstream_rejects.raw_value is
    'The first 1024 bytes of the message value (all of it for rejects written before 0006)';
comment on column bronze.clickstream_rejects.raw_text is
    'raw_value as text, cut back to whole characters, when the whole value is UTF-8';
comment on column bronze.clickstream_rejects.raw_length is 'The whole message value''s length in bytes';
comment on column bronze.clickstream_rejects.raw_sha256 is 'SHA-256 of the whole message value';

-- Rejects written before held their whole value: their length and hash come from it.
update bronze.clickstream_rejects
set raw_length = length(raw_value), raw_sha256 = sha256(raw_value)
where raw_value is not null and raw_length is null;
