/*
 * Remotes (S3 buckets) and the links copied to them.  Plain records (see
 * catalog.h).  The secret key is never in the catalog: the service keeps it
 * in a file of its own.
 */
#ifndef BVDB_REMOTES_H
#define BVDB_REMOTES_H

#include <stdbool.h>
#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_remote {
    const char *name;
    const char *endpoint;
    const char *bucket;
    const char *region;
    const char *access_key;
    bool path_style;
    bool object_lock;
    const char *created_at;
};

/* -EEXIST when the name is taken. */
int bvdb_remote_insert(bvdb *db, const struct bvdb_remote *r);
/* -ENOENT when there is no such remote; its link records go too. */
int bvdb_remote_delete(bvdb *db, const char *name);
/* cb once (return value ignored); -ENOENT when missing. */
int bvdb_remote_get(bvdb *db, const char *name,
                    int (*cb)(const struct bvdb_remote *r, void *opaque), void *opaque);
/* By name; cb returns non-zero to stop.  Returns the count or -errno. */
int bvdb_remote_list(bvdb *db, int (*cb)(const struct bvdb_remote *r, void *opaque),
                     void *opaque);

struct bvdb_remote_link {
    const char *remote;
    const char *backup_id;
    const char *key;               /* object key in the remote's bucket */
    const char *state;             /* "uploading" | "present" | "failed" */
    int64_t size;
    const char *locked_until;      /* RFC 3339, NULL: not locked */
    const char *updated_at;
    const char *upload_id;         /* the multipart upload in progress, NULL: none */
};

/* Insert or replace the record of (remote, backup_id). */
int bvdb_remote_link_put(bvdb *db, const struct bvdb_remote_link *l);
/* The records of one backup (remote NULL) or of one remote (backup_id NULL), by remote then
 * backup.  Returns the count or -errno. */
int bvdb_remote_link_list(bvdb *db, const char *remote, const char *backup_id,
                          int (*cb)(const struct bvdb_remote_link *l, void *opaque),
                          void *opaque);

/* Parts of a link's multipart upload the remote acknowledged. */
struct bvdb_remote_part {
    const char *remote, *backup_id, *upload_id;
    int64_t part;
    const char *etag;
    int64_t size;
};
int bvdb_remote_part_put(bvdb *db, const struct bvdb_remote_part *p);
/* Forget every part recorded for (remote, backup_id). */
int bvdb_remote_part_clear(bvdb *db, const char *remote, const char *backup_id);
/* The parts of (remote, backup_id) in upload upload_id, by part number. */
int bvdb_remote_part_list(bvdb *db, const char *remote, const char *backup_id,
                          const char *upload_id,
                          int (*cb)(const struct bvdb_remote_part *p, void *opaque), void *opaque);

/* Forget the record of (remote, backup_id); remote NULL: every remote's. */
int bvdb_remote_link_delete(bvdb *db, const char *remote, const char *backup_id);

/* backups.local (tiering): 0 once the link's file was removed locally because a remote
 * holds it.  get: 1 local, 0 not, -ENOENT no such backup. */
int bvdb_backup_set_local(bvdb *db, const char *id, bool local);
int bvdb_backup_get_local(bvdb *db, const char *id);
/* The backups with local = 0: id and file.  Returns the count or -errno. */
int bvdb_backup_list_remote_only(bvdb *db,
                                 int (*cb)(const char *id, const char *file, void *opaque),
                                 void *opaque);

/* The remote side of a prune in progress (prune_intents.remote_objects, JSON text). */
int bvdb_prune_intent_set_remote_objects(bvdb *db, const char *backup_id, const char *json);
/* *out malloc'd ("[]" when none); -ENOENT without the intent. */
int bvdb_prune_intent_get_remote_objects(bvdb *db, const char *backup_id, char **out);

/* Raise the named id counter (bvdb_next_seq's) to at least value, so that the next id is
 * above it (an import brings ids from elsewhere).  Joins the caller's transaction. */
int bvdb_seq_at_least(bvdb *db, const char *name, int64_t value);

/* Drives imported from a remote's manifests ("format":"remote-only"). */
struct bvdb_remote_drive {
    const char *id, *remote;
    int64_t size;
    const char *created_at;
};
/* -EEXIST when the id is taken. */
int bvdb_remote_drive_insert(bvdb *db, const struct bvdb_remote_drive *d);
/* cb once; -ENOENT when missing. */
int bvdb_remote_drive_get(bvdb *db, const char *id,
                          void (*cb)(const struct bvdb_remote_drive *d, void *opaque),
                          void *opaque);
/* By id; cb returns non-zero to stop.  Returns the count or -errno. */
int bvdb_remote_drive_list(bvdb *db, int (*cb)(const struct bvdb_remote_drive *d, void *opaque),
                           void *opaque);

#endif
