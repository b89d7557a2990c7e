-- Paddock store on PostgreSQL, schema version 1 (the same tables as ../migrations/0001_init.sql).
-- Never edit this file once released; add 0002_*.sql. Text keys that lists order by or page
-- over are COLLATE "C", so the order is bytewise as in SQLite whatever the database's locale.

CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant         TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    role           TEXT NOT NULL,
    hash           TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT,
    max_sandboxes  BIGINT,
    webhook_url    TEXT
);

CREATE TABLE sandboxes (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant         TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    template       TEXT NOT NULL,
    state          TEXT NOT NULL,
    stop_reason    TEXT,
    spec           TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    env_keys       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    ready_at       BIGINT,
    expires_at     BIGINT,
    stopped_at     BIGINT,
    warnings_sent  BIGINT NOT NULL DEFAULT 0,
    webhook_url    TEXT
);
CREATE INDEX sandboxes_tenant ON sandboxes(tenant, created_at);
CREATE INDEX sandboxes_state ON sandboxes(state);
CREATE INDEX sandboxes_key ON sandboxes(key_id, state);
CREATE INDEX sandboxes_created ON sandboxes(created_at, id);

CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    tenant      TEXT NOT NULL,
    sandbox_id  TEXT,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX events_tenant ON events(tenant, seq);
CREATE INDEX events_sandbox ON events(sandbox_id, seq);

CREATE TABLE audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    tenant      TEXT,
    action      TEXT NOT NULL,
    sandbox_id  TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_sandbox ON audit(sandbox_id, id);

CREATE TABLE execs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sandbox_id   TEXT NOT NULL,
    at           BIGINT NOT NULL,
    command      TEXT NOT NULL,
    pid          BIGINT,
    exit_code    BIGINT,
    status       TEXT NOT NULL,
    duration_ms  BIGINT
);
CREATE INDEX execs_sandbox ON execs(sandbox_id, id);
