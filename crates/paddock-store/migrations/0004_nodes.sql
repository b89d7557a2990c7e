-- The fleet: nodes that run sandboxes, and fleet-wide settings (the hash of the fleet
-- token). A sandbox's node is `spec.node` of its record (no column: single-host records
-- have none).
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    address       TEXT NOT NULL,      -- base URL control planes reach it at
    state         TEXT NOT NULL,      -- ready, draining, dead
    labels        TEXT NOT NULL,      -- JSON object of strings
    capacity      TEXT NOT NULL,      -- JSON object
    usage         TEXT NOT NULL,      -- JSON object
    sandboxes     INTEGER NOT NULL,
    templates     TEXT NOT NULL,      -- JSON array of template names held
    registered_at INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE fleet_settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
