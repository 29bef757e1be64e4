/*
 * Restore jobs (contract: "Backup chains", POST /backups/{bid}/restore):
 * a backup point copied, flattened, into a new image file or a new drive,
 * and proved against the digest recorded when the backup was taken.
 *
 * The copy is the backup job's engine (core/job/backup.c) run as type
 * "restore": the point (the link read-only with its chain) is wrapped in a
 * private bv_drive that is never registered, so nothing but the job sees
 * it and nothing writes to it (its point in time needs no quiesce); the
 * target is created fresh (it must not exist) and copied into with
 * sync=full, zero ranges left unwritten.  Each range written feeds a CRC map
 * of the whole image (bv/crcmap.h); once the copy is flushed, the digest of
 * that map must equal the backup's recorded checksum, else the job fails
 * with a checksum error and its output is removed.  A restore to a drive
 * then opens the image as a new drive, before the job completes, so a
 * client that saw BLOCK_JOB_COMPLETED without an error finds the drive.
 *
 * Refusals, before anything is created: unknown backup ENODEV (404); a
 * backup running or failed, a damaged point without force, a target that
 * exists or a drive id taken EBUSY/EEXIST (409); a bad drive id, format or
 * target name EINVAL/EACCES (400); too little free space for the point's
 * allocated bytes ENOSPC (507, runtime/capacity.h).  force only lifts the damaged refusal:
 * the digest is always checked.
 *
 * Locking: app->backups_lock is held while the point is looked up and
 * opened, so no chain change runs between the two.
 */
#ifndef BV_RUNTIME_RESTORE_H
#define BV_RUNTIME_RESTORE_H

#include <stdbool.h>

#include "bv/error.h"
#include "bv/job.h"

struct bv_app;

struct bv_restore_request {
    const char *backup;              /* the point's id */
    const char *drive;               /* a new drive id, or NULL */
    const char *file;                /* a new image file (storage-relative), or NULL */
    const char *format;              /* "qcow2" (default) | "raw" */
    bool compress;                   /* qcow2 only */
    bool force;                      /* restore a damaged point */
};

/* Validate, create the target and start the restore job.  Exactly one of
 * drive and file.  *info gets the job as created (id "restore-N"). */
int bv_restore_start(struct bv_app *app, const struct bv_restore_request *rq,
                     struct bv_job_info *info, bv_error **errp);

#endif
