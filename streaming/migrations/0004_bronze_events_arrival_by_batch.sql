-- Arrival order is batch_id order: the Bronze writers take one lock and draw batch_id in
-- commit order, and every row of a batch shares its batch's ingested_at. The index on
-- ingested_at kept a second copy of that order at ~0.13 s of PostgreSQL CPU per 250k rows
-- COPYed (of ~1.5 s with all indexes); the live dashboard's newest rows come from the
-- batch_id index instead (dashboard/queries.py, LATEST_EVENTS).
drop index if exists bronze.clickstream_events_ingested_at_idx;
