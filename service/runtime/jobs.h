/*
 * Jobs in the service: the engine (core/job) wired to the worker pool and
 * the catalog, the backup job's validation and target handling, verbs,
 * queries with history, start-up recovery and metrics.  Typed, no HTTP or
 * JSON: api/jobs.c and api/transactions.c parse and format, and the
 * scheduler will call the same functions.
 *
 * The catalog: each job has a row (inserted with its `created` event); every
 * batch of engine events is one catalog transaction that appends the events
 * and updates the rows of the jobs they concern, so a client that read
 * BLOCK_JOB_COMPLETED finds the job no longer live, here and in the catalog.
 * At start-up, rows of jobs that were live when the service died are marked
 * failed: "interrupted by restart".
 *
 * Errors: -errno + bv_error with QEMU's texts (qemu-semantics §10).  The
 * errno says what happened: ENOENT/EINVAL/ENOTSUP a bad reference or value
 * in the body (400), EBUSY/EEXIST busy or taken (409), ENODEV a job or drive
 * named in the URL that does not exist (404), ENOSPC not enough space (507).
 *
 * Locking: app->jobs_lock guards the live service-job list (targets in use,
 * rate samples); it is taken after the engine's lock (the event hook runs
 * under it) and before the catalog's.
 */
#ifndef BV_RUNTIME_JOBS_H
#define BV_RUNTIME_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bv/backup.h"
#include "bv/job.h"

struct bv_app;
struct bv_drive_entry;

struct bv_backup_spec {
    const char *device;              /* drive id */
    const char *job_id;              /* NULL: the device id */
    enum bv_backup_sync sync;
    const char *bitmap;              /* NULL: none */
    int bitmap_mode;                 /* enum bv_bitmap_sync_mode, -1: not given */
    const char *target;              /* relative to the storage directory */
    const char *format;              /* "qcow2" | "raw" | NULL (the source's) */
    bool mode_existing;              /* else absolute-paths (create) */
    bool compress;
    uint64_t speed;
    enum bv_job_error_policy on_source_error, on_target_error;
    bool auto_finalize, auto_dismiss;
    /* Hooks for the service's own jobs (chains, restores; NULL for a
     * plain job).  copied: each range written to the target (bv/backup.h).
     * finished: the job ended (info says how), called inside the catalog
     * transaction that records its final event, with the engine's lock
     * held: record the outcome in the catalog, nothing slow.  release:
     * the job's state is gone (hook_opaque may be freed).  hook_opaque
     * belongs to the job from the prepare call on: a prepare that fails
     * releases it too (and bv_txn_run those of actions it never prepared). */
    void (*copied)(void *opaque, uint64_t off, uint64_t len, const void *data);
    void (*finished)(struct bv_app *app, void *opaque, const struct bv_job_info *info);
    void (*release)(void *opaque);
    void *hook_opaque;
    const char *job_type;            /* NULL: "backup"; "restore" */
    bool managed_target;             /* a chain link the service creates: skip the
                                        "target in use" checks for its own file */
    bool target_no_backing;          /* mode existing: open the target without its backing
                                        chain (an incremental link over tiered links: the
                                        job writes whole target clusters, §4.3, so it never
                                        reads the backing), as an image over one
                                        (hidden_backing: zero writes stay recorded) */
    /* A restore (runtime/restore.c): the entry passed to prepare is the
     * caller's own, over a private drive that is never registered (no
     * registry reference is taken); the target must not exist (EEXIST,
     * never replaced); params is the job's type fields (JSON object text,
     * NULL: the backup's); check runs once the copy is complete and
     * flushed, and a failure fails the job with its message as the job's
     * error (not strerror). */
    bool private_drive;
    bool target_new;
    const char *params;
    int (*check)(void *opaque, bv_error **errp);
};

/* Engine up, catalog rows of a previous run's live jobs marked interrupted. */
int bv_jobs_init(struct bv_app *app);
/* Cancel live jobs and wait for them (bounded); then free the engine. */
void bv_jobs_shutdown(struct bv_app *app);

/* The two halves of a backup, for transactions: prepare validates in
 * QEMU's order (§4.1), creates or opens the target and creates the job
 * (status created) with the point in time taken.  The drive must be
 * quiesced by the caller (bv_drive_quiesce on e->drive).  *job holds a
 * reference (bv_job_unref).  *created_target (may be NULL) is set when the
 * call created the target file, so that an abort can remove it. */
int bv_jobs_backup_prepare(struct bv_app *app, struct bv_drive_entry *e,
                           const struct bv_backup_spec *s, struct bv_job **job,
                           char **created_target, bv_error **errp);

/* One backup job: resolve the drive, quiesce, prepare, start. *info gets
 * the job as created. */
int bv_jobs_backup(struct bv_app *app, const struct bv_backup_spec *s, struct bv_job_info *info,
                   bv_error **errp);

/* A job the service runs itself around engine work (a prune: catalog steps
 * around a merge): recorded, queried, listed and reported as any job, with
 * a generated id "<type>-<N>" (QEMU's id rule), auto-finalized and
 * auto-dismissed.  run executes on a worker (bv/prune.h); release is called
 * once the job's state is gone, or by this call when it fails. */
struct bv_task_spec {
    const char *type;                /* "prune", "verify", "replicate" or "import" */
    const char *device;              /* the drive it concerns, or NULL */
    const char *params;              /* the type's fields (JSON object text), NULL: {} */
    int (*run)(struct bv_job *job, void *opaque, bv_error **errp);
    void (*release)(void *opaque);
    void *opaque;
};
/* Create and start it; *info gets the job as created. */
int bv_jobs_task(struct bv_app *app, const struct bv_task_spec *s, struct bv_job_info *info,
                 bv_error **errp);

/* Verbs on the live job id (ENODEV "Job not found" if none). */
int bv_jobs_verb(struct bv_app *app, const char *id, enum bv_job_verb verb, uint64_t speed,
                 struct bv_job_info *info, bv_error **errp);

/* What a job query returns: the engine's snapshot plus the service's. */
struct bv_job_view {
    struct bv_job_info info;
    double rate;                     /* bytes/s over the last seconds */
    char params[2048];               /* JSON object text: the type's fields */
    char created_at[32], started_at[32], finished_at[32];   /* "" if not yet */
};
/* The live job with that id, else the newest dismissed one from the
 * catalog; -ENODEV "Job not found". */
int bv_jobs_get(struct bv_app *app, const char *id, struct bv_job_view *out, bv_error **errp);
/* Live jobs (oldest first), then with history the dismissed ones, newest
 * first.  status/type filter (NULL: any).  *out malloc'd; returns n. */
size_t bv_jobs_list(struct bv_app *app, bool history, const char *status, const char *type,
                    struct bv_job_view **out);

/* Snapshot of a job with the service's fields. */
void bv_jobs_view(struct bv_app *app, struct bv_job *job, struct bv_job_view *out);

/* Is this file the target of a job whose state still lives?  who gets
 * "job 'j0'". */
struct bv_file_id;
bool bv_jobs_file_in_use(struct bv_app *app, const struct bv_file_id *id, char *who, size_t len);

/* Metrics (Prometheus text exposition) written to f. */
void bv_jobs_metrics(struct bv_app *app, FILE *f);

#endif
