-- Volumes of tenants (../migrations/0007_volumes.sql).
CREATE TABLE volumes (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT,                   -- API key id
    UNIQUE (tenant, name)
);
