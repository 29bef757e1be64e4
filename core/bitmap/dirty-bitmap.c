/*
 * Dirty bitmaps with QEMU 7.2 semantics (interface, states and locking in
 * include/bv/dirty-bitmap.h).
 *
 * Why one list per drive: every write must reach every recording bitmap of
 * its drive, named or not (a frozen bitmap's successor is anonymous), so
 * set_mark walks one short list under one mutex.  The list is kept newest
 * first by a creation sequence number, which is also what QEMU's listing
 * order is.
 *
 * The bits live in util/hbitmap (sparse; set/count/next-dirty cost does not
 * grow with the drive size).  Costs here: mark O(bitmaps * hbitmap set),
 * query O(1), list O(bitmaps), clear O(1) plus freeing, merge and
 * serialize proportional to the set runs.
 *
 * Ownership: the set owns every bitmap; backups handed out by clear/merge
 * are owned by the caller until restore or backup_free.
 */
#include "bv/dirty-bitmap.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty-bitmap-int.h"
#include "util/checked.h"
#include "util/hbitmap.h"

static const char *const status_names[BV_BITMAP_STATUS__MAX] = {
    [BV_BITMAP_ACTIVE] = "active",
    [BV_BITMAP_DISABLED] = "disabled",
    [BV_BITMAP_FROZEN] = "frozen",
    [BV_BITMAP_LOCKED] = "locked",
    [BV_BITMAP_INCONSISTENT] = "inconsistent",
};

static const char *const sync_mode_names[BV_BITMAP_SYNC__MAX] = {
    [BV_BITMAP_SYNC_ON_SUCCESS] = "on-success",
    [BV_BITMAP_SYNC_ALWAYS] = "always",
    [BV_BITMAP_SYNC_NEVER] = "never",
};

const char *bv_bitmap_status_name(enum bv_bitmap_status s)
{
    return (unsigned)s < BV_BITMAP_STATUS__MAX ? status_names[s] : NULL;
}

const char *bv_bitmap_sync_mode_name(enum bv_bitmap_sync_mode m)
{
    return (unsigned)m < BV_BITMAP_SYNC__MAX ? sync_mode_names[m] : NULL;
}

int bv_bitmap_sync_mode_parse(const char *name)
{
    for (int i = 0; name && i < BV_BITMAP_SYNC__MAX; i++)
        if (strcmp(name, sync_mode_names[i]) == 0)
            return i;
    return -1;
}

#ifndef NDEBUG
static _Thread_local unsigned sets_held;    /* set locks this thread holds */
#define ASSERT_SET_LOCKED(set) BV_ASSERT_HELD(&(set)->lock)
/* for *_locked functions that see a bitmap but not its set */
#define ASSERT_SOME_SET_LOCKED() assert(sets_held > 0)
#else
#define ASSERT_SET_LOCKED(set) ((void)(set))
#define ASSERT_SOME_SET_LOCKED() ((void)0)
#endif

void dbm_lock(struct bv_bitmap_set *set)
{
    bv_mutex_lock(&set->lock);
#ifndef NDEBUG
    sets_held++;
#endif
}

void dbm_unlock(struct bv_bitmap_set *set)
{
#ifndef NDEBUG
    assert(sets_held > 0);
    sets_held--;
#endif
    bv_mutex_unlock(&set->lock);
}

static const char *bm_name(const struct bv_dirty_bitmap *bm)
{
    return bm->name ? bm->name : "";
}

/* ---- set and list ------------------------------------------------------ */

int bv_bitmap_set_new(const char *node_name, uint64_t disk_size,
                      struct bv_bitmap_set **out, bv_error **errp)
{
    if (disk_size > HBITMAP_MAX_SIZE)
        return bv_error_setf(errp, EINVAL, "Disk size %" PRIu64
                             " is too large for a dirty bitmap", disk_size);
    struct bv_bitmap_set *set = calloc(1, sizeof(*set));
    if (!set)
        return bv_error_setf(errp, ENOMEM, "Out of memory");
    set->node_name = strdup(node_name ? node_name : "");
    if (!set->node_name || bv_mutex_init(&set->lock) != 0) {
        free(set->node_name);
        free(set);
        return bv_error_setf(errp, ENOMEM, "Out of memory");
    }
    set->disk_size = disk_size;
    *out = set;
    return 0;
}

void dbm_free(struct bv_dirty_bitmap *bm)
{
    hbitmap_free(bm->hb);
    free(bm->name);
    free(bm);
}

void bv_bitmap_set_free(struct bv_bitmap_set *set)
{
    if (!set)
        return;
    while (set->head) {
        struct bv_dirty_bitmap *bm = set->head;
        set->head = bm->next;
        dbm_free(bm);
    }
    bv_mutex_destroy(&set->lock);
    free(set->node_name);
    free(set);
}

uint64_t bv_bitmap_set_disk_size(struct bv_bitmap_set *set)
{
    dbm_lock(set);
    uint64_t s = set->disk_size;
    dbm_unlock(set);
    return s;
}

/* Insert keeping the list sorted by seq, newest first. */
static void link_locked(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm)
{
    ASSERT_SET_LOCKED(set);
    struct bv_dirty_bitmap **pp = &set->head;
    while (*pp && (*pp)->seq > bm->seq)
        pp = &(*pp)->next;
    bm->next = *pp;
    *pp = bm;
}

static void unlink_locked(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm)
{
    ASSERT_SET_LOCKED(set);
    for (struct bv_dirty_bitmap **pp = &set->head; *pp; pp = &(*pp)->next) {
        if (*pp == bm) {
            *pp = bm->next;
            bm->next = NULL;
            return;
        }
    }
}

/* Unlink and free bm and its successor, if any. */
static void release_locked(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm)
{
    ASSERT_SET_LOCKED(set);
    if (bm->successor) {
        unlink_locked(set, bm->successor);
        dbm_free(bm->successor);
    }
    unlink_locked(set, bm);
    dbm_free(bm);
}

static struct bv_dirty_bitmap *find_locked(struct bv_bitmap_set *set,
                                           const char *name)
{
    ASSERT_SET_LOCKED(set);
    for (struct bv_dirty_bitmap *bm = set->head; bm; bm = bm->next)
        if (bm->name && strcmp(bm->name, name) == 0)
            return bm;
    return NULL;
}

static bool recording_locked(const struct bv_dirty_bitmap *bm)
{
    ASSERT_SOME_SET_LOCKED();
    return bm->enabled && !bm->successor && !bm->inconsistent;
}

/* A bitmap that cannot be trusted any more: only remove is allowed. */
static void make_inconsistent_locked(struct bv_dirty_bitmap *bm)
{
    ASSERT_SOME_SET_LOCKED();
    bm->inconsistent = true;
    bm->enabled = false;
    hbitmap_reset_all(bm->hb);
}

void bv_bitmap_set_mark(struct bv_bitmap_set *set, uint64_t offset,
                        uint64_t len)
{
    if (len == 0)
        return;
    dbm_lock(set);
    for (struct bv_dirty_bitmap *bm = set->head; bm; bm = bm->next)
        if (recording_locked(bm) && hbitmap_set(bm->hb, offset, len) < 0)
            make_inconsistent_locked(bm);
    dbm_unlock(set);
}

int bv_bitmap_set_truncate(struct bv_bitmap_set *set, uint64_t new_size,
                           bv_error **errp)
{
    int r = 0;
    if (new_size > HBITMAP_MAX_SIZE)
        return bv_error_setf(errp, EINVAL, "Disk size %" PRIu64
                             " is too large for a dirty bitmap", new_size);
    dbm_lock(set);
    for (struct bv_dirty_bitmap *bm = set->head; bm; bm = bm->next) {
        int rr = hbitmap_truncate(bm->hb, new_size);
        if (rr < 0) {
            make_inconsistent_locked(bm);
            r = bv_error_setf(errp, -rr, "Cannot resize bitmap '%s'",
                              bm_name(bm));
        }
    }
    set->disk_size = new_size;
    dbm_unlock(set);
    return r;
}

/* ---- creation ---------------------------------------------------------- */

uint32_t bv_bitmap_default_granularity(uint32_t cluster_size)
{
    if (cluster_size == 0 || cluster_size > 65536)
        return 65536;
    return cluster_size < 4096 ? 4096 : cluster_size;
}

static int check_granularity(uint32_t g, bv_error **errp)
{
    if (g < BV_BITMAP_GRAN_MIN || !is_pow2_u64(g))
        return bv_error_setf(errp, EINVAL,
                             "Granularity must be power of 2 and at least 512");
    return 0;
}

int dbm_check_new(struct bv_bitmap_set *set, const char *name, uint32_t g,
                  unsigned flags, bv_error **errp)
{
    if (!name || !name[0])
        return bv_error_setf(errp, EINVAL, "Bitmap name cannot be empty");
    int r = check_granularity(g, errp);
    if (r < 0)
        return r;
    size_t len = strnlen(name, BV_BITMAP_NAME_MAX + 1);
    if (len > BV_BITMAP_NAME_MAX && (flags & BV_BITMAP_F_PERSISTENT))
        return bv_error_setf(errp, EINVAL, "Can't make bitmap '%s' persistent "
                             "in '%s': Name length exceeds maximum (1023 "
                             "characters)", name, set->node_name);
    return 0;
}

int dbm_alloc(const char *name, uint32_t g, uint64_t size, unsigned flags,
              struct bv_dirty_bitmap **out)
{
    struct bv_dirty_bitmap *bm = calloc(1, sizeof(*bm));
    if (!bm)
        return -ENOMEM;
    int r = hbitmap_new(size, (unsigned)__builtin_ctz(g), &bm->hb);
    if (r == 0 && name && !(bm->name = strdup(name)))
        r = -ENOMEM;
    if (r < 0) {
        hbitmap_free(bm->hb);
        free(bm);
        return r;
    }
    bm->granularity = g;
    bm->inconsistent = flags & BV_BITMAP_F_INCONSISTENT;
    bm->persistent = (flags & BV_BITMAP_F_PERSISTENT) || bm->inconsistent;
    bm->enabled = !(flags & BV_BITMAP_F_DISABLED) && !bm->inconsistent;
    *out = bm;
    return 0;
}

int dbm_insert_named_locked(struct bv_bitmap_set *set,
                            struct bv_dirty_bitmap *bm, bv_error **errp)
{
    ASSERT_SET_LOCKED(set);
    if (find_locked(set, bm->name))
        return bv_error_setf(errp, EEXIST, "Bitmap already exists: %s",
                             bm->name);
    if (strlen(bm->name) > BV_BITMAP_NAME_MAX)
        return bv_error_setf(errp, EINVAL, "Bitmap name too long: %s",
                             bm->name);
    if (hbitmap_size(bm->hb) != set->disk_size)
        return bv_error_setf(errp, EAGAIN, "Drive was resized meanwhile");
    bm->seq = set->next_seq++;
    link_locked(set, bm);
    return 0;
}

int bv_bitmap_add(struct bv_bitmap_set *set, const char *name,
                  uint32_t granularity, unsigned flags,
                  struct bv_dirty_bitmap **out, bv_error **errp)
{
    struct bv_dirty_bitmap *bm = NULL;
    int r = dbm_check_new(set, name, granularity, flags, errp);
    if (r < 0)
        return r;
    dbm_lock(set);
    r = dbm_alloc(name, granularity, set->disk_size, flags, &bm);
    if (r < 0)
        bv_error_setf(errp, -r, "Cannot create bitmap '%s'", name);
    else
        r = dbm_insert_named_locked(set, bm, errp);
    dbm_unlock(set);
    if (r < 0 && bm)
        dbm_free(bm);
    else if (r == 0 && out)
        *out = bm;
    return r;
}

struct bv_dirty_bitmap *bv_bitmap_find(struct bv_bitmap_set *set,
                                       const char *name)
{
    if (!name)
        return NULL;
    dbm_lock(set);
    struct bv_dirty_bitmap *bm = find_locked(set, name);
    dbm_unlock(set);
    return bm;
}

int bv_bitmap_lookup(struct bv_bitmap_set *set, const char *name,
                     struct bv_dirty_bitmap **out, bv_error **errp)
{
    struct bv_dirty_bitmap *bm = bv_bitmap_find(set, name);
    if (!bm)
        return bv_error_setf(errp, ENOENT, "Dirty bitmap '%s' not found",
                             name ? name : "");
    *out = bm;
    return 0;
}

/* ---- user operations --------------------------------------------------- */

static int check_usable_locked(const struct bv_dirty_bitmap *bm,
                               bv_error **errp)
{
    ASSERT_SOME_SET_LOCKED();
    if (bm->busy)
        return bv_error_setf(errp, EBUSY, "Bitmap '%s' is currently in use by "
                             "another operation and cannot be used",
                             bm_name(bm));
    if (bm->inconsistent)
        return bv_error_setf(errp, EBUSY, "Bitmap '%s' is inconsistent and "
                             "cannot be used", bm_name(bm));
    return 0;
}

int bv_bitmap_check_usable(struct bv_bitmap_set *set,
                           struct bv_dirty_bitmap *bm, bv_error **errp)
{
    dbm_lock(set);
    int r = check_usable_locked(bm, errp);
    dbm_unlock(set);
    return r;
}

int bv_bitmap_remove(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     bv_error **errp)
{
    int r = 0;
    dbm_lock(set);
    if (bm->busy)
        r = check_usable_locked(bm, errp);
    else
        release_locked(set, bm);
    dbm_unlock(set);
    return r;
}

int bv_bitmap_remove_prepare(struct bv_bitmap_set *set,
                             struct bv_dirty_bitmap *bm, bv_error **errp)
{
    int r = 0;
    dbm_lock(set);
    if (bm->busy)
        r = check_usable_locked(bm, errp);
    else
        bm->busy = true;
    dbm_unlock(set);
    return r;
}

void bv_bitmap_remove_commit(struct bv_bitmap_set *set,
                             struct bv_dirty_bitmap *bm)
{
    dbm_lock(set);
    release_locked(set, bm);
    dbm_unlock(set);
}

void bv_bitmap_remove_abort(struct bv_bitmap_set *set,
                            struct bv_dirty_bitmap *bm)
{
    dbm_lock(set);
    bm->busy = false;
    dbm_unlock(set);
}

/* Swap in an empty hbitmap; the old one goes to *old. */
static int swap_empty_locked(struct bv_dirty_bitmap *bm, struct hbitmap **old)
{
    ASSERT_SOME_SET_LOCKED();
    struct hbitmap *fresh;
    int r = hbitmap_new(hbitmap_size(bm->hb), hbitmap_gran_shift(bm->hb),
                        &fresh);
    if (r < 0)
        return r;
    *old = bm->hb;
    bm->hb = fresh;
    return 0;
}

int bv_bitmap_clear_backup(struct bv_bitmap_set *set,
                           struct bv_dirty_bitmap *bm,
                           struct bv_bitmap_backup **backup, bv_error **errp)
{
    struct bv_bitmap_backup *b = calloc(1, sizeof(*b));
    if (!b)
        return bv_error_setf(errp, ENOMEM, "Out of memory");
    dbm_lock(set);
    int r = check_usable_locked(bm, errp);
    if (r == 0) {
        r = swap_empty_locked(bm, &b->hb);
        if (r < 0)
            bv_error_setf(errp, -r, "Cannot clear bitmap '%s'", bm_name(bm));
    }
    dbm_unlock(set);
    if (r < 0 || !backup)
        bv_bitmap_backup_free(b);
    else
        *backup = b;
    return r;
}

int bv_bitmap_clear(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                    bv_error **errp)
{
    return bv_bitmap_clear_backup(set, bm, NULL, errp);
}

void bv_bitmap_backup_free(struct bv_bitmap_backup *backup)
{
    if (!backup)
        return;
    hbitmap_free(backup->hb);
    free(backup);
}

void bv_bitmap_restore(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                       struct bv_bitmap_backup *backup)
{
    if (!backup)
        return;
    dbm_lock(set);
    struct hbitmap *cur = bm->hb;
    bm->hb = backup->hb;
    backup->hb = cur;
    dbm_unlock(set);
    bv_bitmap_backup_free(backup);
}

int bv_bitmap_set_enabled(struct bv_bitmap_set *set,
                          struct bv_dirty_bitmap *bm, bool enabled,
                          bool *was_enabled, bv_error **errp)
{
    dbm_lock(set);
    int r = check_usable_locked(bm, errp);
    if (r == 0) {
        if (was_enabled)
            *was_enabled = bm->enabled;
        bm->enabled = enabled;
    }
    dbm_unlock(set);
    return r;
}

int bv_bitmap_enable(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     bool *was_enabled, bv_error **errp)
{
    return bv_bitmap_set_enabled(set, bm, true, was_enabled, errp);
}

int bv_bitmap_disable(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                      bool *was_enabled, bv_error **errp)
{
    return bv_bitmap_set_enabled(set, bm, false, was_enabled, errp);
}

/* ---- merge ------------------------------------------------------------- */

static int check_source_locked(uint64_t dst_size,
                               const struct bv_dirty_bitmap *src,
                               bv_error **errp)
{
    ASSERT_SOME_SET_LOCKED();
    int r = check_usable_locked(src, errp);
    if (r < 0)
        return r;
    uint64_t ssize = hbitmap_size(src->hb);
    if (ssize != dst_size)
        return bv_error_setf(errp, EINVAL, "Bitmaps are of different sizes "
                             "(destination size is %" PRIu64 ", source size "
                             "is %" PRIu64 ") and can't be merged",
                             dst_size, ssize);
    return 0;
}

/* target := copy of target | sources (each an hbitmap), swapped in whole so
 * a failure changes nothing; the old contents go to *backup if asked. */
static int merge_apply_locked(struct bv_dirty_bitmap *target,
                              struct hbitmap *const *srcs, size_t n,
                              struct bv_bitmap_backup **backup,
                              bv_error **errp)
{
    ASSERT_SOME_SET_LOCKED();
    struct bv_bitmap_backup *b = NULL;
    struct hbitmap *merged = NULL;
    int r = hbitmap_copy(target->hb, &merged);
    for (size_t i = 0; r == 0 && i < n; i++)
        r = hbitmap_merge(merged, srcs[i]);
    if (r == 0 && backup && !(b = calloc(1, sizeof(*b))))
        r = -ENOMEM;
    if (r < 0) {
        hbitmap_free(merged);
        return bv_error_setf(errp, -r, "Cannot merge into bitmap '%s'",
                             bm_name(target));
    }
    if (b) {
        b->hb = target->hb;
        *backup = b;
    } else {
        hbitmap_free(target->hb);
    }
    target->hb = merged;
    return 0;
}

/* Sources of the target's own set: everything under one lock. */
static int merge_same_set(struct bv_bitmap_set *set,
                          struct bv_dirty_bitmap *target,
                          struct bv_dirty_bitmap *const *sources, size_t n,
                          struct bv_bitmap_backup **backup, bv_error **errp)
{
    struct hbitmap **srcs = calloc(n ? n : 1, sizeof(*srcs));
    if (!srcs)
        return bv_error_setf(errp, ENOMEM, "Out of memory");
    dbm_lock(set);
    int r = check_usable_locked(target, errp);
    uint64_t dsize = r == 0 ? hbitmap_size(target->hb) : 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = check_source_locked(dsize, sources[i], errp);
        srcs[i] = sources[i]->hb;
    }
    if (r == 0)
        r = merge_apply_locked(target, srcs, n, backup, errp);
    dbm_unlock(set);
    free(srcs);
    return r;
}

/* Sources of another set: copy them under their lock, then merge the copies
 * under the target's lock (never both locks at once). */
static int merge_other_set(struct bv_bitmap_set *set,
                           struct bv_dirty_bitmap *target,
                           struct bv_bitmap_set *src_set,
                           struct bv_dirty_bitmap *const *sources, size_t n,
                           struct bv_bitmap_backup **backup, bv_error **errp)
{
    struct hbitmap **copies = calloc(n ? n : 1, sizeof(*copies));
    if (!copies)
        return bv_error_setf(errp, ENOMEM, "Out of memory");
    dbm_lock(set);
    int r = check_usable_locked(target, errp);
    uint64_t dsize = hbitmap_size(target->hb);
    dbm_unlock(set);
    dbm_lock(src_set);
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = check_source_locked(dsize, sources[i], errp);
        if (r == 0 && (r = hbitmap_copy(sources[i]->hb, &copies[i])) < 0)
            bv_error_setf(errp, -r, "Out of memory");
    }
    dbm_unlock(src_set);
    if (r == 0) {
        dbm_lock(set);
        r = check_usable_locked(target, errp);
        if (r == 0)
            r = merge_apply_locked(target, copies, n, backup, errp);
        dbm_unlock(set);
    }
    for (size_t i = 0; i < n; i++)
        hbitmap_free(copies[i]);
    free(copies);
    return r;
}

int bv_bitmap_merge(struct bv_bitmap_set *set, struct bv_dirty_bitmap *target,
                    struct bv_bitmap_set *src_set,
                    struct bv_dirty_bitmap *const *sources, size_t n_sources,
                    struct bv_bitmap_backup **backup, bv_error **errp)
{
    if (!src_set || src_set == set)
        return merge_same_set(set, target, sources, n_sources, backup, errp);
    return merge_other_set(set, target, src_set, sources, n_sources, backup,
                           errp);
}

/* ---- jobs -------------------------------------------------------------- */

int bv_bitmap_freeze(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     bv_error **errp)
{
    struct bv_dirty_bitmap *succ = NULL;
    dbm_lock(set);
    int r = check_usable_locked(bm, errp);
    if (r == 0) {
        unsigned flags = bm->enabled ? 0 : BV_BITMAP_F_DISABLED;
        r = dbm_alloc(NULL, bm->granularity, hbitmap_size(bm->hb), flags,
                         &succ);
        if (r < 0)
            bv_error_setf(errp, -r, "Cannot freeze bitmap '%s'", bm_name(bm));
    }
    if (r == 0) {
        succ->seq = set->next_seq++;
        link_locked(set, succ);
        bm->successor = succ;
        bm->busy = true;
    }
    dbm_unlock(set);
    return r;
}

static int check_frozen_locked(const struct bv_dirty_bitmap *bm,
                               bv_error **errp)
{
    ASSERT_SOME_SET_LOCKED();
    if (!bm->successor)
        return bv_error_setf(errp, EINVAL, "Bitmap '%s' is not frozen",
                             bm_name(bm));
    return 0;
}

/* Drop the successor (its bits must already be used); bm usable again. */
static void thaw_locked(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm)
{
    ASSERT_SET_LOCKED(set);
    struct bv_dirty_bitmap *succ = bm->successor;
    bm->enabled = succ->enabled;
    if (succ->inconsistent)
        make_inconsistent_locked(bm);
    bm->successor = NULL;
    bm->busy = false;
    unlink_locked(set, succ);
    dbm_free(succ);
}

static void abdicate_locked(struct bv_bitmap_set *set,
                            struct bv_dirty_bitmap *bm)
{
    ASSERT_SET_LOCKED(set);
    struct hbitmap *tmp = bm->hb;
    bm->hb = bm->successor->hb;
    bm->successor->hb = tmp;
    thaw_locked(set, bm);
}

static void reclaim_locked(struct bv_bitmap_set *set,
                           struct bv_dirty_bitmap *bm)
{
    ASSERT_SET_LOCKED(set);
    if (hbitmap_merge(bm->hb, bm->successor->hb) < 0)
        bm->successor->inconsistent = true;   /* bits lost: say so */
    thaw_locked(set, bm);
}

int bv_bitmap_abdicate(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                       bv_error **errp)
{
    dbm_lock(set);
    int r = check_frozen_locked(bm, errp);
    if (r == 0)
        abdicate_locked(set, bm);
    dbm_unlock(set);
    return r;
}

int bv_bitmap_reclaim(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                      bv_error **errp)
{
    dbm_lock(set);
    int r = check_frozen_locked(bm, errp);
    if (r == 0)
        reclaim_locked(set, bm);
    dbm_unlock(set);
    return r;
}

int bv_bitmap_job_finish(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                         enum bv_bitmap_sync_mode mode, bool success,
                         struct bv_dirty_bitmap *not_copied, bv_error **errp)
{
    if ((unsigned)mode >= BV_BITMAP_SYNC__MAX)
        return bv_error_setf(errp, EINVAL, "Invalid bitmap sync mode");
    dbm_lock(set);
    int r = check_frozen_locked(bm, errp);
    if (r == 0 && (mode == BV_BITMAP_SYNC_ALWAYS ||
                   (mode == BV_BITMAP_SYNC_ON_SUCCESS && success))) {
        abdicate_locked(set, bm);
        if (!success && not_copied && hbitmap_merge(bm->hb, not_copied->hb) < 0)
            make_inconsistent_locked(bm);
    } else if (r == 0) {
        reclaim_locked(set, bm);
    }
    dbm_unlock(set);
    return r;
}

int bv_bitmap_create_anon(struct bv_bitmap_set *set, uint32_t granularity,
                          struct bv_dirty_bitmap **out, bv_error **errp)
{
    struct bv_dirty_bitmap *bm;
    int r = check_granularity(granularity, errp);
    if (r < 0)
        return r;
    dbm_lock(set);
    r = dbm_alloc(NULL, granularity, set->disk_size, BV_BITMAP_F_DISABLED,
                     &bm);
    if (r == 0) {
        bm->seq = set->next_seq++;
        link_locked(set, bm);
        *out = bm;
    }
    dbm_unlock(set);
    if (r < 0)
        return bv_error_setf(errp, -r, "Cannot create a bitmap");
    return 0;
}

void bv_bitmap_release(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm)
{
    if (!bm)
        return;
    dbm_lock(set);
    release_locked(set, bm);
    dbm_unlock(set);
}

int bv_bitmap_create_copy_bitmap(struct bv_bitmap_set *set,
                                 struct bv_dirty_bitmap *src,
                                 uint32_t job_cluster,
                                 struct bv_dirty_bitmap **out, bv_error **errp)
{
    struct bv_dirty_bitmap *copy = NULL;
    int r = bv_bitmap_create_anon(set, job_cluster, &copy, errp);
    if (r < 0)
        return r;
    dbm_lock(set);
    if (src)
        r = hbitmap_merge(copy->hb, src->hb);     /* widens to job clusters */
    else
        r = hbitmap_set(copy->hb, 0, hbitmap_size(copy->hb));
    if (r < 0)
        release_locked(set, copy);
    dbm_unlock(set);
    if (r < 0)
        return bv_error_setf(errp, -r, "Cannot build the copy bitmap");
    *out = copy;
    return 0;
}

int bv_bitmap_mark_range(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                         uint64_t offset, uint64_t len)
{
    dbm_lock(set);
    int r = hbitmap_set(bm->hb, offset, len);
    dbm_unlock(set);
    return r;
}

int bv_bitmap_reset_range(struct bv_bitmap_set *set,
                          struct bv_dirty_bitmap *bm, uint64_t offset,
                          uint64_t len)
{
    dbm_lock(set);
    int r = hbitmap_reset(bm->hb, offset, len);
    dbm_unlock(set);
    return r;
}

bool bv_bitmap_test(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                    uint64_t offset)
{
    dbm_lock(set);
    bool v = hbitmap_get(bm->hb, offset);
    dbm_unlock(set);
    return v;
}

bool bv_bitmap_next_dirty(struct bv_bitmap_set *set,
                          struct bv_dirty_bitmap *bm, uint64_t offset,
                          uint64_t end, uint64_t *run_off, uint64_t *run_len)
{
    dbm_lock(set);
    bool found = hbitmap_next_run(bm->hb, offset, end, run_off, run_len);
    dbm_unlock(set);
    return found;
}

/* ---- queries ----------------------------------------------------------- */

static enum bv_bitmap_status status_locked(const struct bv_dirty_bitmap *bm)
{
    ASSERT_SOME_SET_LOCKED();
    if (bm->inconsistent)
        return BV_BITMAP_INCONSISTENT;
    if (bm->successor)
        return BV_BITMAP_FROZEN;
    if (bm->busy)
        return BV_BITMAP_LOCKED;
    return bm->enabled ? BV_BITMAP_ACTIVE : BV_BITMAP_DISABLED;
}

static void info_locked(const struct bv_dirty_bitmap *bm,
                        struct bv_bitmap_info *info)
{
    ASSERT_SOME_SET_LOCKED();
    memset(info, 0, sizeof(*info));
    if (bm->name)
        memcpy(info->name, bm->name, strlen(bm->name) + 1);
    info->granularity = bm->granularity;
    /* nbits <= 2^60 / g keeps count * g below 2^63 */
    info->count = hbitmap_count(bm->hb) * bm->granularity;
    info->status = status_locked(bm);
    info->recording = !bm->inconsistent &&
        (bm->successor ? bm->successor->enabled : bm->enabled);
    info->busy = bm->busy;
    info->persistent = bm->persistent;
    info->inconsistent = bm->inconsistent;
}

void bv_bitmap_query(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     struct bv_bitmap_info *info)
{
    dbm_lock(set);
    info_locked(bm, info);
    dbm_unlock(set);
}

size_t bv_bitmap_list(struct bv_bitmap_set *set, struct bv_bitmap_info *out,
                      size_t max)
{
    size_t n = 0;
    dbm_lock(set);
    for (struct bv_dirty_bitmap *bm = set->head; bm; bm = bm->next) {
        if (!bm->name)
            continue;
        if (n < max)
            info_locked(bm, &out[n]);
        n++;
    }
    dbm_unlock(set);
    return n;
}

void bv_bitmap_extents(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                       uint64_t *cursor, struct bv_extent *out, size_t max,
                       size_t *n)
{
    uint64_t pos = *cursor, ro, rl;
    size_t k = 0;
    dbm_lock(set);
    uint64_t end = hbitmap_size(bm->hb);
    while (k < max && hbitmap_next_run(bm->hb, pos, end, &ro, &rl)) {
        out[k].offset = ro;
        out[k].length = rl;
        k++;
        pos = ro + rl;
    }
    dbm_unlock(set);
    *cursor = k < max || pos >= end ? end : pos;
    *n = k;
}
