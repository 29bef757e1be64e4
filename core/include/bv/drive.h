/*
 * Drives: an open node stack (format over file, optional filters, or a
 * blkverify node) that the service serves, with the drive's dirty bitmaps
 * and the hooks jobs need.
 *
 * The write path: every write, write-zeroes or discard
 *   1. waits while the drive is quiesced (a job taking its point in time),
 *   2. runs the before-write notifiers (a backup's copy-before-write: the old
 *      data is copied out before it is overwritten; a notifier failure fails
 *      the write),
 *   3. writes the node,
 *   4. marks every recording bitmap (even if the write failed: the data may
 *      have changed on disk, so it must count as dirty).
 *
 * Threads and locks (order: drive->quiesce_lock, then drive->lock, then the
 * bitmap set's lock, then node locks):
 *   quiesce_lock (rwlock): every I/O request holds it for reading;
 *       bv_drive_quiesce() takes it for writing, so while a caller holds the
 *       drive quiesced no request is in flight or can start.  Resize and
 *       notifier registration happen quiesced.
 *   lock (mutex): guards owner, the notifier list and closed.
 * Notifiers are called with quiesce_lock held for reading and no other drive
 * lock, so they may read the node but must not quiesce the drive.
 */
#ifndef BV_DRIVE_H
#define BV_DRIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/dirty-bitmap.h"
#include "bv/error.h"
#include "bv/image.h"

typedef struct bv_drive bv_drive;

/* Create a drive over node (ownership passes to the drive, also on
 * failure).  id is copied. */
int bv_drive_new(const char *id, bv_node *node, bv_drive **out, bv_error **errp);
/* Close: flushes, frees the node and the bitmaps.  Returns the flush result. */
int bv_drive_free(bv_drive *d, bv_error **errp);

const char *bv_drive_id(const bv_drive *d);
bv_node *bv_drive_node(bv_drive *d);                 /* borrowed */
struct bv_bitmap_set *bv_drive_bitmaps(bv_drive *d); /* borrowed */
uint64_t bv_drive_size(bv_drive *d);

/* Data path (see above).  Ranges must lie inside the drive. */
int bv_drive_pread(bv_drive *d, void *buf, uint64_t len, uint64_t off, bv_error **errp);
int bv_drive_pwrite(bv_drive *d, const void *buf, uint64_t len, uint64_t off, int flags,
                    bv_error **errp);
int bv_drive_write_zeroes(bv_drive *d, uint64_t len, uint64_t off, int flags, bv_error **errp);
int bv_drive_discard(bv_drive *d, uint64_t len, uint64_t off, bv_error **errp);
int bv_drive_flush(bv_drive *d, bv_error **errp);

/* Grow (or, with allow_shrink, shrink) the drive and every bitmap.
 * Refused with -EBUSY "Device '<id>' is in use" while owned by a job. */
int bv_drive_resize(bv_drive *d, uint64_t size, bool allow_shrink, bv_error **errp);

/* Ownership by a job: one owner at a time.  -EBUSY with QEMU's text
 * "Node '<id>' is busy: block device is in use by block job: <type>". */
int bv_drive_claim(bv_drive *d, const char *job_type, bv_error **errp);
void bv_drive_release(bv_drive *d);
/* Owned by a job? */
bool bv_drive_busy(bv_drive *d);

/* Before-write notifiers. */
struct bv_drive_notifier {
    /* Called before [off, off+len) is overwritten; non-zero fails the write. */
    int (*before_write)(void *opaque, uint64_t off, uint64_t len, bv_error **errp);
    void *opaque;
    struct bv_drive_notifier *next;      /* drive-private */
};
/* Must be called with the drive quiesced by the caller. */
void bv_drive_add_notifier_quiesced(bv_drive *d, struct bv_drive_notifier *n);
void bv_drive_remove_notifier(bv_drive *d, struct bv_drive_notifier *n);

/* Wait for in-flight requests and hold new ones until unquiesce. */
void bv_drive_quiesce(bv_drive *d);
void bv_drive_unquiesce(bv_drive *d);

#endif
