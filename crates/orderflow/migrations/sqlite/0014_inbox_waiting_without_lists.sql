-- The per-order and due indexes again, their conditions written so that SQLite tests them
-- without a table. It tests a partial index's condition for every row it writes, left to
-- right, and evaluates a constant `IN` list of more than two values as an ephemeral table,
-- which it filled anew for each row (three inserts and a clear per list). A list of two is
-- two comparisons. A row of a group commit is stored with `admitted = 0`, so the per-order
-- index's condition, `admitted = 1` now first, is settled by that term; the due index's by
-- `status = 'accepted'`. The claims say "waiting" in the same words (`store::inbox::claim`),
-- as SQLite needs them to read these indexes.
DROP INDEX inbox_order_pending;
CREATE INDEX inbox_order_pending
    ON inbox (order_reference, seq, status, next_attempt_at, admitted)
    WHERE admitted = 1 AND (status = 'accepted' OR status IN ('parked', 'processing'));
DROP INDEX inbox_due;
CREATE INDEX inbox_due ON inbox (next_attempt_at, seq)
    WHERE status = 'accepted' OR status IN ('parked', 'processing');
