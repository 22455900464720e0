-- Admin UI sessions. The cookie holds a random id; only its SHA-256 is stored, so a copy
-- of the database cannot be used to log in. A session belongs to the token it was opened
-- with (by hash): reissuing or removing the client ends it.
CREATE TABLE admin_sessions (
    id_hash    TEXT        PRIMARY KEY,
    token_hash TEXT        NOT NULL,
    csrf_token TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);

-- The dashboard's throughput chart counts updates settled per minute.
CREATE INDEX inbox_processed ON inbox (processed_at);
