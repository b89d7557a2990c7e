-- Metered usage of sandboxes, one row per sandbox and hour (UTC, `hour` = ms since the
-- epoch / 3,600,000), added to at every sampling round. Owner columns are copied from the
-- sandbox so reports by tenant, key and template need no join (and survive the sandbox).
CREATE TABLE usage (
    sandbox_id      TEXT NOT NULL,
    hour            INTEGER NOT NULL,
    tenant          TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    template        TEXT NOT NULL,
    cpu_seconds     REAL NOT NULL DEFAULT 0,
    memory_gib_hours REAL NOT NULL DEFAULT 0,
    disk_gib_hours  REAL NOT NULL DEFAULT 0,
    egress_bytes    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sandbox_id, hour)
) STRICT;
CREATE INDEX usage_tenant_hour ON usage(tenant, hour);
