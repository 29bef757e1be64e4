-- Chain-managed backups (issue 11): where a chain's links live, why a
-- backup was taken as a full one, the per-64 KiB CRC map of the data each
-- link wrote, the extents found damaged by verification, and id sequences.

ALTER TABLE chains ADD COLUMN dir TEXT;                 -- chains/<drive>/<chain>, storage-relative
ALTER TABLE chains ADD COLUMN closed INTEGER NOT NULL DEFAULT 0;   -- no longer extended

ALTER TABLE backups ADD COLUMN reason TEXT;             -- why an incremental became a full
ALTER TABLE backups ADD COLUMN compress INTEGER NOT NULL DEFAULT 0;
ALTER TABLE backups ADD COLUMN crcs BLOB;               -- zlib: the link's own CRC32 map
ALTER TABLE backups ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;     -- order of creation

-- Extents of a link found corrupt and not yet healed (guest offsets).
CREATE TABLE damaged_extents (
    backup_id     TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    offset_       INTEGER NOT NULL,
    length        INTEGER NOT NULL,
    report_id     TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX damaged_backup ON damaged_extents(backup_id);

-- Monotonic id counters (never reuse an id, even after a prune).
CREATE TABLE sequences (
    name          TEXT PRIMARY KEY,
    value         INTEGER NOT NULL
);

ALTER TABLE prune_intents ADD COLUMN new_file TEXT;     -- the merged link being written
ALTER TABLE prune_intents ADD COLUMN old_files TEXT NOT NULL DEFAULT '[]';  -- JSON: to unlink
