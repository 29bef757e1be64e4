/*
 * Private layout of dirty bitmaps, shared by dirty-bitmap.c (state, jobs,
 * queries) and dirty-bitmap-store.c (zlib persistence).  Nothing outside
 * core/bitmap/ includes it; the public face is include/bv/dirty-bitmap.h.
 *
 * Locking: struct bv_bitmap_set.lock guards the list and every field of
 * every bitmap in it.  Functions named *_locked expect it held; the others
 * here take no lock.
 */
#ifndef BV_BITMAP_DIRTY_BITMAP_INT_H
#define BV_BITMAP_DIRTY_BITMAP_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bv/dirty-bitmap.h"
#include "util/hbitmap.h"
#include "bv/lock.h"

struct bv_dirty_bitmap {                    /* every field guarded by set->lock */
    struct bv_dirty_bitmap *next;           /* set list, newest first */
    uint64_t seq;                           /* creation order */
    char *name;                             /* NULL: anonymous */
    struct hbitmap *hb;
    uint32_t granularity;
    bool enabled;                           /* records writes (unless frozen) */
    bool busy;                              /* a job or transaction holds it */
    bool persistent;
    bool inconsistent;                      /* untrustworthy: only remove */
    struct bv_dirty_bitmap *successor;      /* non-NULL: frozen */
};

struct bv_bitmap_set {
    bv_mutex lock;                          /* leaf lock (see the public header) */
    char *node_name;                        /* immutable, for messages */
    uint64_t disk_size;                     /* guarded by lock */
    uint64_t next_seq;                      /* guarded by lock */
    struct bv_dirty_bitmap *head;           /* guarded by lock, newest first */
};

struct bv_bitmap_backup {
    struct hbitmap *hb;                     /* owned */
};

void dbm_lock(struct bv_bitmap_set *set);
void dbm_unlock(struct bv_bitmap_set *set);

/* The lock-free checks of an add (name, granularity), in QEMU's order. */
int dbm_check_new(struct bv_bitmap_set *set, const char *name, uint32_t g,
                  unsigned flags, bv_error **errp);
/* A detached bitmap over size bytes (name NULL: anonymous); -errno only. */
int dbm_alloc(const char *name, uint32_t g, uint64_t size, unsigned flags,
              struct bv_dirty_bitmap **out);
/* Link a named bitmap unless its name is taken/too long or its size is not
 * the set's; on failure the caller still owns bm. */
int dbm_insert_named_locked(struct bv_bitmap_set *set,
                            struct bv_dirty_bitmap *bm, bv_error **errp);
void dbm_free(struct bv_dirty_bitmap *bm);

#endif
