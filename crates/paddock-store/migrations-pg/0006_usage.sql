-- Metered usage, one row per sandbox and hour (../migrations/0006_usage.sql).
CREATE TABLE usage (
    sandbox_id       TEXT COLLATE "C" NOT NULL,
    hour             BIGINT NOT NULL,
    tenant           TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    template         TEXT NOT NULL,
    cpu_seconds      DOUBLE PRECISION NOT NULL DEFAULT 0,
    memory_gib_hours DOUBLE PRECISION NOT NULL DEFAULT 0,
    disk_gib_hours   DOUBLE PRECISION NOT NULL DEFAULT 0,
    egress_bytes     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (sandbox_id, hour)
);
CREATE INDEX usage_tenant_hour ON usage(tenant, hour);
