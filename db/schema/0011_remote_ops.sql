-- Remote operations (issue 16): a policy's replicate settings, the remote side
-- of a prune in progress, and the drives an import made from a bucket alone.
-- JSON {remote, keep_local, lock_days, lock_mode}; NULL: the policy does not replicate
ALTER TABLE policies ADD COLUMN replicate TEXT;

-- A prune of a replicated link: per remote, the objects to delete once the
-- catalog has switched and the manifest no longer names them (JSON
-- [{"remote","keys":[…]}]), so a restart finishes the remote side too.
ALTER TABLE prune_intents ADD COLUMN remote_objects TEXT NOT NULL DEFAULT '[]';

-- Drives known only from a remote's manifests (POST /remotes/{name}/import):
-- listed with "format":"remote-only"; their backups can be read, verified and
-- restored, nothing else.
CREATE TABLE remote_drives (
    id           TEXT PRIMARY KEY,
    remote       TEXT NOT NULL,
    size         INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
);
