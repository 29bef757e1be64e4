-- A link whose file was removed locally once present on a remote (tiering,
-- issue 16): local = 0.  Reads, restores and verifies then go to the bucket.
ALTER TABLE backups ADD COLUMN local INTEGER NOT NULL DEFAULT 1;
