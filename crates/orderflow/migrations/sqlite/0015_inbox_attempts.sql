-- A worker's batch, committed before the worker applies it (`inbox::attempt`): a batch
-- whose process ended before its commit (an abort, a crash, the OOM killer) leaves its row
-- behind, and the next claim of one of its updates finds it. `seqs` is a JSON array of the
-- batch's updates. A batch that commits deletes its row in that commit.
CREATE TABLE inbox_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner       TEXT    NOT NULL,
    seqs        TEXT    NOT NULL,
    started_at  TEXT    NOT NULL
);
-- How many batches whose process ended held each update: such an update is tried alone,
-- and `dead` after `worker.max_crashes`. Its row goes when it is tried alone and commits.
CREATE TABLE inbox_crashes (
    seq      INTEGER PRIMARY KEY,
    crashes  INTEGER NOT NULL
);
