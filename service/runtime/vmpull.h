/*
 * A pull backup of a VM drive into a qcow2 image written by our engine:
 * ../shared/reference/vm-pull.md, step by step.
 *
 *   scratch qcow2 (our engine, the disk's size, in <data>/<scratch_dir>)
 *   → blockdev-add of a qcow2 overlay on it, backed by the disk's node
 *   → one `transaction`: block-dirty-bitmap-add NEW (+ -disable OLD for an
 *     incremental) + blockdev-backup sync=none disk → overlay: the point in
 *     time, fixed together with the bitmap change
 *   → nbd-server-start on a Unix socket, block-export-add of the overlay
 *     (read-only, OLD exported for an incremental)
 *   → libnbd: the copy set from base:allocation (full: everything not
 *     reading as zeros) or qemu:dirty-bitmap:OLD (incremental: the dirty
 *     extents, zeros written as zeros so they mask the backing file), read
 *     with up to `inflight` requests in flight and written into the target
 *   → teardown in the reference's order: block-export-del + event,
 *     nbd-server-stop, block-job-cancel + event, blockdev-del, scratch gone.
 *   → bitmaps: success removes OLD; a failed incremental merges OLD into NEW
 *     and removes OLD (one transaction), a failed full removes NEW, so the
 *     next incremental starts at the last good backup.
 *
 * Temporary objects are "blockvault-tmp-<tag>-<n>" (runtime/vmdrives.h).
 * Runs with vm->op_lock held: one pull or read per VM at a time.
 */
#ifndef BV_RUNTIME_VMPULL_H
#define BV_RUNTIME_VMPULL_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/error.h"

struct bv_vm_drive;

struct bv_vm_pull_opts {
    const char *target;          /* created, relative to the storage directory (qcow2) */
    const char *backing;         /* incremental: the parent link's name as recorded in the
                                    target (relative to its directory); NULL for a full */
    const char *new_bitmap;      /* made at the point in time (persistent when the disk
                                    can store it) */
    const char *old_bitmap;      /* incremental: the bitmap of the last good backup */
    unsigned inflight;           /* reads in flight; 0 = 16 */
    /* Hooks (may be NULL).  progress and copied: one at a time, on the
     * pull's writer thread; progress after each range is written (done,
     * total bytes of the copy set).  cancelled: on the calling thread; a
     * true return stops the pull (-ECANCELED). */
    void (*progress)(void *opaque, uint64_t done, uint64_t total);
    bool (*cancelled)(void *opaque);
    void (*copied)(void *opaque, uint64_t off, uint64_t len, const void *data);
    void *opaque;
};

struct bv_vm_pull_result {
    uint64_t size;               /* the disk's virtual size */
    uint64_t total;              /* bytes in the copy set */
    uint64_t copied;             /* bytes read over NBD and written */
};

/* Pull.  On failure the target is removed and the bitmaps are left as the
 * rules above say; the error names the step (and says when QEMU went away). */
int bv_vm_pull(struct bv_vm_drive *d, const struct bv_vm_pull_opts *o,
               struct bv_vm_pull_result *res, bv_error **errp);

#endif
