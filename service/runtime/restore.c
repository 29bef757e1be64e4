/*
 * Restore jobs: see restore.h.
 *
 * Starting a restore, in order (nothing is created before step 4):
 *   1. the request's own checks: one of drive/file, the drive id valid and
 *      free, the format known, compress only into qcow2;
 *   2. under app->backups_lock: the backup exists, has data (not running or
 *      failed), is not damaged (unless force) and has a checksum; the
 *      target does not exist;
 *   3. the point is opened read-only and wrapped in a private drive;
 *   4. bv_jobs_backup_prepare creates the target and the job (type
 *      restore, sync=full); the job is started.
 * The job's end:
 *   - check (worker thread, after the target's flush): digest of the map
 *     of everything written against the backup's checksum; for a drive
 *     restore, the drive is created on the image;
 *   - finished (inside the catalog transaction of the final event): a job
 *     that failed or was cancelled loses its image (unless a drive was
 *     created on it: release removes that drive with its file);
 *   - release (the job's state is gone, no lock held): the private drive
 *     and the map are freed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "bv/crcmap.h"
#include "bv/path.h"
#include "bvdb/backups.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/capacity.h"
#include "runtime/drives.h"
#include "runtime/jobs.h"
#include "runtime/linkread.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "runtime/restore.h"

/* What a running restore carries to its end (the job's hook data). */
struct restore_job {
    struct bv_app *app;
    char bid[BV_BACKUP_ID_MAX];
    char checksum[33];
    char target[1024];
    char drive_id[BV_DRIVE_ID_MAX + 1];     /* "" for a file restore */
    enum bv_drive_format drive_format;
    bv_drive *src;                          /* private: never registered */
    struct bv_crcmap *map;                  /* the whole image as written */
    bool drive_created;                     /* by check (worker), read after the run */
    bool ok;                                /* by finished, read by release */
};

/* ---- the job's hooks ---------------------------------------------------------- */

static void restore_copied(void *opaque, uint64_t off, uint64_t len, const void *data)
{
    struct restore_job *rj = opaque;
    bv_crcmap_record(rj->map, off, len, data);
}

static int open_drive(struct restore_job *rj, bv_error **errp)
{
    struct bv_drive_spec ds = {
        .id = rj->drive_id, .format = rj->drive_format, .file = rj->target,
        .filters_text = "{}",
    };
    struct bv_drive_entry *e = NULL;
    int r = bv_drives_create(rj->app, &ds, &e, errp);
    if (r == 0) {
        rj->drive_created = true;
        bv_registry_put(rj->app, e);
    }
    return r;
}

/* The copy is complete and flushed: is it the point that was backed up? */
static int restore_check(void *opaque, bv_error **errp)
{
    struct restore_job *rj = opaque;
    struct bv_digest d;
    char hex[33];
    bv_digest_of_map(&d, rj->map);
    bv_digest_hex(&d, hex);
    if (strcmp(hex, rj->checksum) != 0)
        return bv_error_setf(errp, EBADMSG, "checksum mismatch: the data restored from "
                             "backup '%s' has digest %s, the backup recorded %s", rj->bid,
                             hex, rj->checksum);
    return rj->drive_id[0] ? open_drive(rj, errp) : 0;
}

static void restore_finished(struct bv_app *app, void *opaque, const struct bv_job_info *info)
{
    struct restore_job *rj = opaque;
    rj->ok = !info->cancelled && !info->error[0];
    if (!rj->ok && !rj->drive_created)
        bv_path_unlink(app->root, rj->target, NULL);
}

static void restore_release(void *opaque)
{
    struct restore_job *rj = opaque;
    if (rj->drive_created && !rj->ok) {          /* cancelled after the check */
        bv_error *e = NULL;
        if (bv_drives_remove(rj->app, rj->drive_id, true, &e) < 0)
            log_error("cannot remove drive '%s' of a cancelled restore: %s", rj->drive_id,
                      e ? e->msg : "unknown error");
        bv_error_free(e);
    }
    if (rj->src)
        bv_drive_free(rj->src, NULL);
    bv_crcmap_free(rj->map);
    free(rj);
}

/* ---- validation ----------------------------------------------------------------- */

static int check_request(struct bv_app *app, const struct bv_restore_request *rq,
                         enum bv_format *fmt, bv_error **errp)
{
    if (!rq->drive == !rq->file)
        return bv_error_setf(errp, EINVAL, "a restore needs exactly one of 'drive' (a new "
                             "drive id) and 'file' (a new image)");
    *fmt = rq->format ? bv_format_parse(rq->format) : BV_FMT_QCOW2;
    if (*fmt != BV_FMT_QCOW2 && *fmt != BV_FMT_RAW)
        return bv_error_setf(errp, EINVAL, "Unknown restore format '%s'", rq->format);
    if (rq->compress && *fmt != BV_FMT_QCOW2)
        return bv_error_setf(errp, EINVAL, "Compression needs the qcow2 format");
    if (!rq->drive)
        return 0;
    int r = bv_drive_id_check(rq->drive, errp);
    if (r < 0)
        return r;
    return bv_drives_id_free(app, rq->drive, errp);   /* local, VM or detached */
}

static int check_point(const struct bv_backup_rec *b, bool force, bv_error **errp)
{
    if (strcmp(b->status, "running") == 0 || strcmp(b->status, "failed") == 0)
        return bv_error_setf(errp, EBUSY, "Backup '%s' is %s: it has no data to restore",
                             b->id, b->status);
    if (b->damaged && !force)
        return bv_error_setf(errp, EBUSY, "Backup '%s' depends on damaged data: restoring "
                             "it needs \"force\": true", b->id);
    if (!b->checksum[0])
        return bv_error_setf(errp, EBUSY, "Backup '%s' has no recorded checksum to check a "
                             "restore against", b->id);
    return 0;
}

static int check_target(struct bv_app *app, const char *target, bv_error **errp)
{
    char *name = NULL;
    int r = bv_path_name(app->root, NULL, target, 0, &name, NULL);
    free(name);
    if (r < 0)
        return bv_error_setf(errp, -r == EACCES ? EACCES : EINVAL, "Could not create '%s': %s",
                             target, strerror(-r));
    struct stat st;
    if (bv_path_stat(app->root, target, &st, NULL) == 0)
        return bv_error_setf(errp, EEXIST, "Target '%s' already exists", target);
    return 0;
}

/* ---- starting ---------------------------------------------------------------------- */

static struct restore_job *restore_job_new(struct bv_app *app, const struct bv_restore_request *rq,
                                           const struct bv_backup_rec *b, enum bv_format fmt)
{
    struct restore_job *rj = calloc(1, sizeof(*rj));
    if (!rj)
        return NULL;
    rj->app = app;
    snprintf(rj->bid, sizeof(rj->bid), "%s", b->id);
    snprintf(rj->checksum, sizeof(rj->checksum), "%s", b->checksum);
    if (rq->drive) {
        snprintf(rj->drive_id, sizeof(rj->drive_id), "%s", rq->drive);
        snprintf(rj->target, sizeof(rj->target), "%s.%s", rq->drive, bv_format_name(fmt));
    } else {
        snprintf(rj->target, sizeof(rj->target), "%s", rq->file);
    }
    rj->drive_format = fmt == BV_FMT_RAW ? BV_DRIVE_RAW : BV_DRIVE_QCOW2;
    return rj;
}

static char *params_text(const struct bv_restore_request *rq, const struct restore_job *rj,
                         enum bv_format fmt)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "backup", rj->bid);
    cJSON_AddStringToObject(p, "target", rj->target);
    cJSON_AddStringToObject(p, "format", bv_format_name(fmt));
    cJSON_AddBoolToObject(p, "compress", rq->compress);
    if (rq->drive)
        cJSON_AddStringToObject(p, "drive", rq->drive);
    else
        cJSON_AddNullToObject(p, "drive");
    cJSON_AddBoolToObject(p, "force", rq->force);
    char *t = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    return t;
}

/* Open the point as a private drive of rj. */
static int open_source(struct bv_app *app, struct restore_job *rj, uint64_t *size,
                       bv_error **errp)
{
    bv_node *n = NULL;
    /* links only in a bucket are streamed from it (check_point has checked the status) */
    int r = bv_linkread_open(app, rj->bid, BV_LINKREAD_STREAM, &n, errp);
    if (r == 0)
        r = bv_drive_new(rj->bid, n, &rj->src, errp);      /* owns n, also on failure */
    if (r == 0) {
        *size = bv_drive_size(rj->src);
        r = bv_crcmap_new(*size, &rj->map, errp);
    }
    return r;
}

/* Steps 3 and 4; rj belongs to the job from the prepare call on. */
static int start_job(struct bv_app *app, const struct bv_restore_request *rq,
                     struct restore_job *rj, enum bv_format fmt, const char *job_id,
                     struct bv_job_info *info, bv_error **errp)
{
    uint64_t size = 0;
    char *params = NULL;
    uint64_t alloc = 0;
    int r = open_source(app, rj, &size, errp);
    if (r == 0)                    /* room for it, before the target is created */
        r = bv_capacity_allocated(bv_drive_node(rj->src), &alloc, errp);
    if (r == 0)
        r = bv_capacity_check(app, bv_capacity_need(alloc), errp);
    if (r == 0 && !(params = params_text(rq, rj, fmt)))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r < 0) {
        restore_release(rj);
        return r;
    }
    struct bv_backup_spec s = {
        .device = rj->bid, .job_id = job_id, .sync = BV_BACKUP_SYNC_FULL, .bitmap_mode = -1,
        .target = rj->target, .format = bv_format_name(fmt), .compress = rq->compress,
        .auto_finalize = true, .auto_dismiss = true,
        .copied = restore_copied, .finished = restore_finished, .release = restore_release,
        .hook_opaque = rj, .job_type = "restore", .private_drive = true, .target_new = true,
        .params = params, .check = restore_check,
    };
    /* the caller's own entry: prepare reads its id and drive, keeps neither */
    struct bv_drive_entry e = { .app = app, .id = rj->bid, .drive = rj->src };
    struct bv_job *job = NULL;
    r = bv_jobs_backup_prepare(app, &e, &s, &job, NULL, errp);
    free(params);
    if (r < 0)
        return r;
    bv_job_start(job);
    bv_job_query(job, info);
    bv_job_unref(job);
    return 0;
}

static int start_locked(struct bv_app *app, const struct bv_restore_request *rq,
                        enum bv_format fmt, struct bv_job_info *info, bv_error **errp)
{
    struct bv_backup_rec b;
    int r = bv_backups_get(app, rq->backup, &b, errp);
    if (r == 0)
        r = check_point(&b, rq->force, errp);
    if (r < 0)
        return r;
    struct restore_job *rj = restore_job_new(app, rq, &b, fmt);
    if (!rj)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int64_t seq = 0;
    char job_id[64];
    r = check_target(app, rj->target, errp);
    if (r == 0 && bvdb_next_seq(app->db, "restore", &seq) < 0)
        r = bv_error_setf(errp, EIO, "cannot allocate a job id in the catalog");
    if (r < 0) {
        restore_release(rj);
        return r;
    }
    snprintf(job_id, sizeof(job_id), "restore-%lld", (long long)seq);
    return start_job(app, rq, rj, fmt, job_id, info, errp);
}

int bv_restore_start(struct bv_app *app, const struct bv_restore_request *rq,
                     struct bv_job_info *info, bv_error **errp)
{
    enum bv_format fmt = BV_FMT_NONE;
    int r = check_request(app, rq, &fmt, errp);
    if (r < 0)
        return r;
    pthread_mutex_lock(&app->backups_lock);
    r = start_locked(app, rq, fmt, info, errp);
    pthread_mutex_unlock(&app->backups_lock);
    return r;
}
