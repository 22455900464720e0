-- `update.dead` events: an ERP update that ends `dead` is delivered to subscribers, also
-- when its order does not exist. Such a delivery has no order (and no order version): a
-- NULL `order_id` never equals another, so the claim's "first pending delivery of its
-- subscription and order" puts it in a lane of its own.
ALTER TABLE deliveries
    ALTER COLUMN order_id DROP NOT NULL,
    ALTER COLUMN version DROP NOT NULL;

-- `update.dead` deliveries of a known order that must wait until the subscription has
-- materialised the order's changes before the death (its cursor has not yet passed the
-- feed position (after_tx, after_seq)). Materialising moves them into `deliveries` in the
-- transaction that passes that position, after the order's events: lanes go by id, so
-- the death comes after the order's earlier events.
CREATE TABLE held_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    subscription_id BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    after_tx        BIGINT  NOT NULL,
    after_seq       BIGINT  NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    order_id        BIGINT  NOT NULL,
    body            TEXT    NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX held_deliveries_subscription ON held_deliveries (subscription_id, after_tx, after_seq);
