-- The claim checks, for each candidate update, the other waiting updates of its order
-- (their status and due time). With those columns in the index the check reads the index
-- alone, not one table row per waiting update.
DROP INDEX inbox_order_pending;
CREATE INDEX inbox_order_pending ON inbox (order_reference, seq, status, next_attempt_at)
    WHERE status IN ('accepted', 'parked', 'processing');
