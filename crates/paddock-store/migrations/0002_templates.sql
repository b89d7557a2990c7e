-- Templates as first-class records: who made them, from what, with which layers and defaults.
-- The layers themselves live in the data directory's layer store; this is the catalogue.
CREATE TABLE templates (
    name        TEXT PRIMARY KEY NOT NULL,
    source      TEXT NOT NULL,
    layers      TEXT NOT NULL,          -- JSON array of layer ids, bottom first
    config      TEXT NOT NULL,          -- JSON object: env, workdir, user, entrypoint, cmd, ports
    created_at  INTEGER NOT NULL,
    created_by  TEXT                    -- API key id, NULL for built-in or adopted ones
) STRICT;
