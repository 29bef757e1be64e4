/*
 * Backup chains and their links, damaged extents, prune intents and id
 * sequences.  Plain records (see catalog.h for locking and the return
 * convention).  A chain is a full backup and the incrementals on it; each
 * backup row is one link file under the chain's directory.
 */
#ifndef BVDB_BACKUPS_H
#define BVDB_BACKUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bvdb/catalog.h"

/* Next value of a named counter (1, 2, …), never reused. */
int bvdb_next_seq(bvdb *db, const char *name, int64_t *out);

struct bvdb_chain {
    const char *id;
    const char *drive_id;
    const char *bitmap;            /* the bitmap that tracks the chain, or NULL */
    const char *dir;               /* storage-relative directory of its links */
    bool closed;                   /* no longer extended (a newer chain exists) */
    const char *created_at;
};

int bvdb_chain_insert(bvdb *db, const struct bvdb_chain *c);
int bvdb_chain_close(bvdb *db, const char *id);
int bvdb_chain_delete(bvdb *db, const char *id);          /* its backups must be gone */
/* -ENOENT if absent.  cb sees the row. */
int bvdb_chain_get(bvdb *db, const char *id,
                   void (*cb)(const struct bvdb_chain *c, void *opaque), void *opaque);
/* Oldest first; drive_id NULL: all. */
int bvdb_chain_list(bvdb *db, const char *drive_id,
                    int (*cb)(const struct bvdb_chain *c, void *opaque), void *opaque);

struct bvdb_backup {
    const char *id;
    const char *drive_id;
    const char *chain_id;
    const char *parent_id;         /* NULL for the full */
    const char *kind;              /* full | incremental */
    const char *file;              /* storage-relative */
    const char *status;            /* running | complete | failed | corrupt */
    const char *job_id;
    const char *created_at, *completed_at, *verified_at;   /* may be NULL */
    uint64_t virtual_size, data_bytes;
    const char *checksum;          /* hex digest of the point in time, or NULL */
    const char *reason;            /* NULL unless an incremental became a full */
    bool compress;
    const void *crcs;              /* zlib CRC map of the link's own blocks, may be NULL */
    size_t crcs_len;
    int64_t seq;
    const char *policy;            /* the policy that made it, or NULL */
    bool local;                    /* false: its file was removed locally (tiering) */
};

int bvdb_backup_insert(bvdb *db, const struct bvdb_backup *b);
/* The outcome of the backup job: status, completed_at, data_bytes,
 * checksum, crcs (only these fields of b are used, with b->id). */
int bvdb_backup_finish(bvdb *db, const struct bvdb_backup *b);
int bvdb_backup_set_status(bvdb *db, const char *id, const char *status);
int bvdb_backup_set_verified(bvdb *db, const char *id, const char *verified_at);
/* A prune rewrote the child: new file and parent (parent NULL: now the full). */
int bvdb_backup_relink(bvdb *db, const char *id, const char *file, const char *parent_id,
                       const char *kind, const void *crcs, size_t crcs_len);
int bvdb_backup_delete(bvdb *db, const char *id);
/* Every backup and chain of drive_id with their damaged extents, prune intents and remote
 * records (the objects on remotes stay), and with drive_row the drive's row too (its bitmaps
 * go with it), in one transaction.  Returns the number of backups removed or -errno. */
int bvdb_backups_purge_drive(bvdb *db, const char *drive_id, bool drive_row);
int bvdb_backup_get(bvdb *db, const char *id,
                    void (*cb)(const struct bvdb_backup *b, void *opaque), void *opaque);
/* Oldest first (seq).  chain_id or drive_id filter (NULL: any). */
int bvdb_backup_list(bvdb *db, const char *drive_id, const char *chain_id,
                     int (*cb)(const struct bvdb_backup *b, void *opaque), void *opaque);

/* Damaged extents of a link. */
int bvdb_damage_add(bvdb *db, const char *backup_id, uint64_t offset, uint64_t length,
                    const char *report_id);
int bvdb_damage_clear(bvdb *db, const char *backup_id);
/* Remove the damaged extents of a link that lie inside [offset, offset+length). */
int bvdb_damage_remove(bvdb *db, const char *backup_id, uint64_t offset, uint64_t length);
int bvdb_damage_list(bvdb *db, const char *backup_id,
                     int (*cb)(uint64_t offset, uint64_t length, void *opaque), void *opaque);

/* Prune intents (written before the first byte moves). */
struct bvdb_prune_intent {
    const char *backup_id, *child_id;   /* child NULL: the newest link, nothing to merge */
    const char *step;                   /* "copying" | "switched" */
    const char *new_file;               /* the merged child being written, or NULL */
    const char *old_files;              /* JSON array of files to unlink once switched */
    const char *created_at;
};
int bvdb_prune_intent_insert(bvdb *db, const struct bvdb_prune_intent *p);
int bvdb_prune_intent_set_step(bvdb *db, const char *backup_id, const char *step);
int bvdb_prune_intent_delete(bvdb *db, const char *backup_id);
int bvdb_prune_intent_list(bvdb *db,
                           int (*cb)(const struct bvdb_prune_intent *p, void *opaque),
                           void *opaque);

#endif
