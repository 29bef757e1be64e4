/* Application context: see app.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "app.h"
#include "bv/path.h"
#include "bvdb/events.h"
#include "log.h"
#include "nbd/nbd.h"
#include "runtime/drives.h"
#include "runtime/backups.h"
#include "runtime/jobs.h"
#include "runtime/notify.h"
#include "runtime/remotes.h"
#include "runtime/policies.h"
#include "runtime/prune.h"
#include "runtime/registry.h"
#include "runtime/upkeep.h"
#include "runtime/vmdrives.h"
#include "runtime/workers.h"

static int make_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0750) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        errno = ENOTDIR;
    }
    snprintf(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
    return -1;
}

static void db_log(void *opaque, const char *msg)
{
    (void)opaque;
    log_error("%s", msg);
}

int bv_app_open(struct bv_app *app, char *err, size_t errlen)
{
    app->started = time(NULL);
    if (app->cfg.test_clock)
        atomic_store(&app->test_now_ms, app->cfg.test_clock_start * 1000);
    pthread_mutex_init(&app->events_lock, NULL);
    pthread_cond_init(&app->events_cond, NULL);
    pthread_mutex_init(&app->backups_lock, NULL);
    snprintf(app->images_dir, sizeof(app->images_dir), "%s/images", app->cfg.data_dir);
    snprintf(app->catalog_path, sizeof(app->catalog_path), "%s/catalog.db", app->cfg.data_dir);
    bv_error *e = NULL;
    if (make_dir(app->cfg.data_dir, err, errlen) < 0 || make_dir(app->images_dir, err, errlen) < 0)
        return -1;
    /* first: a bad --qmp-dir fails start-up before anything is held */
    if (app->cfg.qmp_dir[0] && bv_root_open(app->cfg.qmp_dir, &app->qmp_root, &e) < 0) {
        snprintf(err, errlen, "--qmp-dir %s: %s", app->cfg.qmp_dir,
                 e ? e->msg : "cannot open the directory");
        bv_error_free(e);
        return -1;
    }
    if (bv_root_open(app->images_dir, &app->root, &e) < 0) {
        snprintf(err, errlen, "%s", e ? e->msg : "cannot open the storage directory");
        bv_error_free(e);
        return -1;
    }
    if (bvdb_open(app->catalog_path, &app->db, err, errlen) < 0)
        return -1;
    bvdb_set_log(app->db, db_log, NULL);
    app->events_head = bvdb_event_head(app->db);
    app->registry = bv_registry_new();
    if (!app->registry || bv_vms_init(app) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (bv_notify_start(app) < 0) {
        snprintf(err, errlen, "cannot start the notifier thread");
        return -1;
    }
    bv_drives_restore(app);
    bv_vm_drives_restore(app);
    if (bv_drives_start_saver(app, 60) < 0)
        log_warn("cannot start the bitmap saver thread; bitmaps are saved at shutdown only");
    app->workers = bv_workers_start(app->cfg.workers);
    if (!app->workers) {
        snprintf(err, errlen, "cannot start %u worker threads", app->cfg.workers);
        return -1;
    }
    if (bv_jobs_init(app) < 0) {
        snprintf(err, errlen, "cannot start the job engine");
        return -1;
    }
    bv_backups_recover(app);
    bv_prune_recover(app);
    bv_remotes_recover(app);           /* a tiering a crash interrupted */
    if (bv_scheduler_start(app) < 0) {
        snprintf(err, errlen, "cannot start the policy scheduler (check --timezone '%s')",
                 app->cfg.timezone);
        return -1;
    }
    if (bv_nbd_start(app, err, errlen) < 0)
        return -1;
    if (bv_upkeep_start(app) < 0) {
        snprintf(err, errlen, "cannot start the catalog upkeep thread");
        return -1;
    }
    return 0;
}

void bv_app_close(struct bv_app *app)
{
    bv_nbd_stop(app);              /* NBD clients' requests end first; their drive
                                      references are dropped */
    bv_upkeep_stop(app);           /* a run stops after its current batch */
    bv_scheduler_stop(app);        /* no new runs; a run in progress ends first */
    bv_jobs_shutdown(app);         /* jobs cancelled and off the workers first */
    bv_workers_stop(app->workers);
    app->workers = NULL;
    bv_notify_stop(app);           /* after the jobs: their failures are in the catalog */
    bv_drives_stop_saver(app);
    bv_vms_free(app);
    if (app->registry) {
        bv_drives_save_bitmaps(app, true);
        bv_registry_free(app->registry);
        app->registry = NULL;
    }
    bvdb_close(app->db);
    app->db = NULL;
    bv_root_close(app->root);
    app->root = NULL;
    bv_root_close(app->qmp_root);
    app->qmp_root = NULL;
    pthread_cond_destroy(&app->events_cond);
    pthread_mutex_destroy(&app->events_lock);
}

int64_t bv_app_emit(struct bv_app *app, const char *name, const char *data_json)
{
    char ts[32];
    int64_t seq = 0;
    bvdb_now(ts);
    int r = bvdb_event_append(app->db, name, ts, data_json, &seq);
    if (r < 0)
        return r;
    pthread_mutex_lock(&app->events_lock);
    if (seq > app->events_head)
        app->events_head = seq;
    pthread_cond_broadcast(&app->events_cond);
    pthread_mutex_unlock(&app->events_lock);
    return seq;
}

int64_t bv_app_now_ms(struct bv_app *app)
{
    int64_t t = atomic_load(&app->test_now_ms);
    if (t)
        return t;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void bv_time_str(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)(ms % 1000));
}

void bv_app_now_str(struct bv_app *app, char out[32])
{
    bv_time_str(bv_app_now_ms(app), out);
}
