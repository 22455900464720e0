-- After-commit effects that run: status, attempts and a lease per effect, and every attempt.
-- Effects of kind 'http' (HTTP commands) are run by the effects executor; rows of other
-- kinds (an embedder's own after-commit work) stay a record.

ALTER TABLE effects ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'running', 'done', 'dead'));
ALTER TABLE effects ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE effects ADD COLUMN next_attempt_at TEXT;
ALTER TABLE effects ADD COLUMN lease_owner TEXT;
ALTER TABLE effects ADD COLUMN lease_until TEXT;
ALTER TABLE effects ADD COLUMN last_error TEXT;
UPDATE effects SET next_attempt_at = created_at,
    status = CASE WHEN done_at IS NULL THEN 'pending' ELSE 'done' END;

-- What the executor may claim, by due time; and the per-order ordering check.
CREATE INDEX effects_due ON effects (next_attempt_at, id)
    WHERE kind = 'http' AND status IN ('pending', 'running');
CREATE INDEX effects_order_open ON effects (order_id, id)
    WHERE kind = 'http' AND status IN ('pending', 'running');
CREATE INDEX effects_status ON effects (status, id);

CREATE TABLE effect_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    effect_id   BIGINT  NOT NULL REFERENCES effects (id),
    attempt     INTEGER NOT NULL,
    at          TEXT    NOT NULL,
    -- The response's status; NULL when none came (timeout, connection error).
    status_code INTEGER,
    latency_ms  BIGINT  NOT NULL,
    -- The start of the response body (at most 1 KiB).
    excerpt     TEXT,
    error       TEXT
);
CREATE INDEX effect_attempts_effect ON effect_attempts (effect_id, id);
