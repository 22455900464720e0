-- The dashboard's throughput chart reads settled updates by `processed_at` only. Without
-- NULLs in its index, an update gets an entry once, when it is settled, instead of one
-- when it is stored and (PostgreSQL) another when a worker claims it.
DROP INDEX inbox_processed;
CREATE INDEX inbox_processed ON inbox (processed_at) WHERE processed_at IS NOT NULL;
