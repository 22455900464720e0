-- orderflow schema, PostgreSQL. Forward-only: change it with a new numbered file.

CREATE TABLE orders (
    id          BIGSERIAL PRIMARY KEY,
    reference   TEXT        NOT NULL UNIQUE,
    process     TEXT        NOT NULL,
    currency    TEXT,
    attributes  JSONB       NOT NULL DEFAULT '{}',
    version     BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE items (
    id               BIGSERIAL PRIMARY KEY,
    order_id         BIGINT      NOT NULL REFERENCES orders (id),
    sku              TEXT        NOT NULL,
    quantity         BIGINT      NOT NULL CHECK (quantity > 0),
    unit_price       BIGINT,
    state            TEXT        NOT NULL,
    -- Copied from the process when the item enters a state, so reservations are one index scan.
    reserved         BOOLEAN     NOT NULL DEFAULT FALSE,
    state_entered_at TIMESTAMPTZ NOT NULL,
    attributes       JSONB       NOT NULL DEFAULT '{}'
);
CREATE INDEX items_order ON items (order_id);
CREATE INDEX items_reserved_sku ON items (sku) WHERE reserved;

CREATE TABLE item_history (
    id         BIGSERIAL PRIMARY KEY,
    order_id   BIGINT      NOT NULL REFERENCES orders (id),
    item_id    BIGINT      NOT NULL REFERENCES items (id),
    from_state TEXT,
    to_state   TEXT        NOT NULL,
    event      TEXT,
    -- api | erp:<update id> | timeout | condition | on_enter
    source     TEXT        NOT NULL,
    -- Set when the item stayed for a reason worth keeping (failed command, unbound plugin).
    reason     TEXT,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX item_history_order ON item_history (order_id, id);

-- Timeouts and condition re-checks; the check-condition worker claims due rows by due_at.
CREATE TABLE timers (
    id       BIGSERIAL PRIMARY KEY,
    order_id BIGINT      NOT NULL REFERENCES orders (id),
    item_id  BIGINT      NOT NULL REFERENCES items (id),
    state    TEXT        NOT NULL,
    kind     TEXT        NOT NULL CHECK (kind IN ('timeout', 'condition')),
    event    TEXT,
    due_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX timers_due ON timers (due_at);
CREATE INDEX timers_item ON timers (item_id);

-- Every committed change to an order, in commit order per backend (see store::projection).
CREATE TABLE change_feed (
    seq      BIGSERIAL PRIMARY KEY,
    -- The writing transaction: rows are consumed in (tx, seq) order and only once no older
    -- transaction is still running, so a late commit with a lower seq is never skipped.
    tx       XID8        NOT NULL DEFAULT pg_current_xact_id(),
    order_id BIGINT      NOT NULL REFERENCES orders (id),
    version  BIGINT      NOT NULL,
    kind     TEXT        NOT NULL,
    payload  JSONB       NOT NULL,
    at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX change_feed_tx ON change_feed (tx, seq);

-- Command effects (follow-up events, after-commit calls) written with the change that caused
-- them; the worker executes pending rows and sets done_at.
CREATE TABLE effects (
    id            BIGSERIAL PRIMARY KEY,
    order_id      BIGINT      NOT NULL REFERENCES orders (id),
    order_version BIGINT      NOT NULL,
    kind          TEXT        NOT NULL,
    payload       JSONB       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    done_at       TIMESTAMPTZ
);
CREATE INDEX effects_pending ON effects (id) WHERE done_at IS NULL;

CREATE TABLE clients (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT        NOT NULL UNIQUE,
    role           TEXT        NOT NULL CHECK (role IN ('erp', 'shop', 'admin')),
    token_hash     TEXT        NOT NULL UNIQUE,
    signing_secret TEXT,
    created_at     TIMESTAMPTZ NOT NULL
);

-- The list view: one row per order, fed by the projector from change_feed.
CREATE TABLE order_list (
    order_id   BIGINT      PRIMARY KEY REFERENCES orders (id),
    reference  TEXT        NOT NULL,
    process    TEXT        NOT NULL,
    version    BIGINT      NOT NULL,
    states     JSONB       NOT NULL,
    skus       JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX order_list_process ON order_list (process, order_id);
CREATE INDEX order_list_updated ON order_list (updated_at);

-- Filter terms of the list view (kind 'state' or 'sku'), one row per distinct value.
CREATE TABLE order_list_terms (
    kind     TEXT   NOT NULL,
    value    TEXT   NOT NULL,
    order_id BIGINT NOT NULL REFERENCES order_list (order_id),
    PRIMARY KEY (kind, value, order_id)
);
CREATE INDEX order_list_terms_order ON order_list_terms (order_id);

CREATE TABLE projector_checkpoint (
    name     TEXT   PRIMARY KEY,
    last_tx  BIGINT NOT NULL,
    last_seq BIGINT NOT NULL
);
INSERT INTO projector_checkpoint (name, last_tx, last_seq) VALUES ('order_list', 0, 0);
