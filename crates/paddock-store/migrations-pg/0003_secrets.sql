-- Secrets of tenants (../migrations/0003_secrets.sql): values only as AES-256-GCM ciphertext.
CREATE TABLE secrets (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant          TEXT NOT NULL REFERENCES tenants(id),
    name            TEXT COLLATE "C" NOT NULL,
    current_version BIGINT NOT NULL,
    metadata        TEXT NOT NULL,      -- JSON object of strings
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant, name)
);

CREATE TABLE secret_versions (
    secret_id   TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    key_id      TEXT NOT NULL,          -- fingerprint of the master key that sealed it
    nonce       BYTEA NOT NULL,         -- 12 bytes
    ciphertext  BYTEA NOT NULL,         -- value and GCM tag
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (secret_id, version)
);
