-- Resumable uploads (issue 16): the multipart upload a link is going up in, and each part
-- the remote has acknowledged, so that a replicate interrupted by a crash or a failure goes on
-- where it stopped instead of starting the link again.
ALTER TABLE remote_links ADD COLUMN upload_id TEXT;
CREATE TABLE remote_parts (
    remote    TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    part      INTEGER NOT NULL,
    etag      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    PRIMARY KEY (remote, backup_id, part)
);
