-- The ERP inbox: every accepted update, durable before it is acknowledged.

CREATE TABLE inbox (
    -- Receive order: updates of one order are applied in seq order.
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Public id (UUID v7), known before the insert so the 202 body can be stored with it.
    id              TEXT        NOT NULL UNIQUE,
    client          TEXT        NOT NULL,
    -- Idempotency-Key (else webhook-id), unique per client; NULL once retention passed.
    idempotency_key TEXT,
    -- SHA-256 of the update as JSON with sorted keys: the same key with another body is 422.
    request_hash    TEXT        NOT NULL,
    order_reference TEXT        NOT NULL,
    event           TEXT,
    payload         TEXT        NOT NULL,
    -- accepted | processing | applied | parked | ignored | rejected | dead
    status          TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    -- Every attempt's error: [{attempt, at, code, message}].
    errors          TEXT        NOT NULL DEFAULT '[]',
    result          TEXT,
    -- The first response, replayed for a repeated key.
    response_status INTEGER,
    response_body   TEXT,
    received_at     TEXT        NOT NULL,
    processed_at    TEXT,
    next_attempt_at TEXT        NOT NULL,
    -- A parked update goes dead after this.
    park_until      TEXT,
    lease_owner     TEXT,
    lease_until     TEXT,
    CHECK (status IN ('accepted', 'processing', 'applied', 'parked', 'ignored', 'rejected', 'dead'))
);
CREATE UNIQUE INDEX inbox_idempotency ON inbox (client, idempotency_key);
-- What a worker may claim, by due time.
CREATE INDEX inbox_due ON inbox (next_attempt_at, seq)
    WHERE status IN ('accepted', 'parked', 'processing');
-- Per-order ordering checks and waking parked updates when their order changes.
CREATE INDEX inbox_order_pending ON inbox (order_reference, seq)
    WHERE status IN ('accepted', 'parked', 'processing');
CREATE INDEX inbox_status ON inbox (status, seq);
CREATE INDEX inbox_received ON inbox (received_at);
