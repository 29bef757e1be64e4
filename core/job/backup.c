/*
 * The backup job: block copy with copy-before-write.  See
 * include/bv/backup.h for the point-in-time rule and the locks.
 *
 * Claiming: a range is claimed by clearing its bits in the copy bitmap and
 * recording it in the in-flight list, both under bk->lock; the copier then
 * reads the source and writes the target without any lock and finally
 * removes its entry (putting the bits back if the copy failed).  A CBW
 * first waits for in-flight copies overlapping its write, then claims what
 * is still dirty there, so a guest write never overtakes the copy of the
 * data it overwrites, and no cluster is copied twice.
 *
 * Cost: the background loop visits dirty runs (next_dirty skips clean
 * areas in O(log)), asks the source's block status per run (coalesced: a
 * sparse area is one answer) and reads only data; an incremental's work
 * follows the bitmap, a full backup's the allocated data.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bv/backup.h"

const char *const bv_backup_sync_names[] = {
    "full", "incremental", "top", "none", "bitmap", NULL,
};

struct inflight {
    uint64_t off, len;
    struct inflight *next;
};

struct backup {
    struct bv_job *job;
    bv_drive *drive;
    bv_node *src, *target;
    struct bv_bitmap_set *set;
    struct bv_dirty_bitmap *copy;        /* job clusters still to copy */
    struct bv_dirty_bitmap *sync_bm;     /* frozen while the job lives; NULL if none */
    enum bv_bitmap_sync_mode bitmap_mode;
    enum bv_backup_sync sync;
    enum bv_job_error_policy on_source_error, on_target_error;
    bool target_empty, compress, skip_unallocated;
    uint32_t cluster;                    /* job cluster */
    uint32_t chunk;
    unsigned threads;
    uint64_t size;                       /* the drive's, fixed while the job holds it */
    bool claimed, frozen, notifier_added;
    struct bv_drive_notifier notifier;
    void (*release)(void *opaque);
    void *release_opaque;
    int (*check)(void *opaque, bv_error **errp);
    void *check_opaque;
    void (*copied)(void *opaque, uint64_t off, uint64_t len, const void *data);
    void *copied_opaque;

    pthread_mutex_t lock;                /* leaf: below the drive's quiesce lock */
    pthread_cond_t cond;                 /* an in-flight copy ended */
    struct inflight *inflight;           /* lock */
    bool active;                         /* lock: CBW copies while set */
    /* the background loop's shared state (lock) */
    uint64_t cursor;
    unsigned launched;                   /* chunks claimed this pass */
    int err;                             /* first error of this round, 0 if none */
    bool err_write;
    bool stop;                           /* copy threads: leave now */
    _Atomic uint64_t unflushed;          /* bytes written since the last early flush */
    /* rate limit: 100 ms slices (lock) */
    uint64_t slice_start_ns, slice_bytes;
};

/* QEMU's block-copy starts up to 64 chunk tasks at once and, after an
 * error, lets those in flight finish but starts no more.  The first 64
 * chunks of a pass count as in flight from its start, so a failing read
 * among them leaves the others copied (what §4.5's "always" outcome and the
 * job's offset at failure show), whatever our thread timing. */
#define BACKUP_WINDOW 64

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t bv_backup_job_cluster(bv_node *target)
{
    uint32_t cs = bv_node_cluster_size(target);
    return cs > 65536 ? cs : 65536;
}

/* ---- what the source holds --------------------------------------------- */

/* The leading run of [off, off+len) as the whole chain reads it: *zero if it
 * reads as zeroes without data, *top if the top layer decides it. */
static int chain_status(bv_node *n, uint64_t off, uint64_t len, uint64_t *pnum, bool *zero,
                        bool *top, bv_error **errp)
{
    *top = false;
    for (int depth = 0; n; depth++) {
        struct bv_block_status bs;
        int r = bv_node_block_status(n, off, len, &bs, errp);
        if (r < 0)
            return r;
        len = bs.pnum;
        if (bs.flags & BV_BS_ALLOCATED) {
            *top = depth == 0;
            *zero = (bs.flags & BV_BS_ZERO) != 0;
            *pnum = len;
            return 0;
        }
        bv_node *b = bv_node_backing(n);
        if (!b || off >= bv_node_size(b))
            break;
        if (len > bv_node_size(b) - off)
            len = bv_node_size(b) - off;
        n = b;
    }
    *zero = true;
    *pnum = len;
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    static const uint8_t z[4096];
    while (n >= sizeof(z)) {
        if (memcmp(p, z, sizeof(z)))
            return false;
        p += sizeof(z);
        n -= sizeof(z);
    }
    return memcmp(p, z, n) == 0;
}

/* Write zeroes for [off, off+len) unless the target already reads so. */
static int put_zeroes(struct backup *bk, uint64_t off, uint64_t len, bv_error **errp)
{
    if (bk->target_empty)
        return 0;
    int r = bv_node_write_zeroes(bk->target, len, off, BV_ZERO_MAY_UNMAP, errp);
    if (r == 0 && bk->copied)
        bk->copied(bk->copied_opaque, off, len, NULL);
    return r;
}

static int put_data(struct backup *bk, const uint8_t *buf, uint64_t off, uint64_t len,
                    int flags, bv_error **errp)
{
    int r = bv_node_pwrite(bk->target, buf, len, off, flags, errp);
    if (r == 0 && bk->copied)
        bk->copied(bk->copied_opaque, off, len, buf);
    return r;
}

/* Copy data of [off, off+len) through buf (len bytes). */
static int copy_data(struct backup *bk, uint8_t *buf, uint64_t off, uint64_t len,
                     bool *op_write, bv_error **errp)
{
    *op_write = false;
    int r = bv_node_pread(bk->src, buf, len, off, errp);
    if (r < 0)
        return r;
    *op_write = true;
    if (all_zero(buf, len))
        return put_zeroes(bk, off, len, errp);
    if (!bk->compress)
        return put_data(bk, buf, off, len, 0, errp);
    for (uint64_t done = 0; done < len && r == 0; done += bk->cluster) {
        uint64_t n = len - done < bk->cluster ? len - done : bk->cluster;
        r = put_data(bk, buf + done, off + done, n, BV_WRITE_COMPRESSED, errp);
    }
    return r;
}

/* Copy [off, off+len) (job-cluster aligned, clipped to the disk). */
static int copy_range(struct backup *bk, uint8_t *buf, uint64_t off, uint64_t len,
                      bool *op_write, bool *did_read, bv_error **errp)
{
    uint64_t end = off + len;
    int r = 0;
    *op_write = false;
    if (did_read)
        *did_read = false;
    while (off < end && r == 0) {
        uint64_t pnum;
        bool zero, top;
        r = chain_status(bk->src, off, end - off, &pnum, &zero, &top, errp);
        if (r < 0)
            break;
        if (bk->skip_unallocated && !top)
            ;                                    /* the target's backing shows through */
        else if (zero) {
            r = put_zeroes(bk, off, pnum, errp);
            *op_write = r < 0;
        } else {
            r = copy_data(bk, buf, off, pnum, op_write, errp);
            if (did_read)
                *did_read = true;
        }
        off += pnum;
    }
    return r;
}

/* ---- claiming ------------------------------------------------------------ */

static bool overlaps_locked(struct backup *bk, uint64_t off, uint64_t end)
{
    for (struct inflight *f = bk->inflight; f; f = f->next)
        if (f->off < end && off < f->off + f->len)
            return true;
    return false;
}

/* Claim the first dirty run in [from, end), at most max bytes.  false if
 * none.  Called with bk->lock held. */
static bool claim_locked(struct backup *bk, uint64_t from, uint64_t end, uint64_t max,
                         struct inflight *f)
{
    uint64_t off, len;
    if (!bv_bitmap_next_dirty(bk->set, bk->copy, from, end, &off, &len))
        return false;
    if (len > max)
        len = max;
    /* next_dirty clips to the disk; the bitmap covers whole clusters */
    uint64_t cend = off + len;
    bv_bitmap_reset_range(bk->set, bk->copy, off, cend - off);
    f->off = off;
    f->len = cend - off;
    f->next = bk->inflight;
    bk->inflight = f;
    return true;
}

static void unclaim_locked(struct backup *bk, struct inflight *f, bool failed)
{
    for (struct inflight **pp = &bk->inflight; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    if (failed)
        bv_bitmap_mark_range(bk->set, bk->copy, f->off, f->len);
    pthread_cond_broadcast(&bk->cond);
}

/* ---- copy-before-write ------------------------------------------------- */

static int cbw_before_write(void *opaque, uint64_t off, uint64_t len, bv_error **errp)
{
    struct backup *bk = opaque;
    if (len == 0)
        return 0;
    uint64_t c = bk->cluster;
    uint64_t from = off / c * c;
    uint64_t end = off + len > bk->size ? bk->size : off + len;
    end = (end + c - 1) / c * c;
    uint8_t *buf = NULL;
    int r = 0;
    while (from < end && r == 0) {
        struct inflight f;
        pthread_mutex_lock(&bk->lock);
        while (bk->active && overlaps_locked(bk, from, end))
            pthread_cond_wait(&bk->cond, &bk->lock);
        bool got = bk->active && claim_locked(bk, from, end, bk->chunk, &f);
        pthread_mutex_unlock(&bk->lock);
        if (!got)
            break;
        uint64_t n = f.off + f.len > bk->size ? bk->size - f.off : f.len;
        if (!buf && !(buf = malloc(bk->chunk))) {
            r = bv_error_setf(errp, ENOMEM, "out of memory");
        } else {
            bool op_write;
            r = copy_range(bk, buf, f.off, n, &op_write, NULL, errp);
        }
        if (r == 0)
            bv_job_progress_add(bk->job, f.len);
        pthread_mutex_lock(&bk->lock);
        unclaim_locked(bk, &f, r < 0);
        pthread_mutex_unlock(&bk->lock);
        from = f.off + f.len;
    }
    free(buf);
    return r;
}

/* ---- the background loop ------------------------------------------------ */

/* Speed limit: charge bytes to the current 100 ms slice; sleep past it once
 * the slice's quota (speed / 10) is spent.  Background copies only. */
static void ratelimit(struct backup *bk, uint64_t bytes)
{
    uint64_t speed = bv_job_speed(bk->job);
    if (!speed)
        return;
    uint64_t slice = 100000000u, quota = speed / 10 ? speed / 10 : 1;
    pthread_mutex_lock(&bk->lock);
    uint64_t now = mono_ns();
    if (now - bk->slice_start_ns >= slice) {
        bk->slice_start_ns = now;
        bk->slice_bytes = 0;
    }
    bk->slice_bytes += bytes;
    uint64_t wait = 0;
    if (bk->slice_bytes >= quota) {
        /* whole slices this charge covers, as QEMU's ratelimit */
        uint64_t slices = bk->slice_bytes / quota;
        wait = bk->slice_start_ns + slices * slice - now;
        bk->slice_start_ns += slices * slice;
        bk->slice_bytes -= slices * quota;
    }
    pthread_mutex_unlock(&bk->lock);
    if (wait)
        bv_job_sleep_ns(bk->job, wait);
}

/* Every FLUSH_STEP bytes one copy thread syncs the target while the others
 * go on copying, so the disk writes back during the copy and the final
 * flush (which makes the backup durable) has little left to do. */
#define FLUSH_STEP (64ull << 20)

static void early_flush(struct backup *bk, uint64_t bytes)
{
    uint64_t n = atomic_fetch_add(&bk->unflushed, bytes) + bytes;
    if (n < FLUSH_STEP || !atomic_compare_exchange_strong(&bk->unflushed, &n, 0))
        return;
    bv_node_flush(bk->target, NULL);          /* an error shows again at the final flush */
}

static bool should_stop(struct backup *bk)
{
    return bv_job_is_cancelled(bk->job) || bv_job_should_pause(bk->job);
}

/* Copy chunks until none is left; with until_read, return after the first
 * chunk that read the source. */
static void copy_chunks(struct backup *bk, bool until_read)
{
    uint8_t *buf = malloc(bk->chunk);
    bv_error *err = NULL;
    for (;;) {
        struct inflight f;
        /* under a speed limit, one cluster per request keeps the pace even */
        uint64_t max = bv_job_speed(bk->job) ? bk->cluster : bk->chunk;
        pthread_mutex_lock(&bk->lock);
        /* after an error, only chunks QEMU would already have in flight still go */
        bool got = !bk->stop && buf && (!bk->err || bk->launched < BACKUP_WINDOW) &&
                   claim_locked(bk, bk->cursor, bk->size, max, &f);
        if (got) {
            bk->cursor = f.off + f.len;
            bk->launched++;
        }
        pthread_mutex_unlock(&bk->lock);
        if (!got)
            break;
        uint64_t n = f.off + f.len > bk->size ? bk->size - f.off : f.len;
        bool op_write = false, did_read = false;
        int r = copy_range(bk, buf, f.off, n, &op_write, &did_read, &err);
        bv_error_free(err);
        err = NULL;
        if (r == 0)
            bv_job_progress_add(bk->job, f.len);
        pthread_mutex_lock(&bk->lock);
        unclaim_locked(bk, &f, r < 0);
        if (r < 0 && !bk->err) {
            bk->err = -r;
            bk->err_write = op_write;
        }
        pthread_mutex_unlock(&bk->lock);
        if (r == 0) {
            ratelimit(bk, f.len);
            early_flush(bk, f.len);
        }
        if (should_stop(bk)) {
            pthread_mutex_lock(&bk->lock);
            bk->stop = true;
            pthread_mutex_unlock(&bk->lock);
        }
        if (until_read && did_read)
            break;
    }
    free(buf);
}

static void *copy_thread(void *arg)
{
    copy_chunks(arg, false);
    return NULL;
}

/* One pass over the copy bitmap with bk->threads copiers (this thread is
 * one of them).  The pass starts alone until its first source read is done:
 * as in QEMU, whose tasks issue their reads in order, the first data read
 * of a pass is that of the first chunk with data (blkdebug's "fail the
 * first read" then hits the same cluster QEMU's does).  Returns the first
 * error (positive errno) or 0. */
static int copy_pass(struct backup *bk, bool *err_write)
{
    bk->cursor = 0;
    bk->launched = 0;
    bk->err = 0;
    bk->stop = false;
    unsigned extra = bv_job_speed(bk->job) ? 0 : bk->threads - 1;
    pthread_t tids[64];
    unsigned started = 0;
    copy_chunks(bk, true);
    for (unsigned i = 0; i < extra && i < 64; i++)
        if (pthread_create(&tids[i], NULL, copy_thread, bk) == 0)
            started++;
    copy_chunks(bk, false);
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    *err_write = bk->err_write;
    return bk->err;
}

static int backup_run(struct bv_job *job, bv_error **errp)
{
    struct backup *bk = bv_job_opaque(job);
    if (bk->sync == BV_BACKUP_SYNC_NONE) {
        /* fleecing: only CBW copies, until cancelled */
        while (!should_stop(bk))
            bv_job_sleep_ns(job, 1000000000u);
        return bv_job_is_cancelled(job) ? -ECANCELED : BV_JOB_YIELD;
    }
    for (;;) {
        bool op_write = false;
        int err = copy_pass(bk, &op_write);
        if (bv_job_is_cancelled(job))
            return -ECANCELED;
        if (err) {
            enum bv_job_error_action a = bv_job_report_error(
                job, op_write ? bk->on_target_error : bk->on_source_error, op_write, err);
            if (a == BV_JOB_ACTION_REPORT)
                return -err;
            if (a == BV_JOB_ACTION_STOP)
                return BV_JOB_YIELD;
            continue;                         /* ignore: the range is retried */
        }
        if (bv_job_should_pause(job))
            return BV_JOB_YIELD;
        /* CBW may still hold claims: the pass is over only when nothing is
         * dirty and nothing in flight */
        pthread_mutex_lock(&bk->lock);
        while (bk->inflight)
            pthread_cond_wait(&bk->cond, &bk->lock);
        uint64_t o, l;
        bool more = bv_bitmap_next_dirty(bk->set, bk->copy, 0, bk->size, &o, &l);
        pthread_mutex_unlock(&bk->lock);
        if (!more)
            break;
    }
    int r = bv_node_flush(bk->target, errp);
    if (r < 0) {
        enum bv_job_error_action a = bv_job_report_error(job, bk->on_target_error, true, -r);
        if (a == BV_JOB_ACTION_STOP)
            return BV_JOB_YIELD;
        return r;
    }
    if (bk->check)
        r = bk->check(bk->check_opaque, errp);
    return r;
}

/* ---- finalization ---------------------------------------------------------- */

static void backup_commit(struct bv_job *job)
{
    struct backup *bk = bv_job_opaque(job);
    if (bk->frozen)
        bv_bitmap_job_finish(bk->set, bk->sync_bm, bk->bitmap_mode, true, NULL, NULL);
    bk->frozen = false;
}

static void backup_abort(struct bv_job *job)
{
    struct backup *bk = bv_job_opaque(job);
    if (bk->frozen)
        bv_bitmap_job_finish(bk->set, bk->sync_bm, bk->bitmap_mode, false, bk->copy, NULL);
    bk->frozen = false;
}

/* The drive is free for another job from here; CBW becomes a no-op and the
 * target is closed.  The notifier itself goes in free (removing it
 * quiesces the drive, which must not happen under the engine's lock). */
static void backup_clean(struct bv_job *job)
{
    struct backup *bk = bv_job_opaque(job);
    pthread_mutex_lock(&bk->lock);
    bk->active = false;
    pthread_cond_broadcast(&bk->cond);
    while (bk->inflight)                  /* CBW copies that began before */
        pthread_cond_wait(&bk->cond, &bk->lock);
    pthread_mutex_unlock(&bk->lock);
    /* the target is done with: closed now, so its file is free for the
     * caller as soon as the job's end is recorded */
    bv_node_close(bk->target, NULL);
    bk->target = NULL;
    if (bk->claimed) {
        bv_drive_release(bk->drive);
        bk->claimed = false;
    }
}

static void backup_kick(struct bv_job *job)
{
    struct backup *bk = bv_job_opaque(job);
    pthread_mutex_lock(&bk->lock);
    bk->stop = true;
    pthread_mutex_unlock(&bk->lock);
}

static void backup_destroy(struct backup *bk)
{
    if (bk->notifier_added)
        bv_drive_remove_notifier(bk->drive, &bk->notifier);
    if (bk->frozen)                           /* never started: the bitmap as it was */
        bv_bitmap_reclaim(bk->set, bk->sync_bm, NULL);
    if (bk->copy)
        bv_bitmap_release(bk->set, bk->copy);
    if (bk->claimed)
        bv_drive_release(bk->drive);
    bv_node_close(bk->target, NULL);
    pthread_cond_destroy(&bk->cond);
    pthread_mutex_destroy(&bk->lock);
    if (bk->release)
        bk->release(bk->release_opaque);
    free(bk);
}

static void backup_free(struct bv_job *job)
{
    struct backup *bk = bv_job_opaque(job);
    if (bk)
        backup_destroy(bk);
}

/* A restore is the same copy reported as type "restore". */
#define BACKUP_OPS .run = backup_run, .commit = backup_commit, .abort = backup_abort, \
                   .clean = backup_clean, .kick = backup_kick, .free = backup_free

static const struct bv_job_driver backup_driver = { .type = "backup", BACKUP_OPS };
static const struct bv_job_driver restore_driver = { .type = "restore", BACKUP_OPS };

/* ---- creation ------------------------------------------------------------- */

/* sync=top: only what the top layer allocates is copied. */
static int drop_unallocated_in_top(struct backup *bk, bv_error **errp)
{
    for (uint64_t off = 0; off < bk->size;) {
        struct bv_block_status bs;
        int r = bv_node_block_status(bk->src, off, bk->size - off, &bs, errp);
        if (r < 0)
            return r;
        if (!(bs.flags & BV_BS_ALLOCATED)) {
            /* only whole job clusters inside the run can be dropped */
            uint64_t c = bk->cluster, a = (off + c - 1) / c * c, e = (off + bs.pnum) / c * c;
            if (off + bs.pnum == bk->size)
                e = (bk->size + c - 1) / c * c;
            if (e > a)
                bv_bitmap_reset_range(bk->set, bk->copy, a, e - a);
        }
        off += bs.pnum;
    }
    return 0;
}

static int backup_setup(struct backup *bk, const struct bv_backup_opts *o, bv_error **errp)
{
    int r = bv_drive_claim(o->drive, "backup", errp);
    if (r < 0)
        return r;
    bk->claimed = true;
    if (bk->sync_bm) {
        r = bv_bitmap_freeze(bk->set, bk->sync_bm, errp);
        if (r < 0)
            return r;
        bk->frozen = true;
    }
    bool by_bitmap = o->sync == BV_BACKUP_SYNC_INCREMENTAL || o->sync == BV_BACKUP_SYNC_BITMAP;
    r = bv_bitmap_create_copy_bitmap(bk->set, by_bitmap ? bk->sync_bm : NULL, bk->cluster,
                                     &bk->copy, errp);
    if (r == 0 && o->sync == BV_BACKUP_SYNC_TOP)
        r = drop_unallocated_in_top(bk, errp);
    return r;                                 /* on failure backup_free undoes it */
}

int bv_backup_create(struct bv_job_ctx *ctx, const struct bv_job_opts *jo,
                     const struct bv_backup_opts *o, struct bv_job **out, bv_error **errp)
{
    struct backup *bk = calloc(1, sizeof(*bk));
    if (!bk) {
        bv_node_close(o->target, NULL);
        if (o->release)
            o->release(o->release_opaque);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    bk->drive = o->drive;
    bk->src = bv_drive_node(o->drive);
    bk->target = o->target;
    bk->set = bv_drive_bitmaps(o->drive);
    bk->sync_bm = o->bitmap;
    bk->bitmap_mode = o->bitmap_mode;
    bk->sync = o->sync;
    bk->on_source_error = o->on_source_error;
    bk->on_target_error = o->on_target_error;
    bk->target_empty = o->target_empty;
    bk->compress = o->compress;
    bk->skip_unallocated = o->sync == BV_BACKUP_SYNC_TOP;
    bk->cluster = o->job_cluster ? o->job_cluster : bv_backup_job_cluster(o->target);
    bk->threads = o->copy_threads ? o->copy_threads : BV_BACKUP_DEFAULT_THREADS;
    if (bk->threads > 64)
        bk->threads = 64;
    uint32_t chunk = o->chunk ? o->chunk : BV_BACKUP_DEFAULT_CHUNK;
    if (o->compress || chunk < bk->cluster)
        chunk = bk->cluster;                  /* compress: one cluster per request */
    bk->chunk = chunk / bk->cluster * bk->cluster;
    bk->size = bv_drive_size(o->drive);
    bk->release = o->release;
    bk->release_opaque = o->release_opaque;
    bk->check = o->check;
    bk->check_opaque = o->check_opaque;
    bk->copied = o->copied;
    bk->copied_opaque = o->copied_opaque;
    bk->active = true;
    bk->slice_start_ns = mono_ns();
    pthread_mutex_init(&bk->lock, NULL);
    pthread_cond_init(&bk->cond, NULL);

    /* claim, freeze and the copy set first: a refused job emits nothing */
    int r = backup_setup(bk, o, errp);
    if (r < 0) {
        backup_destroy(bk);
        return r;
    }
    struct bv_bitmap_info ci;
    bv_bitmap_query(bk->set, bk->copy, &ci);
    uint64_t len = ci.count;
    struct bv_job *job = NULL;
    bool restore = o->job_type && strcmp(o->job_type, "restore") == 0;
    r = bv_job_create(ctx, restore ? &restore_driver : &backup_driver, bk, jo, &job, errp);
    if (r < 0)
        return r;                             /* backup_free ran */
    bk->job = job;
    bv_job_set_len(job, len);
    bk->notifier.before_write = cbw_before_write;
    bk->notifier.opaque = bk;
    bv_drive_add_notifier_quiesced(o->drive, &bk->notifier);
    bk->notifier_added = true;
    *out = job;
    return 0;
}
