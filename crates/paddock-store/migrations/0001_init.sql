-- Paddock store, schema version 1. Never edit this file once released; add 0002_*.sql.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    role           TEXT NOT NULL,
    hash           TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,
    max_sandboxes  INTEGER,
    webhook_url    TEXT
);

CREATE TABLE sandboxes (
    id             TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    template       TEXT NOT NULL,
    state          TEXT NOT NULL,
    stop_reason    TEXT,
    spec           TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    env_keys       TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    ready_at       INTEGER,
    expires_at     INTEGER,
    stopped_at     INTEGER,
    warnings_sent  INTEGER NOT NULL DEFAULT 0,
    webhook_url    TEXT
);
CREATE INDEX sandboxes_tenant ON sandboxes(tenant, created_at);
CREATE INDEX sandboxes_state ON sandboxes(state);
CREATE INDEX sandboxes_key ON sandboxes(key_id, state);

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    tenant      TEXT NOT NULL,
    sandbox_id  TEXT,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX events_tenant ON events(tenant, seq);
CREATE INDEX events_sandbox ON events(sandbox_id, seq);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    tenant      TEXT,
    action      TEXT NOT NULL,
    sandbox_id  TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_sandbox ON audit(sandbox_id, id);

CREATE TABLE execs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id   TEXT NOT NULL,
    at           INTEGER NOT NULL,
    command      TEXT NOT NULL,
    pid          INTEGER,
    exit_code    INTEGER,
    status       TEXT NOT NULL,
    duration_ms  INTEGER
);
CREATE INDEX execs_sandbox ON execs(sandbox_id, id);
