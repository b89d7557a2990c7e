-- The fleet: nodes and fleet-wide settings (../migrations/0004_nodes.sql).
CREATE TABLE nodes (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL,
    address       TEXT NOT NULL,      -- base URL control planes reach it at
    state         TEXT NOT NULL,      -- ready, draining, dead
    labels        TEXT NOT NULL,      -- JSON object of strings
    capacity      TEXT NOT NULL,      -- JSON object
    usage         TEXT NOT NULL,      -- JSON object
    sandboxes     BIGINT NOT NULL,
    templates     TEXT NOT NULL,      -- JSON array of template names held
    registered_at BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);

CREATE TABLE fleet_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
