-- orderflow schema, SQLite. Forward-only: change it with a new numbered file.

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    reference   TEXT        NOT NULL UNIQUE,
    process     TEXT        NOT NULL,
    currency    TEXT,
    attributes  TEXT        NOT NULL DEFAULT '{}',
    version     BIGINT      NOT NULL,
    created_at  TEXT        NOT NULL,
    updated_at  TEXT        NOT NULL
);

CREATE TABLE items (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id         BIGINT      NOT NULL REFERENCES orders (id),
    sku              TEXT        NOT NULL,
    quantity         BIGINT      NOT NULL CHECK (quantity > 0),
    unit_price       BIGINT,
    state            TEXT        NOT NULL,
    -- Copied from the process when the item enters a state, so reservations are one index scan.
    reserved         INTEGER     NOT NULL DEFAULT 0,
    state_entered_at TEXT        NOT NULL,
    attributes       TEXT        NOT NULL DEFAULT '{}'
);
CREATE INDEX items_order ON items (order_id);
CREATE INDEX items_reserved_sku ON items (sku) WHERE reserved;

CREATE TABLE item_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id   BIGINT      NOT NULL REFERENCES orders (id),
    item_id    BIGINT      NOT NULL REFERENCES items (id),
    from_state TEXT,
    to_state   TEXT        NOT NULL,
    event      TEXT,
    -- api | erp:<update id> | timeout | condition | on_enter
    source     TEXT        NOT NULL,
    -- Set when the item stayed for a reason worth keeping (failed command, unbound plugin).
    reason     TEXT,
    at         TEXT        NOT NULL
);
CREATE INDEX item_history_order ON item_history (order_id, id);

-- Timeouts and condition re-checks; the check-condition worker claims due rows by due_at.
CREATE TABLE timers (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id BIGINT      NOT NULL REFERENCES orders (id),
    item_id  BIGINT      NOT NULL REFERENCES items (id),
    state    TEXT        NOT NULL,
    kind     TEXT        NOT NULL CHECK (kind IN ('timeout', 'condition')),
    event    TEXT,
    due_at   TEXT        NOT NULL
);
CREATE INDEX timers_due ON timers (due_at);
CREATE INDEX timers_item ON timers (item_id);

-- Every committed change to an order. One writer: seq order is commit order.
CREATE TABLE change_feed (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id BIGINT      NOT NULL REFERENCES orders (id),
    version  BIGINT      NOT NULL,
    kind     TEXT        NOT NULL,
    payload  TEXT        NOT NULL,
    at       TEXT        NOT NULL
);

-- Command effects (follow-up events, after-commit calls) written with the change that caused
-- them; the worker executes pending rows and sets done_at.
CREATE TABLE effects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id      BIGINT      NOT NULL REFERENCES orders (id),
    order_version BIGINT      NOT NULL,
    kind          TEXT        NOT NULL,
    payload       TEXT        NOT NULL,
    created_at    TEXT        NOT NULL,
    done_at       TEXT       
);
CREATE INDEX effects_pending ON effects (id) WHERE done_at IS NULL;

CREATE TABLE clients (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT        NOT NULL UNIQUE,
    role           TEXT        NOT NULL CHECK (role IN ('erp', 'shop', 'admin')),
    token_hash     TEXT        NOT NULL UNIQUE,
    signing_secret TEXT,
    created_at     TEXT        NOT NULL
);

-- The list view: one row per order, fed by the projector from change_feed.
CREATE TABLE order_list (
    order_id   BIGINT      PRIMARY KEY REFERENCES orders (id),
    reference  TEXT        NOT NULL,
    process    TEXT        NOT NULL,
    version    BIGINT      NOT NULL,
    states     TEXT        NOT NULL,
    skus       TEXT        NOT NULL,
    created_at TEXT        NOT NULL,
    updated_at TEXT        NOT NULL
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
