-- The web console's login sessions (docs/console.md), shared by every server and control
-- plane of a fleet. Only the SHA-256 of the session cookie is kept, never the cookie or the
-- API key; the CSRF token is derived from the cookie, so it is not stored either.
-- Times are milliseconds since the epoch.
CREATE TABLE console_sessions (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    key_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX console_sessions_by_key ON console_sessions (key_id, created_at);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
