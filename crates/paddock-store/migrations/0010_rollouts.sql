-- Rollouts: a command or an upload run on every running sandbox matching a metadata
-- selector (the server's `rollouts` module). `spec` is the request as JSON without uploaded
-- content; each target row is one sandbox's outcome, `result` its details as JSON (exit
-- code, status, output tails, times, the rollback's outcome).
CREATE TABLE rollouts (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant       TEXT NOT NULL REFERENCES tenants(id),
    key_id       TEXT NOT NULL,
    runner       TEXT,                   -- the fleet node running it (NULL: a single server)
    kind         TEXT NOT NULL,          -- command, upload
    spec         TEXT NOT NULL,
    state        TEXT NOT NULL,          -- running, succeeded, failed, cancelled, interrupted
    reason       TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
) STRICT;
CREATE INDEX rollouts_tenant ON rollouts (tenant, created_at);

CREATE TABLE rollout_targets (
    rollout_id  TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,        -- the order targets start in
    sandbox_id  TEXT NOT NULL,
    state       TEXT NOT NULL,           -- pending, running, succeeded, failed, rolled_back, skipped, interrupted
    result      TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
) STRICT;
