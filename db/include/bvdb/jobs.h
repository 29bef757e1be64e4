/*
 * Job rows: one per job ever created (job ids are reused once a job is
 * dismissed, so the row's own rowid identifies it).  A live job's row
 * follows its status; a dismissed one (status "null") is history.
 * Locking: see catalog.h.  Updates that go with events are made inside the
 * caller's transaction (bvdb_begin .. bvdb_commit).
 */
#ifndef BVDB_JOBS_H
#define BVDB_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_job {
    int64_t rowid;
    const char *job_id;
    const char *type;
    const char *device;            /* may be NULL */
    const char *status;
    uint64_t offset, len, speed;
    const char *error;             /* NULL: none */
    bool auto_finalize, auto_dismiss;
    const char *params;            /* JSON object text (type fields) */
    const char *created_at, *started_at, *finished_at;   /* NULL: not yet */
};

/* Insert; *rowid gets the new row's id. */
int bvdb_job_insert(bvdb *db, const struct bvdb_job *j, int64_t *rowid);
/* Update status, progress, error and times of row j->rowid. */
int bvdb_job_update(bvdb *db, const struct bvdb_job *j);

struct bvdb_job_filter {
    const char *job_id;            /* NULL: any */
    const char *status;            /* NULL: any */
    const char *type;              /* NULL: any */
    bool live_only;                /* status <> 'null' */
    int limit;
};
/* Newest first. */
int bvdb_job_list(bvdb *db, const struct bvdb_job_filter *f,
                  int (*cb)(const struct bvdb_job *j, void *opaque), void *opaque);

/* Start-up: every row not 'null' belongs to a job of a previous run; mark
 * it null with error (only if it had none) and finished_at.  cb (may be
 * NULL) sees each such row before it is changed.  Returns the count. */
int bvdb_job_interrupt_live(bvdb *db, const char *error, const char *now,
                            int (*cb)(const struct bvdb_job *j, void *opaque), void *opaque);

/* Counts by (type, status) for metrics. */
int bvdb_job_counts(bvdb *db, int (*cb)(const char *type, const char *status, int64_t n,
                                        void *opaque), void *opaque);

#endif
