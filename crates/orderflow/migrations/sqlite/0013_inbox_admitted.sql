-- The ERP's group commits no longer write the per-order index. Updates arrive spread over
-- many orders, so each one stored put an entry into a leaf page of `inbox_order_pending` of
-- its own: of the 48 pages a group of 25 wrote to the WAL, 23 were that index's (the rest
-- are appends at the ends of the table and its other indexes). An update stored by a group
-- is now `admitted = 0`, in the small `inbox_unadmitted` (an append); a claim first admits
-- the oldest of them in its own transaction (`Tx::admit_updates`), and only claims updates
-- all of whose predecessors are admitted, so the order rule reads the same index as before.
-- Updates stored any other way (follow-ups, a broker's settled updates) are admitted as
-- they are stored, as before.
ALTER TABLE inbox ADD COLUMN admitted INTEGER NOT NULL DEFAULT 1;
DROP INDEX inbox_order_pending;
-- `admitted` is a column too, so the claim's order rule reads the index alone (covering).
CREATE INDEX inbox_order_pending
    ON inbox (order_reference, seq, status, next_attempt_at, admitted)
    WHERE status IN ('accepted', 'parked', 'processing') AND admitted = 1;
CREATE INDEX inbox_unadmitted ON inbox (seq) WHERE admitted = 0;
