/*
 * Catalog upkeep (contract: "Operations", Upkeep).
 *
 * History retention: a thread deletes the events, finished jobs, reports and
 * policy runs older than --history-days (default 90; 0 keeps everything) in
 * batches of BV_UPKEEP_BATCH rows, one catalog transaction each, pausing
 * between batches so that API requests get the catalog in between
 * (db/upkeep.h says which rows stay whatever their age).  It runs at start,
 * then every hour by the service's clock (bv_app_now_ms: real time, or
 * --test-clock's), and at once when kicked: POST /api/v1/catalog/upkeep,
 * or a move of the test clock.
 *
 * Catalog copies: SQLite's online backup of the open catalog into a
 * temporary file in the data directory (never the storage directory;
 * <data>/.catalog-copy.XXXXXX, unlinked once open, and any a crash left
 * removed at start), from
 * which the copy is written where it is asked for: a new file beneath the
 * storage directory (POST /api/v1/catalog/backup), or an object on a remote
 * (each replicate job uploads one).
 *
 * Locking: up->lock guards the status and the kicked/stop flags and is a
 * leaf lock (nothing is called while it is held); the catalog lock is taken
 * per batch by db/.
 */
#ifndef BV_RUNTIME_UPKEEP_H
#define BV_RUNTIME_UPKEEP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bv/error.h"

#include "bvdb/upkeep.h"

struct bv_app;

#define BV_UPKEEP_BATCH      500       /* rows per transaction */
#define BV_UPKEEP_PAUSE_MS   5         /* between batches */
#define BV_UPKEEP_PERIOD_S   3600      /* between runs, by the service's clock */

struct bv_upkeep_status {
    unsigned history_days;
    bool running;
    uint64_t runs;                         /* finished runs since start */
    char cutoff[32];                       /* of the current or last run ("" none yet) */
    char last_started[32], last_finished[32];
    char next_run[32];
    int64_t deleted[BVDB_HISTORY_KINDS];   /* by the current or last run */
    int64_t deleted_total[BVDB_HISTORY_KINDS];  /* by every run since start */
    char error[256];                       /* "" or why the last run stopped */
};

int bv_upkeep_start(struct bv_app *app);
void bv_upkeep_stop(struct bv_app *app);
/* Run now (returns at once; the run is the thread's). */
void bv_upkeep_kick(struct bv_app *app);
void bv_upkeep_status(struct bv_app *app, struct bv_upkeep_status *out);
/* Prometheus lines: runs, rows deleted by kind since start, whether one runs now. */
void bv_upkeep_metrics(struct bv_app *app, FILE *f);

/* A consistent copy of the catalog as an unlinked temporary file: *fd (read
 * only, at offset 0) and its *size.  The caller closes fd. */
int bv_catalog_copy_temp(struct bv_app *app, int *fd, uint64_t *size, bv_error **errp);

/* Write a copy into file, a new name beneath the storage directory (resolved
 * from its descriptor; never an existing file: EEXIST; never under chains/,
 * which the service manages: EBUSY), fsynced with its directory.  *size gets
 * its length.  ENOSPC (507) when it may not fit. */
int bv_catalog_backup(struct bv_app *app, const char *file, uint64_t *size, bv_error **errp);

#endif
