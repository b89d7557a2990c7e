-- Rollouts and their target sandboxes (../migrations/0010_rollouts.sql, docs/rollouts.md).
CREATE TABLE rollouts (
    id           TEXT COLLATE "C" PRIMARY KEY,
    tenant       TEXT NOT NULL REFERENCES tenants(id),
    key_id       TEXT NOT NULL,
    runner       TEXT,
    kind         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX rollouts_tenant ON rollouts (tenant, created_at);

CREATE TABLE rollout_targets (
    rollout_id  TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    sandbox_id  TEXT NOT NULL,
    state       TEXT NOT NULL,
    result      TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);
