/*
 * Jobs in the service: see jobs.h.  The engine calls on_events() with its
 * lock held for every batch of events; that is where the catalog learns
 * about jobs (rows inserted at `created`, updated with each change) and
 * where long-pollers are woken.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "bv/path.h"
#include "bv/prune.h"
#include "bv/verify.h"
#include "bvdb/backups.h"
#include "bvdb/events.h"
#include "bvdb/jobs.h"
#include "log.h"
#include "runtime/drives.h"
#include "runtime/jobs.h"
#include "runtime/notify.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "runtime/workers.h"

#define INTERRUPTED "interrupted by restart"
#define SHUTDOWN_WAIT_MS 30000

/* Backup durations histogram buckets (seconds). */
static const double duration_buckets[] = { 1, 5, 15, 60, 300, 900, 3600, 14400 };
#define NBUCKETS (sizeof(duration_buckets) / sizeof(duration_buckets[0]))

/* What the service keeps per job (bv_job_user). */
struct svc_job {
    struct bv_app *app;
    int64_t rowid;                   /* catalog row; 0 until `created` is recorded */
    char type[16];
    char id[129];
    char params[2048];
    struct bv_drive_entry *entry;    /* reference held while the job's state lives */
    struct bv_file_id target;
    bool has_target;
    void (*finished)(struct bv_app *app, void *opaque, const struct bv_job_info *info);
    void (*hook_release)(void *opaque);
    void *hook_opaque;
    int (*check)(void *opaque, bv_error **errp);
    int (*task_run)(struct bv_job *job, void *opaque, bv_error **errp);  /* replicate, import */
    char fail_text[256];             /* the check's failure (svc->lock to write; read by
                                        the sink after the run returned) */
    /* rate samples (svc->lock) */
    uint64_t sample_offset;
    int64_t sample_ms;
    double rate;
    struct svc_job *next;            /* svc->lock: jobs whose state lives */
};

struct jobs_svc {
    pthread_mutex_t lock;            /* the list, rate samples, metrics */
    struct svc_job *jobs;
    uint64_t bytes_copied;
    uint64_t hist[NBUCKETS + 1];
    double hist_sum;
    uint64_t hist_count;
};

static struct jobs_svc *svc_of(struct bv_app *app) { return app->jobs_svc; }

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void format_ms(int64_t ms, char out[32])
{
    if (!ms) {
        out[0] = '\0';
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* ---- the event sink ---------------------------------------------------- */

static cJSON *event_data(const struct bv_job_event *ev)
{
    const struct bv_job_info *j = &ev->job;
    cJSON *d = cJSON_CreateObject();
    switch (ev->kind) {
    case BV_JOB_EV_STATUS:
        cJSON_AddStringToObject(d, "id", j->id);
        cJSON_AddStringToObject(d, "status", bv_job_status_name(j->status));
        break;
    case BV_JOB_EV_COMPLETED:
    case BV_JOB_EV_CANCELLED:
        cJSON_AddStringToObject(d, "type", j->type);
        cJSON_AddStringToObject(d, "device", j->id);
        cJSON_AddNumberToObject(d, "len", (double)j->len);
        cJSON_AddNumberToObject(d, "offset", (double)j->offset);
        cJSON_AddNumberToObject(d, "speed", (double)j->speed);
        if (ev->kind == BV_JOB_EV_COMPLETED && j->error[0])
            cJSON_AddStringToObject(d, "error", j->error);
        break;
    case BV_JOB_EV_ERROR:
        cJSON_AddStringToObject(d, "device", j->id);
        cJSON_AddStringToObject(d, "operation", ev->op_write ? "write" : "read");
        cJSON_AddStringToObject(d, "action", bv_job_error_action_name(ev->action));
        break;
    case BV_JOB_EV_PENDING:
        cJSON_AddStringToObject(d, "type", j->type);
        cJSON_AddStringToObject(d, "id", j->id);
        break;
    }
    return d;
}

static const char *event_name(enum bv_job_event_kind k)
{
    static const char *const names[] = {
        "JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR",
        "BLOCK_JOB_PENDING",
    };
    return names[k];
}

/* The job's error as the service words it: a failed check's text instead
 * of strerror (bv_backup_spec.check). */
static void patch_error(const struct svc_job *sj, struct bv_job_info *j)
{
    if (j->error[0] && sj->fail_text[0])
        snprintf(j->error, sizeof(j->error), "%s", sj->fail_text);
}

static void row_of(const struct bv_job_info *j, struct svc_job *sj, char ts[3][32],
                   struct bvdb_job *row)
{
    format_ms(j->created_ms, ts[0]);
    format_ms(j->started_ms, ts[1]);
    format_ms(j->finished_ms, ts[2]);
    *row = (struct bvdb_job){
        .rowid = sj->rowid, .job_id = j->id, .type = j->type,
        .device = j->device[0] ? j->device : NULL, .status = bv_job_status_name(j->status),
        .offset = j->offset, .len = j->len, .speed = j->speed,
        .error = j->error[0] ? j->error : NULL,
        .auto_finalize = j->auto_finalize, .auto_dismiss = j->auto_dismiss,
        .params = sj->params, .created_at = ts[0], .started_at = ts[1][0] ? ts[1] : NULL,
        .finished_at = ts[2][0] ? ts[2] : NULL,
    };
}

/* Metrics for a job that just finished. */
static void account_locked(struct jobs_svc *svc, const struct bv_job_event *ev)
{
    const struct bv_job_info *j = &ev->job;
    svc->bytes_copied += j->offset;
    if (ev->kind != BV_JOB_EV_COMPLETED || j->error[0] || strcmp(j->type, "backup") != 0 ||
        !j->started_ms)
        return;
    double s = (double)(now_ms() - j->started_ms) / 1000.0;
    size_t b = 0;
    while (b < NBUCKETS && s > duration_buckets[b])
        b++;
    svc->hist[b]++;
    svc->hist_sum += s;
    svc->hist_count++;
}

static int record_event(struct bv_app *app, const struct bv_job_event *ev, int64_t *seq)
{
    struct svc_job *sj = bv_job_user(ev->source);
    char ts[3][32];
    struct bvdb_job row;
    row_of(&ev->job, sj, ts, &row);
    int r = 0;
    if (!sj->rowid)
        r = bvdb_job_insert(app->db, &row, &sj->rowid);
    if (r < 0)
        return r;
    cJSON *d = event_data(ev);
    char *text = cJSON_PrintUnformatted(d);
    cJSON_Delete(d);
    if (!text)
        return -ENOMEM;
    char now[32];
    bvdb_now(now);
    r = bvdb_event_append(app->db, event_name(ev->kind), now, text, seq);
    free(text);
    return r;
}

/* The engine's sink: one catalog transaction per batch. */
static void on_events(void *opaque, const struct bv_job_event *evs, size_t n)
{
    struct bv_app *app = opaque;
    struct jobs_svc *svc = svc_of(app);
    int64_t seq = 0;
    int r = bvdb_begin(app->db);
    for (size_t i = 0; i < n && r >= 0; i++) {
        struct bv_job_event ev = evs[i];
        struct svc_job *sj = bv_job_user(ev.source);
        patch_error(sj, &ev.job);
        r = record_event(app, &ev, &seq);
        if (r >= 0 && sj->finished && (ev.kind == BV_JOB_EV_COMPLETED ||
                                       ev.kind == BV_JOB_EV_CANCELLED))
            sj->finished(app, sj->hook_opaque, &ev.job);
    }
    /* each job's row follows its last snapshot in the batch */
    for (size_t i = 0; i < n && r >= 0; i++) {
        bool last = true;
        for (size_t k = i + 1; k < n; k++)
            if (evs[k].source == evs[i].source)
                last = false;
        if (!last)
            continue;
        char ts[3][32];
        struct bvdb_job row;
        struct bv_job_info j = evs[i].job;
        patch_error(bv_job_user(evs[i].source), &j);
        row_of(&j, bv_job_user(evs[i].source), ts, &row);
        r = bvdb_job_update(app->db, &row);
    }
    /* a job closed its target before its final event: the file is free by
     * the time a client can read that event */
    pthread_mutex_lock(&svc->lock);
    for (size_t i = 0; i < n; i++)
        if (evs[i].kind == BV_JOB_EV_COMPLETED || evs[i].kind == BV_JOB_EV_CANCELLED)
            ((struct svc_job *)bv_job_user(evs[i].source))->has_target = false;
    pthread_mutex_unlock(&svc->lock);
    if (r >= 0)
        r = bvdb_commit(app->db);
    else
        bvdb_rollback(app->db);
    if (r < 0) {
        log_error("cannot record %zu job event(s) in the catalog: %s", n, strerror(-r));
        return;
    }
    pthread_mutex_lock(&svc->lock);
    for (size_t i = 0; i < n; i++) {
        if (evs[i].kind == BV_JOB_EV_COMPLETED || evs[i].kind == BV_JOB_EV_CANCELLED) {
            account_locked(svc, &evs[i]);
        }
    }
    pthread_mutex_unlock(&svc->lock);
    pthread_mutex_lock(&app->events_lock);
    if (seq > app->events_head)
        app->events_head = seq;
    pthread_cond_broadcast(&app->events_cond);
    pthread_mutex_unlock(&app->events_lock);
    for (size_t i = 0; i < n; i++) {         /* job_failed webhooks (runtime/notify.h) */
        struct bv_job_info j = evs[i].job;
        patch_error(bv_job_user(evs[i].source), &j);
        if (evs[i].kind == BV_JOB_EV_COMPLETED && j.error[0])
            bv_notify_job_concluded(app, &j);
    }
}

static int submit(void *opaque, void (*fn)(void *), void (*drop)(void *), void *arg)
{
    struct bv_app *app = opaque;
    return bv_workers_submit(app->workers, fn, drop, arg);
}

/* ---- start-up and shutdown ---------------------------------------------- */

/* A restore that was cut short leaves a partial image: it goes, unless a
 * drive was already made on it (the restore had passed its check). */
static void drop_partial_restore(struct bv_app *app, const struct bvdb_job *j)
{
    cJSON *p = cJSON_Parse(j->params ? j->params : "{}");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "target");
    struct stat st;
    if (cJSON_IsString(t) && bv_path_stat(app->root, t->valuestring, &st, NULL) == 0) {
        struct bv_file_id id = { (uint64_t)st.st_dev, (uint64_t)st.st_ino };
        char who[160];
        if (!bv_registry_file_in_use(app, &id, who, sizeof(who))) {
            log_warn("removing '%s', the partial output of restore job '%s'", t->valuestring,
                     j->job_id);
            bv_path_unlink(app->root, t->valuestring, NULL);
        }
    }
    cJSON_Delete(p);
}

static int log_interrupted(const struct bvdb_job *j, void *opaque)
{
    struct bv_app *app = opaque;
    log_warn("job '%s' (%s) was %s when the service stopped: %s", j->job_id, j->type, j->status,
             INTERRUPTED);
    bv_notify_job_failed(app, j->job_id, j->type, j->device, INTERRUPTED);
    if (strcmp(j->type, "restore") == 0)
        drop_partial_restore(app, j);
    return 0;
}

int bv_jobs_init(struct bv_app *app)
{
    struct jobs_svc *svc = calloc(1, sizeof(*svc));
    if (!svc)
        return -ENOMEM;
    pthread_mutex_init(&svc->lock, NULL);
    app->jobs_svc = svc;
    char now[32];
    bvdb_now(now);
    int r = bvdb_job_interrupt_live(app->db, INTERRUPTED, now, log_interrupted, app);
    if (r < 0)
        log_error("cannot mark interrupted jobs in the catalog: %s", strerror(-r));
    struct bv_job_hooks hooks = { .submit = submit, .events = on_events, .opaque = app };
    r = bv_job_ctx_new(&hooks, &app->jobs, NULL);
    return r;
}

void bv_jobs_shutdown(struct bv_app *app)
{
    if (app->jobs) {
        bv_job_ctx_shutdown(app->jobs, SHUTDOWN_WAIT_MS);
        bv_job_ctx_free(app->jobs);
        app->jobs = NULL;
    }
    struct jobs_svc *svc = svc_of(app);
    if (svc) {
        pthread_mutex_destroy(&svc->lock);
        free(svc);
        app->jobs_svc = NULL;
    }
}

/* ---- the service's job record ---------------------------------------------- */

static struct svc_job *svc_job_new(struct bv_app *app, const char *type)
{
    struct svc_job *sj = calloc(1, sizeof(*sj));
    if (!sj)
        return NULL;
    sj->app = app;
    snprintf(sj->type, sizeof(sj->type), "%s", type);
    snprintf(sj->params, sizeof(sj->params), "{}");
    sj->sample_ms = now_ms();
    return sj;
}

static void svc_job_link(struct svc_job *sj)
{
    struct jobs_svc *svc = svc_of(sj->app);
    pthread_mutex_lock(&svc->lock);
    sj->next = svc->jobs;
    svc->jobs = sj;
    pthread_mutex_unlock(&svc->lock);
}

/* The job's state is gone: drop the drive and the record. */
static void svc_job_release(void *opaque)
{
    struct svc_job *sj = opaque;
    struct jobs_svc *svc = svc_of(sj->app);
    pthread_mutex_lock(&svc->lock);
    for (struct svc_job **pp = &svc->jobs; *pp; pp = &(*pp)->next)
        if (*pp == sj) {
            *pp = sj->next;
            break;
        }
    pthread_mutex_unlock(&svc->lock);
    if (sj->entry)
        bv_registry_put(sj->app, sj->entry);
    if (sj->hook_release)
        sj->hook_release(sj->hook_opaque);
    free(sj);
}

bool bv_jobs_file_in_use(struct bv_app *app, const struct bv_file_id *id, char *who, size_t len)
{
    struct jobs_svc *svc = svc_of(app);
    bool used = false;
    pthread_mutex_lock(&svc->lock);
    for (struct svc_job *sj = svc->jobs; sj && !used; sj = sj->next) {
        used = sj->has_target && sj->target.dev == id->dev && sj->target.ino == id->ino;
        if (used && who)
            snprintf(who, len, "job '%s'", sj->id);
    }
    pthread_mutex_unlock(&svc->lock);
    return used;
}

/* ---- backup: validation (§4.1) ---------------------------------------------- */

static void params_json(struct svc_job *sj, const struct bv_backup_spec *s, const char *format)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "sync", bv_backup_sync_names[s->sync]);
    if (s->bitmap)
        cJSON_AddStringToObject(p, "bitmap", s->bitmap);
    if (s->bitmap_mode >= 0)
        cJSON_AddStringToObject(p, "bitmap_mode", bv_bitmap_sync_mode_name(s->bitmap_mode));
    cJSON_AddStringToObject(p, "target", s->target);
    cJSON_AddStringToObject(p, "format", format);
    cJSON_AddStringToObject(p, "mode", s->mode_existing ? "existing" : "absolute-paths");
    cJSON_AddBoolToObject(p, "compress", s->compress);
    cJSON_AddStringToObject(p, "on_source_error", bv_job_error_policy_names[s->on_source_error]);
    cJSON_AddStringToObject(p, "on_target_error", bv_job_error_policy_names[s->on_target_error]);
    char *t = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    if (t && strlen(t) < sizeof(sj->params))
        snprintf(sj->params, sizeof(sj->params), "%s", t);
    free(t);
}

/* Step 4: the bitmap and sync rules, in QEMU's order. */
static int check_bitmap_rules(const struct bv_backup_spec *s, int *mode, bv_error **errp)
{
    bool by_bitmap = s->sync == BV_BACKUP_SYNC_INCREMENTAL || s->sync == BV_BACKUP_SYNC_BITMAP;
    *mode = s->bitmap_mode;
    if (by_bitmap && !s->bitmap)
        return bv_error_setf(errp, EINVAL, "must provide a valid bitmap name for '%s' sync mode",
                             bv_backup_sync_names[s->sync]);
    if (s->sync == BV_BACKUP_SYNC_INCREMENTAL) {
        if (*mode >= 0 && *mode != BV_BITMAP_SYNC_ON_SUCCESS)
            return bv_error_setf(errp, EINVAL, "Bitmap sync mode must be 'on-success' when "
                                 "using sync mode 'incremental'");
        *mode = BV_BITMAP_SYNC_ON_SUCCESS;
    }
    if (s->bitmap) {
        if (*mode < 0)
            return bv_error_setf(errp, EINVAL, "Bitmap sync mode must be given when providing "
                                 "a bitmap");
        if (s->sync == BV_BACKUP_SYNC_NONE)
            return bv_error_setf(errp, EINVAL, "sync mode 'none' does not produce meaningful "
                                 "bitmap outputs");
        if (s->sync == BV_BACKUP_SYNC_FULL && *mode == BV_BITMAP_SYNC_NEVER)
            return bv_error_setf(errp, EINVAL, "Bitmap sync mode 'never' has no meaningful "
                                 "effect when combined with sync mode 'full'");
    } else if (*mode >= 0) {
        return bv_error_setf(errp, EINVAL, "Cannot specify bitmap sync mode without a bitmap");
    }
    return 0;
}

/* The target as the job will see it. */
struct target_plan {
    enum bv_format format;
    char *backing;                   /* name recorded in a created target, or NULL */
    enum bv_format backing_format;
    bv_node *node;                   /* opened (existing) */
};

static int open_existing(struct bv_app *app, const struct bv_backup_spec *s,
                         struct target_plan *t, bv_error **errp)
{
    struct bv_open_opts oo = { .path = s->target, .root = app->root, .format = t->format,
                               .no_backing = s->target_no_backing,
                               .hidden_backing = s->target_no_backing };
    bv_error *e = NULL;
    int r = bv_node_open(&oo, &t->node, &e);
    if (r < 0) {
        r = bv_error_setf(errp, -r == ENODEV ? ENOENT : -r, "Could not open '%s': %s", s->target,
                          e ? e->msg : strerror(-r));
        bv_error_free(e);
    }
    return r;
}

/* absolute-paths: the file may be (re)created there. */
static int check_creatable(struct bv_app *app, const struct bv_backup_spec *s, bv_error **errp)
{
    char *name = NULL;
    int r = bv_path_name(app->root, NULL, s->target, 0, &name, NULL);
    if (r == 0) {
        char *dir = bv_path_dirname(name);
        struct stat st;
        r = dir ? bv_path_stat(app->root, dir, &st, NULL) : -ENOMEM;
        if (r == 0 && !S_ISDIR(st.st_mode))
            r = -ENOTDIR;
        free(dir);
    }
    free(name);
    if (r < 0)
        return bv_error_setf(errp, r == -EACCES ? EACCES : ENOENT, "Could not create '%s': %s",
                             s->target, strerror(-r));
    return 0;
}

/* Steps 3 and 5 for the target: the format, then existing opens / new is
 * checked creatable; the sizes match; it is not in use. */
static int plan_target(struct bv_app *app, struct bv_drive_entry *e,
                       const struct bv_backup_spec *s, struct target_plan *t, bv_error **errp)
{
    bv_node *src = bv_drive_node(e->drive);
    t->format = s->format ? bv_format_parse(s->format) : bv_node_format(src);
    if (t->format == BV_FMT_NONE)
        return bv_error_setf(errp, EINVAL, "Unknown file format '%s'", s->format);
    if (s->mode_existing)
        return open_existing(app, s, t, errp);
    int r = check_creatable(app, s, errp);
    if (r < 0)
        return r;
    bv_node *b = s->sync == BV_BACKUP_SYNC_NONE ? src
               : s->sync == BV_BACKUP_SYNC_TOP ? bv_node_backing(src) : NULL;
    if (b) {
        if (!(t->backing = strdup(bv_node_filename(b))))
            return bv_error_setf(errp, ENOMEM, "out of memory");
        t->backing_format = bv_node_format(b);
    }
    return 0;
}

static int check_target_use(struct bv_app *app, struct bv_drive_entry *e,
                            const struct bv_backup_spec *s, struct bv_file_id *id, bool *have,
                            bv_error **errp)
{
    struct stat st;
    *have = false;
    if (bv_path_stat(app->root, s->target, &st, NULL) < 0)
        return 0;                              /* to be created: nobody uses it */
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    *have = true;
    struct bv_file_id src;
    bv_node_file_id(bv_drive_node(e->drive), &src);
    if (src.dev == id->dev && src.ino == id->ino)
        return bv_error_setf(errp, EINVAL, "Source and target cannot be the same");
    char who[160];
    if (bv_registry_file_in_use(app, id, who, sizeof(who)))
        return bv_error_setf(errp, EBUSY, "Target '%s' is in use by %s", s->target, who);
    if (bv_jobs_file_in_use(app, id, NULL, 0))
        return bv_error_setf(errp, EBUSY, "Target '%s' is in use by another job", s->target);
    return 0;
}

static int validate(struct bv_app *app, struct bv_drive_entry *e, const struct bv_backup_spec *s,
                    struct target_plan *t, struct bv_dirty_bitmap **bm, int *mode,
                    bv_error **errp)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    if (bv_drive_busy(e->drive))
        return bv_error_setf(errp, EBUSY, "Node '%s' is busy: block device is in use by block "
                             "job: backup", e->id);
    int r = plan_target(app, e, s, t, errp);
    if (r == 0)
        r = check_bitmap_rules(s, mode, errp);
    if (r == 0 && s->bitmap && !(*bm = bv_bitmap_find(set, s->bitmap)))
        r = bv_error_setf(errp, ENOENT, "Bitmap '%s' could not be found", s->bitmap);
    if (r == 0 && s->compress && t->format != BV_FMT_QCOW2)
        r = bv_error_setf(errp, EINVAL, "Compression is not supported for this drive %s",
                          s->target);
    if (r == 0 && *bm)
        r = bv_bitmap_check_usable(set, *bm, errp);
    if (r == 0 && t->node && bv_node_size(t->node) != bv_drive_size(e->drive))
        r = bv_error_setf(errp, EINVAL, "Source and target image have different sizes");
    if (r == 0)
        r = bv_job_id_check(app->jobs, s->job_id ? s->job_id : e->id, errp);
    return r;
}

/* absolute-paths: (re)create the target; an existing file is replaced, as
 * QEMU does (it was checked to be in nobody's use). */
static int create_target(struct bv_app *app, struct bv_drive_entry *e,
                         const struct bv_backup_spec *s, struct target_plan *t, bv_error **errp)
{
    struct stat st;
    if (!s->target_new && bv_path_stat(app->root, s->target, &st, NULL) == 0) {
        int r = bv_path_unlink(app->root, s->target, errp);
        if (r < 0)
            return r;
    }
    struct bv_create_opts co = {
        .path = s->target, .root = app->root, .format = t->format,
        .size = bv_drive_size(e->drive), .backing = t->backing,
        .backing_format = t->backing_format,
    };
    bv_error *err = NULL;
    int r = bv_image_create(&co, &err);
    if (r < 0) {
        r = bv_error_setf(errp, -r, "Could not create '%s': %s", s->target,
                          err ? err->msg : strerror(-r));
        bv_error_free(err);
        return r;
    }
    struct bv_open_opts oo = { .path = s->target, .root = app->root, .format = t->format };
    r = bv_node_open(&oo, &t->node, errp);
    if (r < 0)
        bv_path_unlink(app->root, s->target, NULL);
    return r;
}

/* bv_backup_spec.check: its failure's text becomes the job's error. */
static int svc_job_check(void *opaque, bv_error **errp)
{
    struct svc_job *sj = opaque;
    bv_error *e = NULL;
    int r = sj->check(sj->hook_opaque, &e);
    if (r < 0) {
        pthread_mutex_lock(&svc_of(sj->app)->lock);
        snprintf(sj->fail_text, sizeof(sj->fail_text), "%.255s", e ? e->msg : strerror(-r));
        pthread_mutex_unlock(&svc_of(sj->app)->lock);
        r = bv_error_setf(errp, -r, "%s", sj->fail_text);
    }
    bv_error_free(e);
    return r;
}

int bv_jobs_backup_prepare(struct bv_app *app, struct bv_drive_entry *e,
                           const struct bv_backup_spec *s, struct bv_job **job,
                           char **created_target, bv_error **errp)
{
    struct target_plan t = { .format = BV_FMT_NONE };
    struct bv_dirty_bitmap *bm = NULL;
    struct bv_file_id tid = { 0, 0 };
    bool have_tid = false;
    int mode = -1;
    bool created = false;
    struct svc_job *sj = NULL;
    if (created_target)
        *created_target = NULL;
    int r = validate(app, e, s, &t, &bm, &mode, errp);
    if (r == 0 && !s->managed_target)
        r = check_target_use(app, e, s, &tid, &have_tid, errp);
    if (r == 0 && !s->mode_existing) {
        r = create_target(app, e, s, &t, errp);
        created = r == 0;
    }
    if (r == 0 && !(sj = svc_job_new(app, s->job_type ? s->job_type : "backup")))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r < 0)
        goto fail;
    sj->finished = s->finished;
    sj->hook_release = s->release;
    sj->hook_opaque = s->hook_opaque;
    sj->check = s->check;
    if (s->params)
        snprintf(sj->params, sizeof(sj->params), "%s", s->params);
    else
        params_json(sj, s, bv_format_name(t.format));
    snprintf(sj->id, sizeof(sj->id), "%s", s->job_id ? s->job_id : e->id);
    struct stat st;
    if (bv_path_stat(app->root, s->target, &st, NULL) == 0) {
        sj->target = (struct bv_file_id){ (uint64_t)st.st_dev, (uint64_t)st.st_ino };
        sj->has_target = true;
    }
    sj->entry = s->private_drive ? NULL : bv_registry_get(app, e->id);
    svc_job_link(sj);
    struct bv_backup_opts bo = {
        .drive = e->drive, .target = t.node, .target_empty = created && !t.backing,
        .sync = s->sync, .bitmap = bm, .bitmap_mode = mode < 0 ? 0 : mode,
        .compress = s->compress, .on_source_error = s->on_source_error,
        .on_target_error = s->on_target_error, .job_cluster = bv_backup_job_cluster(t.node),
        .release = svc_job_release, .release_opaque = sj,
        .copied = s->copied, .copied_opaque = s->hook_opaque, .job_type = s->job_type,
        .check = s->check ? svc_job_check : NULL, .check_opaque = sj,
    };
    /* Bench-only knobs (bench/bench_backup.py sweeps them to choose the
     * defaults): copy requests in flight and bytes per request.  Unset in
     * normal use, so 0 = the defaults of bv/backup.h.  Not part of the API. */
    const char *ev = getenv("BV_BACKUP_THREADS");
    if (ev)
        bo.copy_threads = (unsigned)strtoul(ev, NULL, 0);
    if ((ev = getenv("BV_BACKUP_CHUNK")))
        bo.chunk = (uint32_t)strtoul(ev, NULL, 0);
    struct bv_job_opts jo = {
        .id = s->job_id ? s->job_id : e->id, .device = e->id, .speed = s->speed,
        .auto_finalize = s->auto_finalize, .auto_dismiss = s->auto_dismiss, .user = sj,
    };
    t.node = NULL;                             /* the job owns it now, also on failure */
    r = bv_backup_create(app->jobs, &jo, &bo, job, errp);   /* on failure sj was released */
    if (r < 0)
        goto fail;
    if (created && created_target)
        *created_target = strdup(s->target);
    free(t.backing);
    return 0;
fail:
    if (!sj && s->release)
        s->release(s->hook_opaque);           /* the hooks belonged to the job */
    bv_node_close(t.node, NULL);
    if (created)
        bv_path_unlink(app->root, s->target, NULL);
    free(t.backing);
    return r;
}

int bv_jobs_backup(struct bv_app *app, const struct bv_backup_spec *s, struct bv_job_info *info,
                   bv_error **errp)
{
    struct bv_drive_entry *e = bv_registry_get(app, s->device);
    struct bv_vm_drive *vm = e ? NULL : bv_vm_drives_get(app, s->device);
    bv_vm_drives_put(app, vm);
    if (vm)
        return bv_error_setf(errp, ENOTSUP, "Drive '%s' is a VM drive: backup jobs are not "
                             "supported for VM drives (use POST /api/v1/drives/%s/backups)",
                             s->device, s->device);
    if (!e)
        return bv_error_setf(errp, ENOENT, "Cannot find device='%s' nor node-name='%s'",
                             s->device, s->device);
    struct bv_job *job = NULL;
    bv_drive_quiesce(e->drive);               /* the point in time */
    int r = bv_jobs_backup_prepare(app, e, s, &job, NULL, errp);
    if (r == 0)
        bv_job_start(job);
    bv_drive_unquiesce(e->drive);
    if (r == 0) {
        bv_job_query(job, info);
        bv_job_unref(job);
    }
    bv_registry_put(app, e);
    return r;
}

/* ---- the service's own jobs (prune) ------------------------------------------ */

/* "<type>-<N>" with N from the catalog's "job" sequence (never reused); an id
 * a client took for a backup job is skipped. */
static int task_id(struct bv_app *app, const char *type, char id[129], bv_error **errp)
{
    for (int tries = 0; tries < 16; tries++) {
        int64_t n = 0;
        if (bvdb_next_seq(app->db, "job", &n) < 0)
            return bv_error_setf(errp, EIO, "cannot allocate a job id in the catalog");
        snprintf(id, 129, "%s-%lld", type, (long long)n);
        if (bv_job_id_check(app->jobs, id, NULL) == 0)
            return 0;
    }
    return bv_error_setf(errp, EEXIST, "cannot find a free job id");
}

/* A replicate or import job's run: its failure's text becomes the job's error (the remote's
 * words, not a bare strerror). */
static int svc_task_run(struct bv_job *job, void *opaque, bv_error **errp)
{
    struct svc_job *sj = opaque;
    bv_error *e = NULL;
    int r = sj->task_run(job, sj->hook_opaque, &e);
    if (r < 0 && r != -ECANCELED) {
        pthread_mutex_lock(&svc_of(sj->app)->lock);
        snprintf(sj->fail_text, sizeof(sj->fail_text), "%.255s", e ? e->msg : strerror(-r));
        pthread_mutex_unlock(&svc_of(sj->app)->lock);
    }
    bv_error_propagate(errp, &e);
    return r;
}

int bv_jobs_task(struct bv_app *app, const struct bv_task_spec *s, struct bv_job_info *info,
                 bv_error **errp)
{
    char id[129];
    struct svc_job *sj = NULL;
    bool verify = strcmp(s->type, "verify") == 0;
    bool pull = strcmp(s->type, "backup") == 0;   /* a VM drive's pull (runtime/vmbackups.c) */
    int r = strcmp(s->type, "prune") == 0 || strcmp(s->type, "replicate") == 0 ||
            strcmp(s->type, "import") == 0 || verify || pull ? 0
          : bv_error_setf(errp, ENOTSUP, "no service job of type '%s'", s->type);
    if (r == 0)
        r = task_id(app, s->type, id, errp);
    if (r == 0 && !(sj = svc_job_new(app, s->type)))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r < 0) {
        if (s->release)
            s->release(s->opaque);
        return r;
    }
    sj->hook_release = s->release;
    sj->hook_opaque = s->opaque;
    snprintf(sj->id, sizeof(sj->id), "%s", id);
    if (s->params && strlen(s->params) < sizeof(sj->params))
        snprintf(sj->params, sizeof(sj->params), "%s", s->params);
    svc_job_link(sj);
    bool wrap = strcmp(s->type, "replicate") == 0 || strcmp(s->type, "import") == 0 || pull;
    sj->task_run = s->run;
    struct bv_prune_job_opts po = {
        .type = s->type, .run = wrap ? svc_task_run : s->run,
        .opaque = wrap ? (void *)sj : s->opaque,
        .release = svc_job_release, .release_opaque = sj,
    };
    struct bv_job_opts jo = {
        .id = id, .device = s->device, .auto_finalize = true, .auto_dismiss = true, .user = sj,
    };
    struct bv_job *job = NULL;
    struct bv_verify_job_opts vo = {
        .run = s->run, .opaque = s->opaque, .release = svc_job_release, .release_opaque = sj,
    };
    r = verify ? bv_verify_job_create(app->jobs, &jo, &vo, &job, errp)
               : bv_prune_job_create(app->jobs, &jo, &po, &job, errp);   /* failure: sj released */
    if (r < 0)
        return r;
    bv_job_start(job);
    bv_job_query(job, info);
    bv_job_unref(job);
    return 0;
}

/* ---- verbs and queries ----------------------------------------------------- */

int bv_jobs_verb(struct bv_app *app, const char *id, enum bv_job_verb verb, uint64_t speed,
                 struct bv_job_info *info, bv_error **errp)
{
    struct bv_job *job = bv_job_find(app->jobs, id);
    if (!job)
        return bv_error_setf(errp, ENODEV, "Job not found");
    int r;
    switch (verb) {
    case BV_JOB_VERB_CANCEL:    r = bv_job_cancel(job, errp); break;
    case BV_JOB_VERB_PAUSE:     r = bv_job_pause(job, errp); break;
    case BV_JOB_VERB_RESUME:    r = bv_job_resume(job, errp); break;
    case BV_JOB_VERB_FINALIZE:  r = bv_job_finalize(job, errp); break;
    case BV_JOB_VERB_DISMISS:   r = bv_job_dismiss(job, errp); break;
    case BV_JOB_VERB_SET_SPEED: r = bv_job_set_speed(job, speed, errp); break;
    default:
        r = bv_error_setf(errp, EINVAL, "Job '%s' in state '%s' cannot accept command verb "
                          "'%s'", id, "running", bv_job_verb_name(verb));
    }
    if (r == 0 && info)
        bv_job_query(job, info);
    bv_job_unref(job);
    return r;
}

void bv_jobs_view(struct bv_app *app, struct bv_job *job, struct bv_job_view *out)
{
    struct jobs_svc *svc = svc_of(app);
    struct svc_job *sj = bv_job_user(job);
    memset(out, 0, sizeof(*out));
    bv_job_query(job, &out->info);
    format_ms(out->info.created_ms, out->created_at);
    format_ms(out->info.started_ms, out->started_at);
    format_ms(out->info.finished_ms, out->finished_at);
    pthread_mutex_lock(&svc->lock);
    patch_error(sj, &out->info);
    snprintf(out->params, sizeof(out->params), "%s", sj->params);
    int64_t now = now_ms();
    if (now - sj->sample_ms >= 1000) {
        double dt = (double)(now - sj->sample_ms) / 1000.0;
        uint64_t off = out->info.offset;
        sj->rate = off >= sj->sample_offset ? (double)(off - sj->sample_offset) / dt : 0;
        sj->sample_offset = off;
        sj->sample_ms = now;
    }
    out->rate = out->info.status == BV_JOB_RUNNING ? sj->rate : 0;
    pthread_mutex_unlock(&svc->lock);
}

static void view_of_row(const struct bvdb_job *j, struct bv_job_view *v)
{
    memset(v, 0, sizeof(*v));
    struct bv_job_info *i = &v->info;
    snprintf(i->id, sizeof(i->id), "%s", j->job_id);
    i->type = strcmp(j->type, "backup") == 0 ? "backup" : strcmp(j->type, "verify") == 0
              ? "verify" : strcmp(j->type, "restore") == 0 ? "restore"
              : strcmp(j->type, "replicate") == 0 ? "replicate"
              : strcmp(j->type, "import") == 0 ? "import" : "prune";
    snprintf(i->device, sizeof(i->device), "%s", j->device ? j->device : "");
    int st = bv_job_status_parse(j->status);
    i->status = st < 0 ? BV_JOB_NULL : (enum bv_job_status)st;
    i->offset = j->offset;
    i->len = j->len;
    i->speed = j->speed;
    i->auto_finalize = j->auto_finalize;
    i->auto_dismiss = j->auto_dismiss;
    snprintf(i->error, sizeof(i->error), "%s", j->error ? j->error : "");
    snprintf(v->params, sizeof(v->params), "%s", j->params ? j->params : "{}");
    snprintf(v->created_at, sizeof(v->created_at), "%s", j->created_at ? j->created_at : "");
    snprintf(v->started_at, sizeof(v->started_at), "%s", j->started_at ? j->started_at : "");
    snprintf(v->finished_at, sizeof(v->finished_at), "%s", j->finished_at ? j->finished_at : "");
}

static int first_row(const struct bvdb_job *j, void *opaque)
{
    view_of_row(j, opaque);
    return 1;
}

int bv_jobs_get(struct bv_app *app, const char *id, struct bv_job_view *out, bv_error **errp)
{
    struct bv_job *job = bv_job_find(app->jobs, id);
    if (job) {
        bv_jobs_view(app, job, out);
        bv_job_unref(job);
        return 0;
    }
    struct bvdb_job_filter f = { .job_id = id, .status = "null", .limit = 1 };
    if (bvdb_job_list(app->db, &f, first_row, out) == 1)
        return 0;
    return bv_error_setf(errp, ENODEV, "Job not found");
}

struct list_acc {
    struct bv_job_view *v;
    size_t n, cap;
};

static int acc_push(struct list_acc *a, struct bv_job_view **slot)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        if (cap > 100000)
            return -E2BIG;
        struct bv_job_view *v = realloc(a->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    *slot = &a->v[a->n++];
    return 0;
}

static int acc_row(const struct bvdb_job *j, void *opaque)
{
    struct bv_job_view *slot;
    if (acc_push(opaque, &slot) < 0)
        return 1;
    view_of_row(j, slot);
    return 0;
}

size_t bv_jobs_list(struct bv_app *app, bool history, const char *status, const char *type,
                    struct bv_job_view **out)
{
    struct list_acc a = { NULL, 0, 0 };
    struct bv_job_info *live = NULL;
    size_t n = bv_job_list(app->jobs, &live);
    for (size_t i = 0; i < n; i++) {
        if ((status && strcmp(status, bv_job_status_name(live[i].status)) != 0) ||
            (type && strcmp(type, live[i].type) != 0))
            continue;
        struct bv_job *job = bv_job_find(app->jobs, live[i].id);
        struct bv_job_view *slot;
        if (job && acc_push(&a, &slot) == 0)
            bv_jobs_view(app, job, slot);
        if (job)
            bv_job_unref(job);
    }
    free(live);
    if (history && (!status || strcmp(status, "null") == 0)) {
        struct bvdb_job_filter f = { .status = "null", .type = type, .limit = 1000 };
        bvdb_job_list(app->db, &f, acc_row, &a);
    }
    *out = a.v;
    return a.n;
}

/* ---- metrics ---------------------------------------------------------------- */

static int count_line(const char *type, const char *status, int64_t n, void *opaque)
{
    fprintf(opaque, "blockvault_jobs{type=\"%s\",status=\"%s\"} %" PRId64 "\n", type, status,
            n);
    return 0;
}

void bv_jobs_metrics(struct bv_app *app, FILE *f)
{
    struct jobs_svc *svc = svc_of(app);
    fprintf(f, "# HELP blockvault_jobs Jobs by type and status (live and history).\n"
               "# TYPE blockvault_jobs gauge\n");
    bvdb_job_counts(app->db, count_line, f);
    pthread_mutex_lock(&svc->lock);
    uint64_t copied = svc->bytes_copied, hist[NBUCKETS + 1], count = svc->hist_count;
    double sum = svc->hist_sum;
    memcpy(hist, svc->hist, sizeof(hist));
    pthread_mutex_unlock(&svc->lock);
    fprintf(f, "# HELP blockvault_job_bytes_copied_total Bytes copied by jobs that ended since "
               "start.\n# TYPE blockvault_job_bytes_copied_total counter\n"
               "blockvault_job_bytes_copied_total %" PRIu64 "\n", copied);
    fprintf(f, "# HELP blockvault_backup_duration_seconds Durations of successful backup "
               "jobs.\n# TYPE blockvault_backup_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t b = 0; b < NBUCKETS; b++) {
        cum += hist[b];
        fprintf(f, "blockvault_backup_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                duration_buckets[b], cum);
    }
    cum += hist[NBUCKETS];
    fprintf(f, "blockvault_backup_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
               "blockvault_backup_duration_seconds_sum %g\n"
               "blockvault_backup_duration_seconds_count %" PRIu64 "\n", cum, sum, count);
}
