/*
 * Catalog upkeep: see upkeep.h.  The retention thread's loop, the run that
 * deletes history batch by batch, and catalog copies.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "bv/path.h"
#include "log.h"
#include "runtime/capacity.h"
#include "runtime/upkeep.h"

#define WAIT_MAX_MS     60000       /* re-read the clock at least this often */
#define COPY_PAGES      64          /* pages per online-backup step */
#define COPY_CHUNK      (1u << 20)
#define COPY_PREFIX     ".catalog-copy."   /* temporary copies in the data directory */

struct bv_upkeep {
    struct bv_app *app;
    pthread_t thread;
    bool running_thread;
    pthread_mutex_t lock;            /* everything below */
    pthread_cond_t cond;
    bool kicked, stop;
    int64_t next_ms;                 /* next run by the service's clock */
    struct bv_upkeep_status st;
};

static void sleep_ms(unsigned ms)
{
    struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

/* ---- one run ------------------------------------------------------------------- */

/* Delete one kind batch by batch; false when the run must stop. */
static bool prune_kind(struct bv_upkeep *up, enum bvdb_history kind, const char *cutoff)
{
    for (;;) {
        int n = bvdb_history_prune(up->app->db, kind, cutoff, BV_UPKEEP_BATCH);
        if (n < 0) {
            pthread_mutex_lock(&up->lock);
            snprintf(up->st.error, sizeof(up->st.error), "cannot delete old %s: %s",
                     bvdb_history_names[kind], strerror(-n));
            pthread_mutex_unlock(&up->lock);
            return false;
        }
        pthread_mutex_lock(&up->lock);
        up->st.deleted[kind] += n;
        up->st.deleted_total[kind] += n;
        bool stop = up->stop;
        pthread_mutex_unlock(&up->lock);
        if (n < BV_UPKEEP_BATCH || stop)
            return !stop;
        sleep_ms(BV_UPKEEP_PAUSE_MS);          /* the API's statements run here */
    }
}

static void run_once(struct bv_upkeep *up)
{
    struct bv_app *app = up->app;
    int64_t now = bv_app_now_ms(app);
    int64_t keep_ms = (int64_t)app->cfg.history_days * 86400 * 1000;
    char cutoff[32], started[32];
    bv_time_str(now - keep_ms, cutoff);
    bv_time_str(now, started);
    pthread_mutex_lock(&up->lock);
    up->st.running = true;
    snprintf(up->st.cutoff, sizeof(up->st.cutoff), "%s", cutoff);
    snprintf(up->st.last_started, sizeof(up->st.last_started), "%s", started);
    memset(up->st.deleted, 0, sizeof(up->st.deleted));
    up->st.error[0] = '\0';
    pthread_mutex_unlock(&up->lock);
    for (int k = 0; k < BVDB_HISTORY_KINDS; k++)
        if (!prune_kind(up, (enum bvdb_history)k, cutoff))
            break;
    int64_t total = 0;
    pthread_mutex_lock(&up->lock);
    for (int k = 0; k < BVDB_HISTORY_KINDS; k++)
        total += up->st.deleted[k];
    up->st.running = false;
    up->st.runs++;
    bv_app_now_str(app, up->st.last_finished);
    pthread_mutex_unlock(&up->lock);
    if (total)
        log_info("upkeep: deleted %lld history row(s) older than %s", (long long)total, cutoff);
}

/* ---- the thread ---------------------------------------------------------------- */

static void wait_locked(struct bv_upkeep *up, int64_t ms)
{
    if (ms > WAIT_MAX_MS)
        ms = WAIT_MAX_MS;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&up->cond, &up->lock, &dl);
}

static void *upkeep_main(void *opaque)
{
    struct bv_upkeep *up = opaque;
    struct bv_app *app = up->app;
    pthread_mutex_lock(&up->lock);
    while (!up->stop) {
        int64_t now = bv_app_now_ms(app);
        if (up->kicked || now >= up->next_ms) {
            up->kicked = false;
            up->next_ms = now + (int64_t)BV_UPKEEP_PERIOD_S * 1000;
            bv_time_str(up->next_ms, up->st.next_run);
            pthread_mutex_unlock(&up->lock);
            if (app->cfg.history_days > 0)
                run_once(up);
            pthread_mutex_lock(&up->lock);
            continue;
        }
        wait_locked(up, up->next_ms - now);
    }
    pthread_mutex_unlock(&up->lock);
    return NULL;
}

/* Temporary catalog copies a crash left behind in the data directory. */
static void remove_stale_copies(struct bv_app *app)
{
    DIR *d = opendir(app->cfg.data_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, COPY_PREFIX, strlen(COPY_PREFIX)) == 0 &&
            unlinkat(dirfd(d), de->d_name, 0) == 0)
            log_info("removed a catalog copy left by a stop: %s", de->d_name);
    closedir(d);
}

int bv_upkeep_start(struct bv_app *app)
{
    remove_stale_copies(app);
    struct bv_upkeep *up = calloc(1, sizeof(*up));
    if (!up)
        return -ENOMEM;
    up->app = app;
    up->kicked = true;                     /* a first run at start */
    up->st.history_days = app->cfg.history_days;
    pthread_mutex_init(&up->lock, NULL);
    pthread_cond_init(&up->cond, NULL);
    app->upkeep = up;
    if (pthread_create(&up->thread, NULL, upkeep_main, up) != 0)
        return -EAGAIN;
    up->running_thread = true;
    return 0;
}

void bv_upkeep_stop(struct bv_app *app)
{
    struct bv_upkeep *up = app->upkeep;
    if (!up)
        return;
    pthread_mutex_lock(&up->lock);
    up->stop = true;
    pthread_cond_broadcast(&up->cond);
    pthread_mutex_unlock(&up->lock);
    if (up->running_thread)
        pthread_join(up->thread, NULL);
    pthread_cond_destroy(&up->cond);
    pthread_mutex_destroy(&up->lock);
    free(up);
    app->upkeep = NULL;
}

void bv_upkeep_kick(struct bv_app *app)
{
    struct bv_upkeep *up = app->upkeep;
    if (!up)
        return;
    pthread_mutex_lock(&up->lock);
    up->kicked = true;
    pthread_cond_broadcast(&up->cond);
    pthread_mutex_unlock(&up->lock);
}

void bv_upkeep_status(struct bv_app *app, struct bv_upkeep_status *out)
{
    struct bv_upkeep *up = app->upkeep;
    memset(out, 0, sizeof(*out));
    out->history_days = app->cfg.history_days;
    if (!up)
        return;
    pthread_mutex_lock(&up->lock);
    *out = up->st;
    out->history_days = app->cfg.history_days;
    if (up->kicked)
        out->running = true;               /* about to run */
    pthread_mutex_unlock(&up->lock);
}

void bv_upkeep_metrics(struct bv_app *app, FILE *f)
{
    struct bv_upkeep_status st;
    bv_upkeep_status(app, &st);
    fprintf(f, "# HELP blockvault_upkeep_runs_total History upkeep runs finished since start.\n"
               "# TYPE blockvault_upkeep_runs_total counter\n"
               "blockvault_upkeep_runs_total %llu\n"
               "# HELP blockvault_upkeep_running 1 while a history upkeep run deletes.\n"
               "# TYPE blockvault_upkeep_running gauge\n"
               "blockvault_upkeep_running %d\n"
               "# HELP blockvault_upkeep_deleted_rows_total History rows older than "
               "--history-days deleted since start.\n"
               "# TYPE blockvault_upkeep_deleted_rows_total counter\n",
            (unsigned long long)st.runs, st.running ? 1 : 0);
    for (int k = 0; k < BVDB_HISTORY_KINDS; k++)
        fprintf(f, "blockvault_upkeep_deleted_rows_total{kind=\"%s\"} %lld\n",
                bvdb_history_names[k], (long long)st.deleted_total[k]);
}

/* ---- catalog copies -------------------------------------------------------------- */

static void copy_pause(void *opaque)
{
    (void)opaque;
    sleep_ms(1);
}

int bv_catalog_copy_temp(struct bv_app *app, int *fd, uint64_t *size, bv_error **errp)
{
    char path[4200], err[300];
    *fd = -1;
    snprintf(path, sizeof(path), "%s/" COPY_PREFIX "XXXXXX", app->cfg.data_dir);
    int tmp = mkstemp(path);
    if (tmp < 0)
        return bv_error_setf(errp, errno, "cannot create a temporary file in the data "
                             "directory: %s", strerror(errno));
    close(tmp);
    int r = bvdb_copy_to(app->db, path, COPY_PAGES, copy_pause, NULL, err, sizeof(err));
    int in = r == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat st;
    if (r == 0 && (in < 0 || fstat(in, &st) < 0))
        r = -errno;
    unlink(path);
    if (r < 0) {
        if (in >= 0)
            close(in);
        return bv_error_setf(errp, EIO, "%s", err[0] && r == -EIO ? err : strerror(-r));
    }
    *fd = in;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int copy_fd(int in, int out, uint64_t size, bv_error **errp)
{
    char *buf = malloc(COPY_CHUNK);
    if (!buf)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int r = 0;
    for (uint64_t off = 0; off < size && r == 0;) {
        size_t want = size - off < COPY_CHUNK ? (size_t)(size - off) : COPY_CHUNK;
        ssize_t n = pread(in, buf, want, (off_t)off);
        if (n <= 0) {
            r = bv_error_setf(errp, EIO, "cannot read the catalog copy: %s",
                              n < 0 ? strerror(errno) : "short file");
            break;
        }
        for (ssize_t done = 0; done < n && r == 0;) {
            ssize_t w = pwrite(out, buf + done, (size_t)(n - done), (off_t)(off + (uint64_t)done));
            if (w < 0)
                r = bv_error_setf(errp, errno, "cannot write the catalog copy: %s",
                                  strerror(errno));
            else
                done += w;
        }
        off += (uint64_t)n;
    }
    if (r == 0 && fsync(out) < 0)
        r = bv_error_setf(errp, errno, "cannot flush the catalog copy: %s", strerror(errno));
    free(buf);
    return r;
}

static void sync_parent(struct bv_app *app, const char *name)
{
    int r = bv_path_sync_parent(app->root, name);
    if (r < 0)
        log_warn("fsync of the directory of '%s' failed: %s", name, strerror(-r));
}

/* The storage-relative name of file, refused under chains/ (managed links). */
static int check_target(struct bv_app *app, const char *file, char **name, bv_error **errp)
{
    int r = bv_path_name(app->root, NULL, file, 0, name, errp);
    if (r < 0)
        return r;
    if (strcmp(*name, "chains") == 0 || strncmp(*name, "chains/", 7) == 0 ||
        strcmp(*name, ".") == 0) {
        r = bv_error_setf(errp, strcmp(*name, ".") ? EBUSY : EINVAL,
                          strcmp(*name, ".") ? "'%s' is beneath chains/, where the service "
                          "keeps its backup links" : "'%s' names the storage directory itself",
                          file);
        free(*name);
        *name = NULL;
    }
    return r;
}

int bv_catalog_backup(struct bv_app *app, const char *file, uint64_t *size, bv_error **errp)
{
    char *name = NULL;
    int in = -1, out = -1;
    bool created = false;
    struct stat st;
    int r = check_target(app, file, &name, errp);
    if (r == 0 && stat(app->catalog_path, &st) == 0)
        r = bv_capacity_check(app, bv_capacity_need((uint64_t)st.st_size), errp);
    if (r == 0)
        r = bv_path_open(app->root, NULL, name, 0, O_WRONLY | O_CREAT, 0640, &out, NULL, errp);
    created = r == 0;
    if (r == -EEXIST) {
        bv_error_free(errp ? *errp : NULL);
        if (errp)
            *errp = NULL;
        r = bv_error_setf(errp, EEXIST, "'%s' already exists: a catalog backup never "
                          "overwrites a file", file);
    }
    if (r == 0)
        r = bv_catalog_copy_temp(app, &in, size, errp);
    if (r == 0)
        r = copy_fd(in, out, *size, errp);
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) < 0 && r == 0)
        r = bv_error_setf(errp, errno, "cannot close the catalog copy: %s", strerror(errno));
    if (r < 0 && created)
        bv_path_unlink(app->root, name, NULL);
    if (r == 0)
        sync_parent(app, name);
    free(name);
    return r;
}
