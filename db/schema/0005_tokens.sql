-- Scoped API tokens (issue 17).  The secret is never stored: hash is the hex
-- SHA-256 of it.  expires_ms NULL: no expiry.
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'reader')),
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    expires_ms INTEGER
);
