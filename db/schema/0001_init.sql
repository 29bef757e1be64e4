-- Blockvault catalog, schema version 1.
-- Migrations are forward-only: a later change is a new file NNNN_*.sql that
-- only adds (tables, columns, indexes).  migrate.c applies each file inside
-- one transaction and sets PRAGMA user_version to its number.
-- Times are RFC 3339 UTC strings; sizes and offsets are byte counts.
-- Values that the service stores as JSON (filter configs, retention rules,
-- report extents) are opaque TEXT to the catalog: db/ never parses them.

-- Drives the service serves.  Re-opened at start-up in created order.
CREATE TABLE drives (
    id            TEXT PRIMARY KEY,
    format        TEXT NOT NULL CHECK (format IN ('raw', 'qcow2', 'blkverify')),
    file          TEXT NOT NULL,          -- relative to <data>/images
    size          INTEGER NOT NULL CHECK (size >= 0),
    cluster_size  INTEGER NOT NULL DEFAULT 0,
    filters       TEXT NOT NULL DEFAULT '{}',   -- blkdebug rules / blkverify children (JSON)
    created_at    TEXT NOT NULL
);

-- Dirty bitmaps.  Non-persistent ones are recorded too (so that the UI and
-- restarts know they existed) but their contents die with the process.
-- in_use is set while the service runs with the bitmap loaded; a row found
-- with in_use = 1 at start-up means the service died: the bitmap comes back
-- inconsistent.
CREATE TABLE bitmaps (
    drive_id      TEXT NOT NULL REFERENCES drives(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    granularity   INTEGER NOT NULL,
    persistent    INTEGER NOT NULL DEFAULT 0,
    enabled       INTEGER NOT NULL DEFAULT 1,
    inconsistent  INTEGER NOT NULL DEFAULT 0,
    in_use        INTEGER NOT NULL DEFAULT 0,
    data          BLOB,                   -- zlib-compressed bits (persistent only)
    size          INTEGER NOT NULL DEFAULT 0,   -- drive size the data covers
    created_seq   INTEGER NOT NULL,       -- orders bitmaps newest first, as QEMU lists them
    saved_at      TEXT,
    PRIMARY KEY (drive_id, name)
);

-- Image files the service made or uses, so that DELETE /images can refuse
-- one in use.  Files an admin drops in the directory are not listed here.
CREATE TABLE images (
    file          TEXT PRIMARY KEY,
    format        TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('drive', 'backup', 'target', 'image')),
    created_at    TEXT NOT NULL
);

-- Jobs: live ones and history.  job_id is the user-visible id, unique only
-- among live jobs (status not 'null'); rowid orders history.
CREATE TABLE jobs (
    rowid_        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL,
    type          TEXT NOT NULL CHECK (type IN ('backup', 'verify', 'restore', 'prune')),
    device        TEXT,
    status        TEXT NOT NULL,
    offset_       INTEGER NOT NULL DEFAULT 0,
    len           INTEGER NOT NULL DEFAULT 0,
    speed         INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    auto_finalize INTEGER NOT NULL DEFAULT 1,
    auto_dismiss  INTEGER NOT NULL DEFAULT 1,
    params        TEXT NOT NULL DEFAULT '{}',   -- type fields (JSON)
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX jobs_live ON jobs(job_id) WHERE status <> 'null';

-- Event log, numbered from 1 (AUTOINCREMENT never reuses a seq).
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    timestamp     TEXT NOT NULL,
    data          TEXT NOT NULL               -- JSON object
);
CREATE INDEX events_name ON events(name, seq);

-- Backup chains: a full backup and the incrementals on top of it.
CREATE TABLE chains (
    id            TEXT PRIMARY KEY,
    drive_id      TEXT NOT NULL,
    bitmap        TEXT,                       -- the bitmap that tracks this chain
    created_at    TEXT NOT NULL
);

CREATE TABLE backups (
    id            TEXT PRIMARY KEY,
    drive_id      TEXT NOT NULL,
    chain_id      TEXT NOT NULL REFERENCES chains(id),
    parent_id     TEXT REFERENCES backups(id),
    kind          TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    file          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed', 'corrupt')),
    job_id        TEXT,
    created_at    TEXT NOT NULL,
    completed_at  TEXT,
    virtual_size  INTEGER NOT NULL DEFAULT 0,
    data_bytes    INTEGER NOT NULL DEFAULT 0,
    checksum      TEXT,
    verified_at   TEXT
);
CREATE INDEX backups_chain ON backups(chain_id, created_at);

-- A prune in progress: written before the first byte moves so that a
-- restart can finish (or undo) it.
CREATE TABLE prune_intents (
    backup_id     TEXT PRIMARY KEY,
    child_id      TEXT,
    step          TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

-- Corruption / verification reports.
CREATE TABLE reports (
    id                    TEXT PRIMARY KEY,
    job_id                TEXT,
    drive_id              TEXT,
    kind                  TEXT NOT NULL CHECK (kind IN ('compare', 'checksum', 'blkverify', 'structure')),
    status                TEXT NOT NULL CHECK (status IN ('clean', 'corrupt')),
    test                  TEXT,
    reference             TEXT,
    first_mismatch_sector INTEGER,
    first_mismatch_offset INTEGER,
    mismatched_bytes      INTEGER NOT NULL DEFAULT 0,
    extents               TEXT NOT NULL DEFAULT '[]',   -- JSON [{offset,length}] (capped)
    extents_total         INTEGER NOT NULL DEFAULT 0,
    samples               TEXT NOT NULL DEFAULT '[]',   -- JSON [{offset,test_hex,reference_hex}]
    created_at            TEXT NOT NULL
);

-- Scheduled backup policies and their runs.
CREATE TABLE policies (
    name          TEXT PRIMARY KEY,
    drives        TEXT NOT NULL,              -- JSON array of drive ids
    schedule      TEXT NOT NULL,              -- 5-field cron
    full_every    INTEGER,
    retention     TEXT NOT NULL DEFAULT '{}', -- JSON keep_* rules
    verify        TEXT NOT NULL DEFAULT 'none',
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE policy_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    policy         TEXT NOT NULL REFERENCES policies(name) ON DELETE CASCADE,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    status         TEXT NOT NULL,
    backups_made   TEXT NOT NULL DEFAULT '[]',
    backups_pruned TEXT NOT NULL DEFAULT '[]',
    error          TEXT
);
