-- Leases of fleet-wide duties (../migrations/0009_leases.sql).
CREATE TABLE leases (
    name         TEXT COLLATE "C" PRIMARY KEY,
    holder       TEXT NOT NULL,
    acquired_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
