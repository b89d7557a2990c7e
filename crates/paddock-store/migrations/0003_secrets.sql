-- Secrets of tenants: names and metadata in clear, values only as AES-256-GCM ciphertext
-- under the server's master key (which is never stored; `key_id` is a fingerprint of it).
CREATE TABLE secrets (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant          TEXT NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    metadata        TEXT NOT NULL,      -- JSON object of strings
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant, name)
) STRICT;

CREATE TABLE secret_versions (
    secret_id   TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    key_id      TEXT NOT NULL,          -- fingerprint of the master key that sealed it
    nonce       BLOB NOT NULL,          -- 12 bytes
    ciphertext  BLOB NOT NULL,          -- value and GCM tag
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (secret_id, version)
) STRICT;
