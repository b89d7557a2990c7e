-- Leases of fleet-wide duties (docs/fleet.md): one holder per name until expires_at
-- (milliseconds since the epoch, the database's clock).
CREATE TABLE leases (
    name         TEXT PRIMARY KEY NOT NULL,
    holder       TEXT NOT NULL,
    acquired_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
