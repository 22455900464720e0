-- `update.dead` events: an ERP update that ends `dead` is delivered to subscribers, also
-- when its order does not exist. Such a delivery has no order (and no order version): a
-- NULL `order_id` never equals another, so the claim's "first pending delivery of its
-- subscription and order" puts it in a lane of its own.
--
-- SQLite cannot drop a NOT NULL, so both tables are rebuilt. The order avoids the
-- foreign-key actions of DROP TABLE (its implicit DELETE would cascade to the attempts):
-- the new attempts table references the new deliveries table, both old tables are
-- dropped (attempts first), and renaming the new deliveries table carries the reference.
CREATE TABLE deliveries_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    -- Stable per change (`evt_<order>_<version>`) or per death of an update
    -- (`evt_update_<update id>_<attempts>`); sent as `webhook-id`.
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    -- NULL: an `update.dead` of an order that does not exist.
    order_id        BIGINT,
    version         BIGINT,
    -- The exact body sent (and signed), the same on every attempt.
    body            TEXT    NOT NULL,
    -- pending | delivered | dead
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    -- Counts claims; a result is recorded only by the claim that still holds the lease.
    claims          BIGINT  NOT NULL DEFAULT 0,
    due_at          TEXT    NOT NULL,
    lease_until     TEXT,
    created_at      TEXT    NOT NULL,
    done_at         TEXT
);
INSERT INTO deliveries_new (id, subscription_id, event_id, event_type, order_id, version,
    body, status, attempts, claims, due_at, lease_until, created_at, done_at)
SELECT id, subscription_id, event_id, event_type, order_id, version,
    body, status, attempts, claims, due_at, lease_until, created_at, done_at
FROM deliveries;

CREATE TABLE delivery_attempts_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      BIGINT  NOT NULL REFERENCES deliveries_new (id) ON DELETE CASCADE,
    at               TEXT    NOT NULL,
    status_code      INTEGER,
    latency_ms       BIGINT  NOT NULL,
    -- The response body, truncated.
    response_excerpt TEXT,
    error            TEXT
);
INSERT INTO delivery_attempts_new (id, delivery_id, at, status_code, latency_ms,
    response_excerpt, error)
SELECT id, delivery_id, at, status_code, latency_ms, response_excerpt, error
FROM delivery_attempts;

-- Ids go on from where the old tables' sequences were (rows of deleted subscriptions
-- included), not from the highest id copied.
UPDATE sqlite_sequence
SET seq = MAX(seq, (SELECT s.seq FROM sqlite_sequence s WHERE s.name = 'deliveries'))
WHERE name = 'deliveries_new'
  AND EXISTS (SELECT 1 FROM sqlite_sequence s WHERE s.name = 'deliveries');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'deliveries_new', seq FROM sqlite_sequence
WHERE name = 'deliveries'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence s WHERE s.name = 'deliveries_new');
UPDATE sqlite_sequence
SET seq = MAX(seq, (SELECT s.seq FROM sqlite_sequence s WHERE s.name = 'delivery_attempts'))
WHERE name = 'delivery_attempts_new'
  AND EXISTS (SELECT 1 FROM sqlite_sequence s WHERE s.name = 'delivery_attempts');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'delivery_attempts_new', seq FROM sqlite_sequence
WHERE name = 'delivery_attempts'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence s WHERE s.name = 'delivery_attempts_new');

DROP TABLE delivery_attempts;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
ALTER TABLE delivery_attempts_new RENAME TO delivery_attempts;

CREATE INDEX deliveries_due ON deliveries (due_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_order_pending ON deliveries (subscription_id, order_id, id)
    WHERE status = 'pending';
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, id);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id);

-- `update.dead` deliveries of a known order that must wait until the subscription has
-- materialised the order's changes before the death (its cursor has not yet passed the
-- feed position (after_tx, after_seq)). Materialising moves them into `deliveries` in the
-- transaction that passes that position, after the order's events: lanes go by id, so
-- the death comes after the order's earlier events.
CREATE TABLE held_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    after_tx        BIGINT  NOT NULL,
    after_seq       BIGINT  NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    order_id        BIGINT  NOT NULL,
    body            TEXT    NOT NULL,
    created_at      TEXT    NOT NULL
);
CREATE INDEX held_deliveries_subscription ON held_deliveries (subscription_id, after_tx, after_seq);
