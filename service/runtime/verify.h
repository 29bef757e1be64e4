/*
 * Verify jobs (contract: "Verification"): compare two sides, or re-read
 * stored backups against the CRCs recorded when they were written; file a
 * report either way; on corruption emit CORRUPTION_DETECTED, mark the
 * damaged link corrupt with its damaged extents, and heal.  Typed, no JSON:
 * api/jobs.c parses, model/reports.c words the stored text.
 *
 * What a checksum verify checks, for each link of the backup's chain up to
 * it (a drive: every link of every chain of it):
 *   - presence: the link file exists beneath the storage directory;
 *   - structure: the qcow2 metadata check (bv_image_check: corruptions or
 *     check errors; leaks are not damage), the backing name is the parent
 *     link's file name (none for the full), the virtual size is recorded;
 *   - data: the 64 KiB blocks the link wrote (its own CRC map) read through
 *     the link's point in time, CRC32 against the stored one.  For a backup
 *     point, only the blocks the point still reads from that link (a newer
 *     link of the point that wrote a block again takes it over): each block
 *     of the point is checked once, in the link it comes from, so a point
 *     healed by a newer link verifies clean while its damaged ancestor
 *     stays corrupt.  For a drive, and for the link alone ("verify": true
 *     on a backup), every block each link wrote.
 * The cost follows the data the links wrote, not the drive size.  A link
 * that cannot be opened or read counts as structure damage (the job
 * succeeds and files a corrupt report; only cancel or an internal error
 * fails it).
 *
 * Healing (what is implemented, precisely), for each link L with bad
 * blocks, under app->backups_lock:
 *   1. in place: if L is the newest complete link of its drive's open
 *      chain, no backup of the drive is running, the chain's bitmap exists
 *      and is not busy, then for each bad block whose range the bitmap does
 *      not mark dirty, the drive's data there (read with the drive
 *      quiesced, bitmap re-checked in that window) is what L recorded if its
 *      CRC32 equals L's stored CRC: it is written into L's file (qcow2,
 *      opened read-write; not for compressed links), flushed, read back
 *      through L's point and checked; the block's damaged extent is removed.
 *      When L has no damage left and its structure checked clean, its
 *      status goes back to complete.
 *   2. re-copy: every bad block of L (healed in place or not) is marked
 *      dirty in the chain's bitmap (the open chain only), so the next
 *      incremental copies it again; a newer link that wrote a block makes
 *      every point from it on read that block from the newer link, so those
 *      points are not damaged (runtime/backups.c, point_damaged).  An
 *      incremental also re-marks the chain's damage still uncovered before
 *      it starts (a bitmap frozen by a running backup when the verify
 *      marked it would lose the marks at abdicate).
 * A closed chain (a newer full exists) is not healed: its damaged points
 * stay damaged.  A compare verify reports and emits the event but marks no
 * backup: a difference between two sides does not say which side is wrong.
 */
#ifndef BV_RUNTIME_VERIFY_H
#define BV_RUNTIME_VERIFY_H

#include <stdbool.h>
#include <stdio.h>

#include "bv/error.h"
#include "bv/job.h"

struct bv_app;
struct bv_drive_entry;

enum bv_verify_side_kind { BV_VSIDE_DRIVE, BV_VSIDE_BACKUP, BV_VSIDE_FILE };

struct bv_verify_side {
    enum bv_verify_side_kind kind;
    const char *name;                /* drive id, backup id or storage-relative file */
    const char *format;              /* file only: "raw" | "qcow2" | NULL (probe) */
};

struct bv_verify_request {
    bool checksum;                   /* else compare */
    struct bv_verify_side test, reference;   /* compare */
    const char *backup;              /* checksum: a backup point (its chain up to it) */
    const char *drive;               /* checksum: every complete backup of the drive */
    bool link_only;                  /* checksum of a backup: only its own link (after a
                                        chain backup with "verify": true) */
};

/* Validate (ENOENT/EINVAL: a bad reference or value, 400; EBUSY: a backup
 * that has no data yet, 409) and start the job ("verify-N"). */
int bv_verify_start(struct bv_app *app, const struct bv_verify_request *rq,
                    struct bv_job_info *info, bv_error **errp);

/* A chain backup with "verify": true completed: start a checksum verify of
 * its link on a worker (safe to call with the engine lock and a catalog
 * transaction held: it only queues). */
void bv_verify_after_backup(struct bv_app *app, const char *backup_id);

/* Mark the chain's damaged extents that its newest link still reads from a
 * damaged link dirty in the chain's bitmap.  Caller holds app->backups_lock
 * and no backup of the drive runs. */
void bv_verify_remark_locked(struct bv_app *app, struct bv_drive_entry *e, const char *newest,
                             const char *bitmap);

/* Prometheus text: bytes verified, verify durations. */
void bv_verify_metrics(struct bv_app *app, FILE *f);

#endif
