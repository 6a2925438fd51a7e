-- A batch's ledger row records the offsets it was PLANNED to cover (Spark's offset log, a
-- replay's range), not those of the last message it read: a transaction's commit or abort
-- marker, or an aborted transaction's records (read_committed), take offsets and are no
-- message, so a batch may end past its last message. The sink writes the row's offsets from
-- the messages first (streaming/bronze_batch.py) and then sets the planned range on it, in the
-- same transaction (streaming/bronze_sink.py): that update advances bronze.ingest_offsets as
-- the insert does (migration 0003's function, which only ever moves an offset forward).
drop trigger if exists ingest_batches_advance_offsets_on_update on bronze.ingest_batches;
create trigger ingest_batches_advance_offsets_on_update
    after update of end_offsets on bronze.ingest_batches
    for each row execute function bronze.advance_ingest_offsets();

comment on column bronze.ingest_batches.start_offsets is
    '{"<partition>": <first offset>} the batch was planned to cover beyond Bronze''s position';
comment on column bronze.ingest_batches.end_offsets is
    '{"<partition>": <next offset to read>} after the batch: its planned end, markers included';
