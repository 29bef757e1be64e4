-- Remotes (issue 16): S3 buckets chains are copied to.  The secret key is not
-- here: it lives in <data>/remotes/<name>.secret (mode 0600), read only by the
-- service.  remote_links records, per remote and backup, the object that holds
-- that link and its upload state; a link is uploaded once (links are immutable).
CREATE TABLE remotes (
    name        TEXT PRIMARY KEY,
    endpoint    TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    region      TEXT NOT NULL,
    access_key  TEXT NOT NULL,
    path_style  INTEGER NOT NULL DEFAULT 1,
    object_lock INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE TABLE remote_links (
    remote       TEXT NOT NULL REFERENCES remotes(name),
    backup_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('uploading', 'present', 'failed')),
    size         INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (remote, backup_id)
);
CREATE INDEX remote_links_backup ON remote_links(backup_id);

-- Service jobs of types replicate and import: SQLite cannot alter a CHECK, so the
-- jobs table is rebuilt with the same columns in the same order.
CREATE TABLE jobs_new (
    rowid_        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL,
    type          TEXT NOT NULL CHECK (type IN ('backup', 'verify', 'restore', 'prune',
                                                'replicate', 'import')),
    device        TEXT,
    status        TEXT NOT NULL,
    offset_       INTEGER NOT NULL DEFAULT 0,
    len           INTEGER NOT NULL DEFAULT 0,
    speed         INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    auto_finalize INTEGER NOT NULL DEFAULT 1,
    auto_dismiss  INTEGER NOT NULL DEFAULT 1,
    params        TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
INSERT INTO jobs_new SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_live ON jobs(job_id) WHERE status <> 'null';
