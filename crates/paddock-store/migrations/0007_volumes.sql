-- Volumes: named persistent directories of tenants. The files live in the layer
-- filesystem's subvolume `volumes/<id>`; this is who owns it, its name and its quota.
CREATE TABLE volumes (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT,                   -- API key id
    UNIQUE (tenant, name)
) STRICT;
