/*
 * The one application context handed to every handler: configuration, the
 * catalog, the worker pool and the long-poll waiters.  No globals: tests can
 * run several apps in one process.
 *
 * Locks (taken in this order, never the reverse):
 *   app->events_lock  guards events_head and signals events_cond, so that
 *                     long-pollers wake when an event is appended;
 *   the catalog lock  (inside bvdb) guards the connection.
 * Nothing is called out (HTTP, callbacks) while either is held.
 */
#ifndef BV_SERVICE_APP_H
#define BV_SERVICE_APP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "bvdb/catalog.h"
#include "config.h"

struct bv_workers;
struct bv_root;
struct bv_registry;
struct bv_vms;
struct bv_job_ctx;
struct jobs_svc;
struct bv_scheduler;
struct nbd_server;
struct bv_notifier;
struct bv_upkeep;

struct bv_app {
    struct bv_config cfg;
    char images_dir[4200];         /* <data>/images: the storage directory */
    struct bv_root *root;          /* images_dir opened once: every client or recorded file
                                      name is resolved beneath it (bv/path.h), never by
                                      re-walking images_dir as a string */
    struct bv_root *qmp_root;      /* --qmp-dir opened once (NULL without the flag): QMP
                                      socket names resolve beneath it (service/qmp/qmp.h) */
    char catalog_path[4200];
    bvdb *db;
    struct bv_workers *workers;
    time_t started;
    atomic_bool stopping;          /* set at shutdown: long-polls return early */

    pthread_mutex_t events_lock;
    pthread_cond_t events_cond;
    int64_t events_head;           /* last seq appended (guarded by events_lock) */
    unsigned open_streams;         /* GET /events/stream responses not yet freed (guarded
                                      by events_lock; a change signals events_cond): at
                                      shutdown main waits, bounded, for them to end */

    atomic_uint_fast64_t http_requests;
    atomic_uint_fast64_t corruption_reports;
    /* verify jobs (runtime/verify.c): bytes read, durations by bucket (the
     * last is +Inf), their count and sum in microseconds */
#define BV_VERIFY_HIST_BUCKETS 10
    atomic_uint_fast64_t verify_bytes;
    atomic_uint_fast64_t verify_hist[BV_VERIFY_HIST_BUCKETS + 1];
    atomic_uint_fast64_t verify_count, verify_us;

    struct bv_registry *registry;  /* open drives (own lock, see runtime/registry.h) */
    struct bv_vms *vms;            /* VM drives and their QMP connections (own lock, see
                                      runtime/vmdrives.h) */
    struct bv_job_ctx *jobs;       /* the job engine (own lock, see bv/job.h) */
    pthread_mutex_t backups_lock;  /* serialises chain changes (runtime/backups.h) */
    struct bv_scheduler *scheduler;   /* policies (runtime/policies.h) */
    _Atomic int64_t test_now_ms;   /* --test-clock: the service's clock (0: real time) */
    struct jobs_svc *jobs_svc;     /* the service's job records (runtime/jobs.c) */
    struct nbd_server *nbd;        /* the NBD server (nbd/nbd.h; own lock), NULL if not up */
    struct bv_notifier *notifier;  /* webhooks (runtime/notify.h; own lock), NULL if not up */
    struct bv_upkeep *upkeep;      /* history retention (runtime/upkeep.h; own lock) */

    /* periodic bitmap saver (runtime/drives.c); saver_lock guards nothing but
     * the wait on saver_cond */
    pthread_t saver;
    bool saver_running;
    unsigned saver_interval;
    pthread_mutex_t saver_lock;
    pthread_cond_t saver_cond;
};

/* Create <data>, <data>/images, open the catalog, start workers. */
int bv_app_open(struct bv_app *app, char *err, size_t errlen);
/* Stop workers at a safe point and close the catalog. */
void bv_app_close(struct bv_app *app);

/* The service's clock (unix ms): real time, or the test clock. */
int64_t bv_app_now_ms(struct bv_app *app);
/* The same as RFC 3339 UTC with milliseconds. */
void bv_app_now_str(struct bv_app *app, char out[32]);
void bv_time_str(int64_t ms, char out[32]);

/* Append an event (name, JSON data object text) to the catalog and wake
 * long-pollers.  Returns the seq or a negative errno. */
int64_t bv_app_emit(struct bv_app *app, const char *name, const char *data_json);

#endif
