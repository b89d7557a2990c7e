-- Templates as first-class records (../migrations/0002_templates.sql).
CREATE TABLE templates (
    name        TEXT COLLATE "C" PRIMARY KEY,
    source      TEXT NOT NULL,
    layers      TEXT NOT NULL,          -- JSON array of layer ids, bottom first
    config      TEXT NOT NULL,          -- JSON object: env, workdir, user, entrypoint, cmd, ports
    created_at  BIGINT NOT NULL,
    created_by  TEXT                    -- API key id, NULL for built-in or adopted ones
);
