-- Check-condition worker. `attempts` counts checks of a due timer that moved nothing; the
-- next check is backed off by it. `timers_order_due` finds an order's due timers once the
-- order is locked. The due index `timers_due (due_at)` already ends in the rowid (`id`),
-- which the worker's (due_at, id) cursor needs.
ALTER TABLE timers ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX timers_order_due ON timers (order_id, due_at);
