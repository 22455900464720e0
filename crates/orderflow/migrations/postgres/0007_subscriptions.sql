-- Subscriptions: order events out, signed the Standard Webhooks way. Each subscription reads
-- the change feed after its own cursor and materialises one delivery per matching change;
-- deliveries are sent with a lease and retried on a schedule until delivered or dead.
CREATE TABLE subscriptions (
    id              BIGSERIAL PRIMARY KEY,
    url             TEXT    NOT NULL,
    -- The `whsec_` signing secret. Shown once at creation, never again.
    secret          TEXT    NOT NULL,
    -- Event types, comma-separated; empty means every type.
    events          TEXT    NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_at     TIMESTAMPTZ,
    disabled_reason TEXT,
    -- Failed attempts in a row and when the run began (reset by a success).
    failures        BIGINT  NOT NULL DEFAULT 0,
    failing_since   TIMESTAMPTZ,
    -- The change feed is read after (cursor_tx, cursor_seq), as the projector reads it.
    cursor_tx       BIGINT  NOT NULL,
    cursor_seq      BIGINT  NOT NULL,
    -- PostgreSQL: the snapshot at creation (`pg_snapshot` as text). A change visible in
    -- it was committed before the subscription and is skipped, even when it comes after
    -- the cursor (a transaction older than it was still open). NULL on SQLite.
    start_snapshot  TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    subscription_id BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    -- Stable per change (`evt_<order>_<version>`); sent as `webhook-id`.
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    order_id        BIGINT  NOT NULL,
    version         BIGINT  NOT NULL,
    -- The exact body sent (and signed), the same on every attempt.
    body            TEXT    NOT NULL,
    -- pending | delivered | dead
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    -- Counts claims; a result is recorded only by the claim that still holds the lease.
    claims          BIGINT  NOT NULL DEFAULT 0,
    due_at          TIMESTAMPTZ NOT NULL,
    lease_until     TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    done_at         TIMESTAMPTZ
);
CREATE INDEX deliveries_due ON deliveries (due_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_order_pending ON deliveries (subscription_id, order_id, id)
    WHERE status = 'pending';
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, id);

CREATE TABLE delivery_attempts (
    id               BIGSERIAL PRIMARY KEY,
    delivery_id      BIGINT  NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at               TIMESTAMPTZ NOT NULL,
    status_code      INTEGER,
    latency_ms       BIGINT  NOT NULL,
    -- The response body, truncated.
    response_excerpt TEXT,
    error            TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id);
