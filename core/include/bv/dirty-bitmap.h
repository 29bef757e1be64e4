/*
 * Dirty bitmaps: named per-drive bitmaps that record which granules of the
 * virtual disk were written, with QEMU 7.2's semantics (qemu-semantics.md §3,
 * §4.5, §6, error texts §10).  The storage is util/hbitmap (sparse, memory
 * follows the set bits); persistence to SQLite is done by the caller with
 * the serialize/load helpers here.
 *
 * Objects
 *   struct bv_bitmap_set    the bitmaps of one drive: named ones (listed
 *                           newest first, as QEMU does) and anonymous ones
 *                           (a job's copy bitmap, a frozen bitmap's
 *                           successor), which are never listed.
 *   struct bv_dirty_bitmap  one bitmap.  A pointer stays valid until
 *                           bv_bitmap_remove/_remove_commit/_release or
 *                           bv_bitmap_set_free; abdicate and reclaim keep
 *                           the parent's pointer (the successor is freed).
 *
 * Status (§3.4), first match wins; names in one table, bv_bitmap_status_name:
 *   inconsistent -> "inconsistent"   found in use on disk after a crash
 *   has successor -> "frozen"        a backup job holds it
 *   busy         -> "locked"         another user (export, transaction) holds it
 *   !enabled     -> "disabled"
 *   otherwise    -> "active"
 *
 *        add ──> active <──enable/disable──> disabled
 *                  │ freeze (job start)            │ freeze
 *                  v                               v
 *                frozen: parent busy, keeps its bits (the copy set);
 *                        the successor records new writes
 *                  │ abdicate (success)     -> parent := successor's bits
 *                  │ reclaim  (failure)     -> parent |= successor's bits
 *                  v
 *                active / disabled (the successor's enabled state)
 *
 * Threads and locking
 *   Every bv_bitmap_* call takes the set's mutex (set->lock) for its whole
 *   duration; it guards the list and every field of every bitmap in the set.
 *   The drive's I/O path calls bv_bitmap_set_mark() from several threads at
 *   once; control-plane calls (service, transactions, jobs) run concurrently
 *   with it.  set->lock is a leaf lock: take it after any drive, job or node
 *   lock, and never call out (no callbacks) while holding it.  A merge whose
 *   sources live in another set copies them under that set's lock first and
 *   then takes the target's lock, so two set locks are never held together.
 *   Control-plane calls on the same bitmap (e.g. remove vs freeze) are
 *   serialised by the caller; the lock only keeps each call atomic.
 *
 * Errors: 0 or -errno with *errp filled (errp may be NULL); texts are QEMU's.
 *   -EINVAL bad argument, -EEXIST duplicate name, -ENOENT unknown name,
 *   -EBUSY busy or inconsistent bitmap, -ENOMEM out of memory.
 */
#ifndef BV_DIRTY_BITMAP_H
#define BV_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/error.h"

struct bv_bitmap_set;
struct bv_dirty_bitmap;
struct bv_bitmap_backup;                 /* saved contents for a transaction */

#define BV_BITMAP_NAME_MAX      1023u
#define BV_BITMAP_GRAN_MIN      512u
#define BV_BITMAP_GRAN_MAX      (1u << 31)
/* Ceiling for a stored (compressed) bitmap accepted by bv_bitmap_load. */
#define BV_BITMAP_BLOB_MAX      (1ULL << 32)

enum bv_bitmap_status {
    BV_BITMAP_ACTIVE = 0,
    BV_BITMAP_DISABLED,
    BV_BITMAP_FROZEN,
    BV_BITMAP_LOCKED,
    BV_BITMAP_INCONSISTENT,
    BV_BITMAP_STATUS__MAX,
};
const char *bv_bitmap_status_name(enum bv_bitmap_status s);

/* flags for bv_bitmap_add */
#define BV_BITMAP_F_PERSISTENT   (1u << 0)
#define BV_BITMAP_F_DISABLED     (1u << 1)
/* found in_use on disk after a crash: recording false, count 0, only remove
 * works (§2.7 step 4); implies persistent */
#define BV_BITMAP_F_INCONSISTENT (1u << 2)

struct bv_bitmap_info {
    char name[BV_BITMAP_NAME_MAX + 1];   /* "" for an anonymous bitmap */
    uint32_t granularity;
    uint64_t count;                      /* set bits * granularity (unclamped) */
    enum bv_bitmap_status status;
    bool recording;                      /* frozen: the successor records */
    bool busy;
    bool persistent;
    bool inconsistent;
};

struct bv_extent {
    uint64_t offset;
    uint64_t length;
};

/* ---- the set ----------------------------------------------------------- */

/* node_name appears in persistence error texts ("drive0"); copied.  The set
 * is freed (with every bitmap in it) by bv_bitmap_set_free. */
int bv_bitmap_set_new(const char *node_name, uint64_t disk_size,
                      struct bv_bitmap_set **out, bv_error **errp);
void bv_bitmap_set_free(struct bv_bitmap_set *set);
uint64_t bv_bitmap_set_disk_size(struct bv_bitmap_set *set);

/* The I/O path: a write, write-zeroes or discard of len > 0 bytes at offset
 * marks bits floor(off/g) .. floor((off+len-1)/g) of every recording bitmap
 * (successors included).  Never fails for the caller: a bitmap that cannot
 * record (out of memory) becomes inconsistent, as after a crash. */
void bv_bitmap_set_mark(struct bv_bitmap_set *set, uint64_t offset,
                        uint64_t len);

/* Resize every bitmap: growing adds a clean area, shrinking drops the bits
 * past the new end.  The caller refuses a resize while a job runs. */
int bv_bitmap_set_truncate(struct bv_bitmap_set *set, uint64_t new_size,
                           bv_error **errp);

/* ---- named bitmaps ----------------------------------------------------- */

/* cluster size clamped to [4096, 65536]; 65536 for 0 (raw) */
uint32_t bv_bitmap_default_granularity(uint32_t cluster_size);

/* Create a named bitmap covering the set's disk size.  granularity must be a
 * power of two in [512, 2^31]; the caller substitutes the default for an
 * omitted value, an explicit 0 is refused.  *out (may be NULL) is owned by
 * the set. */
int bv_bitmap_add(struct bv_bitmap_set *set, const char *name,
                  uint32_t granularity, unsigned flags,
                  struct bv_dirty_bitmap **out, bv_error **errp);

/* NULL when absent (no error: the backup job has its own text). */
struct bv_dirty_bitmap *bv_bitmap_find(struct bv_bitmap_set *set,
                                       const char *name);
/* As find, with "Dirty bitmap '<name>' not found" (-ENOENT). */
int bv_bitmap_lookup(struct bv_bitmap_set *set, const char *name,
                     struct bv_dirty_bitmap **out, bv_error **errp);

/* Refused while busy (frozen/locked); an inconsistent bitmap may go. */
int bv_bitmap_remove(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     bv_error **errp);

int bv_bitmap_clear(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                    bv_error **errp);
/* Idempotent.  *was_enabled (may be NULL) receives the previous state so a
 * transaction can undo with bv_bitmap_set_enabled. */
int bv_bitmap_enable(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     bool *was_enabled, bv_error **errp);
int bv_bitmap_disable(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                      bool *was_enabled, bv_error **errp);
int bv_bitmap_set_enabled(struct bv_bitmap_set *set,
                          struct bv_dirty_bitmap *bm, bool enabled,
                          bool *was_enabled, bv_error **errp);

/* target |= each source.  Sources may have any granularity and may belong to
 * another set (one lock at a time, see above); all sizes must equal the
 * target's.  Checks every bitmap before changing anything.  With backup
 * non-NULL, *backup receives the target's old contents for
 * bv_bitmap_restore. */
int bv_bitmap_merge(struct bv_bitmap_set *set, struct bv_dirty_bitmap *target,
                    struct bv_bitmap_set *src_set,
                    struct bv_dirty_bitmap *const *sources, size_t n_sources,
                    struct bv_bitmap_backup **backup, bv_error **errp);

/* ---- transactions (prepare / commit / abort, §6.2) --------------------- */

/* clear, keeping the old contents in *backup (O(1): the storage is swapped,
 * not copied).  Commit: bv_bitmap_backup_free; abort: bv_bitmap_restore. */
int bv_bitmap_clear_backup(struct bv_bitmap_set *set,
                           struct bv_dirty_bitmap *bm,
                           struct bv_bitmap_backup **backup, bv_error **errp);
/* Put the saved contents back and free the backup (takes ownership). */
void bv_bitmap_restore(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                       struct bv_bitmap_backup *backup);
void bv_bitmap_backup_free(struct bv_bitmap_backup *backup);

/* remove in three steps: prepare checks and marks the bitmap busy (so later
 * actions of the transaction see it in use); commit frees it; abort makes it
 * usable again. */
int bv_bitmap_remove_prepare(struct bv_bitmap_set *set,
                             struct bv_dirty_bitmap *bm, bv_error **errp);
void bv_bitmap_remove_commit(struct bv_bitmap_set *set,
                             struct bv_dirty_bitmap *bm);
void bv_bitmap_remove_abort(struct bv_bitmap_set *set,
                            struct bv_dirty_bitmap *bm);

/* ---- jobs (§4.3, §4.5) ------------------------------------------------- */

enum bv_bitmap_sync_mode {
    BV_BITMAP_SYNC_ON_SUCCESS = 0,
    BV_BITMAP_SYNC_ALWAYS,
    BV_BITMAP_SYNC_NEVER,
    BV_BITMAP_SYNC__MAX,
};
const char *bv_bitmap_sync_mode_name(enum bv_bitmap_sync_mode m);
/* -1 for an unknown name */
int bv_bitmap_sync_mode_parse(const char *name);

/* Check that a job may use bm (not busy, not inconsistent) without taking
 * it; the job's validation step. */
int bv_bitmap_check_usable(struct bv_bitmap_set *set,
                           struct bv_dirty_bitmap *bm, bv_error **errp);

/* Job start: create an anonymous successor with bm's granularity and enabled
 * state; bm stops recording, becomes busy and keeps its bits. */
int bv_bitmap_freeze(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     bv_error **errp);
/* bm's bits := the successor's (writes made during the job); bm takes the
 * successor's enabled state and is no longer busy.  The pointer stays. */
int bv_bitmap_abdicate(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                       bv_error **errp);
/* bm |= the successor's bits; bm usable again. */
int bv_bitmap_reclaim(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                      bv_error **errp);
/* The bitmap-mode table: picks abdicate or reclaim from mode and job
 * success; for "always" after a failure, also ORs in not_copied (the job's
 * copy bitmap: granules still to copy; may be NULL).  not_copied must belong
 * to the same set. */
int bv_bitmap_job_finish(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                         enum bv_bitmap_sync_mode mode, bool success,
                         struct bv_dirty_bitmap *not_copied, bv_error **errp);

/* Anonymous bitmap (never listed).  Created not recording: the job's copy
 * bitmap is changed only through mark_range/reset_range.  Freed by
 * bv_bitmap_release. */
int bv_bitmap_create_anon(struct bv_bitmap_set *set, uint32_t granularity,
                          struct bv_dirty_bitmap **out, bv_error **errp);
void bv_bitmap_release(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm);
/* Anonymous copy bitmap at job_cluster granularity: src's set bits widened to
 * whole job clusters (sync=bitmap/incremental), or every cluster when src is
 * NULL (full). */
int bv_bitmap_create_copy_bitmap(struct bv_bitmap_set *set,
                                 struct bv_dirty_bitmap *src,
                                 uint32_t job_cluster,
                                 struct bv_dirty_bitmap **out, bv_error **errp);
/* Direct edits and reads for jobs (no busy check: the job owns bm). */
int bv_bitmap_mark_range(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                         uint64_t offset, uint64_t len);
int bv_bitmap_reset_range(struct bv_bitmap_set *set,
                          struct bv_dirty_bitmap *bm, uint64_t offset,
                          uint64_t len);
bool bv_bitmap_test(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                    uint64_t offset);
/* First dirty run meeting [offset, end), clipped to it and to the disk. */
bool bv_bitmap_next_dirty(struct bv_bitmap_set *set,
                          struct bv_dirty_bitmap *bm, uint64_t offset,
                          uint64_t end, uint64_t *run_off, uint64_t *run_len);

/* ---- queries ----------------------------------------------------------- */

void bv_bitmap_query(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                     struct bv_bitmap_info *info);
/* Named bitmaps newest first: fills up to max entries of out and returns the
 * total number of named bitmaps (call with max 0 to size the array). */
size_t bv_bitmap_list(struct bv_bitmap_set *set, struct bv_bitmap_info *out,
                      size_t max);
/* Dirty extents (adjacent granules merged, clipped to the disk size) from
 * *cursor on: fills up to max, sets *n, advances *cursor; *cursor ==
 * disk size when the listing is complete. */
void bv_bitmap_extents(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                       uint64_t *cursor, struct bv_extent *out, size_t max,
                       size_t *n);

/* ---- persistence ------------------------------------------------------- */

/* Contents as zlib data (compress2-compatible) of the LSB-first bitmap
 * (hbitmap.h).  Takes a copy under the lock, then compresses without it in
 * 64 KiB chunks.  *out is malloc'd, owned by the caller; the output is
 * refused (-EFBIG) past max_len bytes. */
int bv_bitmap_serialize(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                        size_t max_len, uint8_t **out, size_t *out_len,
                        bv_error **errp);
/* Create a named bitmap (as bv_bitmap_add) with the stored contents.  The
 * data must inflate to exactly ceil(ceil(disk_size/g)/8) bytes with zero
 * tail bits; anything else is -EINVAL and nothing is created.  Memory is
 * bounded by the bitmap itself plus 64 KiB buffers. */
int bv_bitmap_load(struct bv_bitmap_set *set, const char *name,
                   uint32_t granularity, unsigned flags, const uint8_t *data,
                   size_t len, struct bv_dirty_bitmap **out, bv_error **errp);

#endif
