-- Check-condition worker. `attempts` counts checks of a due timer that moved nothing; the
-- next check is backed off by it. The due index gets `id` so the worker's (due_at, id)
-- cursor is an index range; `timers_order_due` finds an order's due timers once the order
-- is locked.
ALTER TABLE timers ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
DROP INDEX timers_due;
CREATE INDEX timers_due ON timers (due_at, id);
CREATE INDEX timers_order_due ON timers (order_id, due_at);
