/*
 * The backup job (qemu-semantics.md §4): copies a drive into a target node
 * as the drive was at the job's start, while guest writes go on.
 *
 * Point in time: bv_backup_create() runs with the drive quiesced by the
 * caller.  It freezes the sync bitmap (its successor records the writes
 * from now on), builds the copy bitmap (job-cluster granularity: the
 * clusters still to copy) and installs a copy-before-write notifier on the
 * drive.  From then on every cluster is copied exactly once, either by the
 * background loop or by a guest write's CBW, whichever claims it first; a
 * guest write waits only for the copies of its own clusters.
 *
 * Copying: several requests in flight (copy threads of the run function),
 * chunks of whole job clusters; the source's block status is asked first so
 * that zero and unallocated ranges cost no read: they become write-zeroes
 * on the target (zero clusters), or nothing at all on a freshly created
 * target without backing, where they already read as zero.  Data that reads
 * as all zeroes is written as zeroes too (QEMU's detect-zeroes=unmap).
 *
 * Errors follow on_source_error / on_target_error (§4.8); the failing
 * chunk's clusters are put back in the copy bitmap, so a retry (ignore,
 * resume after stop) copies them again.  The job's bitmap follows the
 * bitmap-mode table (§4.5) at finalization.
 *
 * Locking: the job's state lock (private, a leaf below the drive's quiesce
 * lock) guards the in-flight list, the active flag and the rate limiter.
 * The CBW notifier runs with the drive's quiesce lock held for reading and
 * takes only that lock and the bitmap set's.
 */
#ifndef BV_BACKUP_H
#define BV_BACKUP_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/dirty-bitmap.h"
#include "bv/drive.h"
#include "bv/image.h"
#include "bv/job.h"

enum bv_backup_sync {
    BV_BACKUP_SYNC_FULL = 0,
    BV_BACKUP_SYNC_INCREMENTAL,      /* = bitmap with on-success */
    BV_BACKUP_SYNC_TOP,
    BV_BACKUP_SYNC_NONE,
    BV_BACKUP_SYNC_BITMAP,
    BV_BACKUP_SYNC__MAX,
};
/* "full", "incremental", "top", "none", "bitmap", NULL */
extern const char *const bv_backup_sync_names[];

struct bv_backup_opts {
    bv_drive *drive;                 /* claimed by the job until it ends */
    bv_node *target;                 /* owned by the job from create on (also on failure) */
    bool target_empty;               /* created by the caller, no backing: zeroes need no write */
    enum bv_backup_sync sync;
    struct bv_dirty_bitmap *bitmap;  /* NULL: none */
    enum bv_bitmap_sync_mode bitmap_mode;
    bool compress;
    enum bv_job_error_policy on_source_error, on_target_error;
    uint32_t job_cluster;            /* bv_backup_job_cluster() */
    unsigned copy_threads;           /* requests in flight; 0 = BV_BACKUP_DEFAULT_THREADS */
    uint32_t chunk;                  /* bytes per request; 0 = BV_BACKUP_DEFAULT_CHUNK */
    /* After each range reached the target: data (NULL: zeroes written).
     * Ranges are job-cluster aligned except at the disk's end; zero ranges
     * left unwritten on an empty target are not reported.  Called from
     * several copy threads at once.  May be NULL. */
    void (*copied)(void *opaque, uint64_t off, uint64_t len, const void *data);
    void *copied_opaque;
    /* Called once everything is copied and the target flushed, before the
     * job may succeed (a restore checks the digest of what it wrote):
     * -errno fails the job with that error, as a failed copy would (no
     * BLOCK_JOB_ERROR: not an I/O error).  May be NULL. */
    int (*check)(void *opaque, bv_error **errp);
    void *check_opaque;
    /* The job type reported (events, queries): "backup" by default;
     * "restore" for a restore, which is a full copy of a read-only drive. */
    const char *job_type;
    /* Called when the job's state is freed (after the job ended): the
     * caller drops what keeps the drive alive.  May be NULL. */
    void (*release)(void *opaque);
    void *release_opaque;
};

/* Measured on the 2-core machine (bench/bench_backup.py, bench/README.md): threads
 * 1..8 made no difference beyond noise; 4-8 MiB chunks cost twice the CPU of
 * 256 KiB-1 MiB and ran ~1.7x slower (the page cache), so 1 MiB. */
#define BV_BACKUP_DEFAULT_THREADS 4
#define BV_BACKUP_DEFAULT_CHUNK   (1u << 20)

/* max(64 KiB, the target's cluster size) (§4.3); 64 KiB for a target that
 * reports none. */
uint32_t bv_backup_job_cluster(bv_node *target);

/* Create the job (status created).  The drive must be quiesced by the
 * caller (the point in time is taken here) and not claimed; the bitmap
 * must be usable (bv_bitmap_check_usable).  On failure nothing changed
 * (the target is closed). */
int bv_backup_create(struct bv_job_ctx *ctx, const struct bv_job_opts *jo,
                     const struct bv_backup_opts *o, struct bv_job **out, bv_error **errp);

#endif
