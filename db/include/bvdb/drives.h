/*
 * Drive and dirty-bitmap rows.  Plain records: the strings a caller passes
 * are copied by SQLite; the strings a list callback sees live only during
 * the callback.  Locking: see catalog.h.
 */
#ifndef BVDB_DRIVES_H
#define BVDB_DRIVES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_drive {
    const char *id;
    const char *format;        /* "raw" | "qcow2" | "blkverify" */
    const char *file;          /* relative to the storage directory */
    uint64_t size;
    uint32_t cluster_size;
    const char *filters;       /* JSON text, opaque to db/ */
    const char *created_at;
    const char *detached_at;   /* NULL: attached; else when it was deleted with its backups
                                  kept (the image is no longer open; set by bvdb_drive_detach) */
};

int bvdb_drive_insert(bvdb *db, const struct bvdb_drive *d);
int bvdb_drive_delete(bvdb *db, const char *id);           /* bitmaps go too (cascade) */
int bvdb_drive_set_size(bvdb *db, const char *id, uint64_t size);
/* Detach drive id, in one transaction: detached_at = when, its bitmap rows go and its chains
 * are closed (nothing extends them any more).  -ENOENT if there is no such drive. */
int bvdb_drive_detach(bvdb *db, const char *id, const char *when);
/* cb sees the row (detached or not); -ENOENT if absent. */
int bvdb_drive_get(bvdb *db, const char *id,
                   void (*cb)(const struct bvdb_drive *d, void *opaque), void *opaque);
/* Oldest first, detached ones too.  cb returns non-zero to stop.  Returns the count or
 * -errno. */
int bvdb_drive_list(bvdb *db, int (*cb)(const struct bvdb_drive *d, void *opaque), void *opaque);

struct bvdb_bitmap {
    const char *drive_id;
    const char *name;
    uint32_t granularity;
    bool persistent;
    bool enabled;
    bool inconsistent;
    bool in_use;               /* loaded by a running service */
    const void *data;          /* zlib bits (persistent), may be NULL */
    size_t data_len;
    uint64_t size;             /* drive size the data covers */
    int64_t created_seq;       /* set by insert */
};

/* Insert; created_seq is assigned (max + 1) so newest-first order survives. */
int bvdb_bitmap_insert(bvdb *db, const struct bvdb_bitmap *b);
int bvdb_bitmap_delete(bvdb *db, const char *drive_id, const char *name);
int bvdb_bitmap_set_enabled(bvdb *db, const char *drive_id, const char *name, bool enabled);
/* Store contents (and in_use, inconsistent flags). */
int bvdb_bitmap_save(bvdb *db, const char *drive_id, const char *name, const void *data,
                     size_t len, uint64_t size, bool enabled, bool in_use);
int bvdb_bitmap_set_flags(bvdb *db, const char *drive_id, const char *name, bool in_use,
                          bool inconsistent);
/* Remove the non-persistent rows of every drive (they do not survive a restart). */
int bvdb_bitmap_drop_volatile(bvdb *db);
/* Oldest first (created_seq).  drive_id NULL: every drive. */
int bvdb_bitmap_list(bvdb *db, const char *drive_id,
                     int (*cb)(const struct bvdb_bitmap *b, void *opaque), void *opaque);

#endif
