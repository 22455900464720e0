-- Secrets of inbox transports, by name: `transit_id` signs the update ids a broker
-- transport issues before the update reaches the database, so any process can tell an id
-- it issued (an update in transit) from one that does not exist.
CREATE TABLE transit_keys (
    name   TEXT PRIMARY KEY,
    secret TEXT NOT NULL
);
