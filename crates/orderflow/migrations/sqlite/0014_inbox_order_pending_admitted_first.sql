-- The same per-order index, its condition with `admitted = 1` first. SQLite tests a partial
-- index's condition for every row inserted, left to right, and a constant `IN` list of more
-- than two values is an ephemeral table that it fills anew for each row (three inserts and a
-- clear here). A row of a group commit is stored with `admitted = 0`, so the condition is
-- now settled by its first term, without the list. Queries are matched against each term of
-- the condition, in any order, so the claims read it as before.
DROP INDEX inbox_order_pending;
CREATE INDEX inbox_order_pending
    ON inbox (order_reference, seq, status, next_attempt_at, admitted)
    WHERE admitted = 1 AND status IN ('accepted', 'parked', 'processing');
