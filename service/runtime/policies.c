/*
 * Backup policies: see policies.h.  The scheduler thread is the only one
 * that runs policies; HTTP handlers change definitions and queue run-now
 * requests, then kick it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "bvdb/backups.h"
#include "bvdb/policies.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/drives.h"
#include "runtime/notify.h"
#include "runtime/policies.h"
#include "runtime/prune.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "runtime/verify.h"
#include "sched/cron.h"
#include "sched/retention.h"
#include "runtime/jobs.h"
#include "runtime/remotes.h"
#include "sched/tz.h"

#define TICK_MAX_MS     30000       /* re-check at least this often */
#define MAX_CATCHUP     200000      /* slots scanned to find the latest due one */
#define MAX_RUNNOW      64
#define JOB_WAIT_MS     (24u * 3600u * 1000u)

static const char *const keep_names[6] = {
    "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
};

struct bv_scheduler {
    struct bv_app *app;
    pthread_t thread;
    bool running;
    pthread_mutex_t lock;            /* queue, kicked, stop */
    pthread_cond_t cond;
    bool kicked, stop;
    char *queue[MAX_RUNNOW];         /* run-now requests (policy names) */
    size_t nqueue;
    struct bv_tz *tz;                /* the service's zone */
    /* metrics (lock) */
    uint64_t runs[4];                /* ok, failed, skipped, started */
};

/* ---- time ---------------------------------------------------------------------- */

static int64_t now_s(struct bv_app *app)
{
    return bv_app_now_ms(app) / 1000;
}

static void str_of_s(int64_t s, char out[32])
{
    bv_time_str(s * 1000, out);
}

/* The first slot of cron text strictly after `after` (unix s). */
static int next_slot(struct bv_scheduler *sc, const char *text, int64_t after, int64_t *out,
                     char *err, size_t errlen)
{
    struct bv_cron c;
    struct bv_cron_error ce;
    int r = bv_cron_parse(text, &c, &ce);
    if (r < 0) {
        snprintf(err, errlen, "%s (at position %zu)", ce.msg, ce.offset + 1);
        return r;
    }
    time_t t = 0;
    r = bv_cron_next(&c, sc->tz, (time_t)after, &t);
    if (r < 0) {
        snprintf(err, errlen, "the schedule never fires");
        return r;
    }
    *out = (int64_t)t;
    return 0;
}

/* ---- validation ------------------------------------------------------------------- */

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 128 || !((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= 'A' && n[0] <= 'Z')))
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

static int validate(struct bv_app *app, const struct bv_policy_spec *s, bv_error **errp)
{
    struct bv_scheduler *sc = app->scheduler;
    char err[300];
    int64_t t;
    if (!name_ok(s->name))
        return bv_error_setf(errp, EINVAL, "name: '%s' is not a valid policy name (a letter, "
                             "then letters, digits, '-', '.' or '_', at most 128)", s->name);
    if (s->ndrives == 0 || s->ndrives > BV_POLICY_MAX_DRIVES)
        return bv_error_setf(errp, EINVAL, "drives: name 1 to %d drives", BV_POLICY_MAX_DRIVES);
    for (size_t i = 0; i < s->ndrives; i++) {
        struct bv_drive_entry *e = bv_registry_get(app, s->drives[i]);
        struct bv_vm_drive *vm = e ? NULL : bv_vm_drives_get(app, s->drives[i]);
        bv_vm_drives_put(app, vm);                 /* VM drives have chains too */
        if (!e && !vm)
            return bv_error_setf(errp, EINVAL, "drives[%zu]: unknown drive '%s'", i,
                                 s->drives[i]);
        bv_registry_put(app, e);
        for (size_t k = 0; k < i; k++)
            if (strcmp(s->drives[k], s->drives[i]) == 0)
                return bv_error_setf(errp, EINVAL, "drives[%zu]: '%s' is listed twice", i,
                                     s->drives[i]);
    }
    if (next_slot(sc, s->schedule, 0, &t, err, sizeof(err)) < 0)
        return bv_error_setf(errp, EINVAL, "schedule: %s", err);
    if (s->full_every < 0)
        return bv_error_setf(errp, EINVAL, "full_every: must be 0 or more");
    struct bv_retention ret;
    for (int i = 0; i < 6; i++) {
        if (s->keep[i] < 0)
            return bv_error_setf(errp, EINVAL, "retention.%s: must be 0 or more", keep_names[i]);
        ret.keep[i] = s->keep[i];
    }
    bv_error *re = NULL;
    if (bv_retention_validate(&ret, &re) < 0) {
        int r = bv_error_setf(errp, EINVAL, "%s", re ? re->msg : "retention keeps nothing");
        bv_error_free(re);
        return r;
    }
    if (strcmp(s->verify, "none") != 0 && strcmp(s->verify, "after") != 0 &&
        next_slot(sc, s->verify, 0, &t, err, sizeof(err)) < 0)
        return bv_error_setf(errp, EINVAL, "verify: 'none', 'after' or a cron schedule: %s",
                             err);
    if (s->replicate_remote) {
        struct bv_remote_view rv;
        if (bv_remotes_get(app, s->replicate_remote, &rv, NULL) < 0)
            return bv_error_setf(errp, EINVAL, "replicate.remote: unknown remote '%s'",
                                 s->replicate_remote);
        if (s->lock_days > 0 && !rv.object_lock)
            return bv_error_setf(errp, EINVAL, "replicate.lock_days: remote '%s' was not made "
                                 "with object lock (create it with \"object_lock\":true and "
                                 "create_bucket)", s->replicate_remote);
    }
    return 0;
}

static char *replicate_json(const struct bv_policy_spec *s)
{
    if (!s->replicate_remote)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "remote", s->replicate_remote);
    if (s->keep_local >= 0)
        cJSON_AddNumberToObject(o, "keep_local", (double)s->keep_local);
    if (s->lock_days > 0) {
        cJSON_AddNumberToObject(o, "lock_days", (double)s->lock_days);
        cJSON_AddStringToObject(o, "lock_mode", s->lock_compliance ? "compliance" : "governance");
    }
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return t;
}

static char *drives_json(const struct bv_policy_spec *s)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < s->ndrives; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(s->drives[i]));
    char *t = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return t;
}

static char *retention_json(const struct bv_policy_spec *s)
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < 6; i++)
        cJSON_AddNumberToObject(o, keep_names[i], (double)s->keep[i]);
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return t;
}

static int store(struct bv_app *app, const struct bv_policy_spec *s, bool create, bv_error **errp)
{
    int r = validate(app, s, errp);
    if (r < 0)
        return r;
    char now[32];
    bv_app_now_str(app, now);
    char *dj = drives_json(s), *rj = retention_json(s), *pj = replicate_json(s);
    struct bvdb_policy p = {
        .replicate = pj,
        .name = s->name, .drives = dj, .schedule = s->schedule, .full_every = s->full_every,
        .retention = rj, .verify = s->verify, .enabled = s->enabled, .created_at = now,
        .updated_at = now, .last_slot = now_s(app), .verify_last_slot = now_s(app),
    };
    r = dj && rj ? (create ? bvdb_policy_insert(app->db, &p) : bvdb_policy_update(app->db, &p))
                 : -ENOMEM;
    free(dj);
    free(rj);
    free(pj);
    if (r == -EEXIST)
        return bv_error_setf(errp, EEXIST, "Policy '%s' already exists", s->name);
    if (r == -ENOENT)
        return bv_error_setf(errp, ENODEV, "Policy '%s' not found", s->name);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot record policy '%s' in the catalog", s->name);
    bv_scheduler_kick(app);
    return 0;
}

int bv_policy_create(struct bv_app *app, const struct bv_policy_spec *s, bv_error **errp)
{
    return store(app, s, true, errp);
}

int bv_policy_replace(struct bv_app *app, const struct bv_policy_spec *s, bv_error **errp)
{
    return store(app, s, false, errp);
}

int bv_policy_delete(struct bv_app *app, const char *name, bv_error **errp)
{
    int r = bvdb_policy_delete(app->db, name);
    if (r == -ENOENT)
        return bv_error_setf(errp, ENODEV, "Policy '%s' not found", name);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot remove policy '%s' from the catalog", name);
    return 0;
}

/* ---- views ----------------------------------------------------------------------- */

struct view_ctx {
    struct bv_app *app;
    struct bv_policy_view *v;
};

static int last_run_cb(const struct bvdb_policy_run *r, void *opaque)
{
    struct bv_policy_view *v = opaque;
    v->has_last_run = true;
    snprintf(v->last_started, sizeof(v->last_started), "%s", r->started_at ? r->started_at : "");
    snprintf(v->last_finished, sizeof(v->last_finished), "%s",
             r->finished_at ? r->finished_at : "");
    snprintf(v->last_outcome, sizeof(v->last_outcome), "%s", r->outcome ? r->outcome : "");
    return 1;
}

static void view_of(struct bv_app *app, const struct bvdb_policy *p, struct bv_policy_view *v)
{
    memset(v, 0, sizeof(*v));
    snprintf(v->name, sizeof(v->name), "%s", p->name);
    v->drives_json = strdup(p->drives ? p->drives : "[]");
    snprintf(v->schedule, sizeof(v->schedule), "%s", p->schedule);
    v->full_every = p->full_every;
    v->retention_json = strdup(p->retention ? p->retention : "{}");
    v->replicate_json = p->replicate ? strdup(p->replicate) : NULL;
    snprintf(v->verify, sizeof(v->verify), "%s", p->verify);
    v->enabled = p->enabled;
    snprintf(v->created_at, sizeof(v->created_at), "%s", p->created_at ? p->created_at : "");
    snprintf(v->updated_at, sizeof(v->updated_at), "%s", p->updated_at ? p->updated_at : "");
    int64_t next;
    char err[200];
    if (p->enabled && next_slot(app->scheduler, p->schedule, p->last_slot, &next, err,
                                sizeof(err)) == 0)
        str_of_s(next, v->next_run);
    bvdb_policy_run_list(app->db, p->name, 1, last_run_cb, v);
}

static void get_cb(const struct bvdb_policy *p, void *opaque)
{
    struct view_ctx *c = opaque;
    view_of(c->app, p, c->v);
}

int bv_policy_get(struct bv_app *app, const char *name, struct bv_policy_view *out,
                  bv_error **errp)
{
    struct view_ctx c = { app, out };
    if (bvdb_policy_get(app->db, name, get_cb, &c) < 0)
        return bv_error_setf(errp, ENODEV, "Policy '%s' not found", name);
    return 0;
}

struct list_acc {
    struct bv_app *app;
    struct bv_policy_view *v;
    size_t n, cap;
};

static int list_cb(const struct bvdb_policy *p, void *opaque)
{
    struct list_acc *a = opaque;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        struct bv_policy_view *v = realloc(a->v, cap * sizeof(*v));
        if (!v)
            return 1;
        a->v = v;
        a->cap = cap;
    }
    view_of(a->app, p, &a->v[a->n++]);
    return 0;
}

size_t bv_policy_list(struct bv_app *app, struct bv_policy_view **out)
{
    struct list_acc a = { app, NULL, 0, 0 };
    bvdb_policy_list(app->db, list_cb, &a);
    *out = a.v;
    return a.n;
}

void bv_policy_view_free(struct bv_policy_view *v)
{
    free(v->drives_json);
    free(v->retention_json);
    free(v->replicate_json);
}

/* ---- the policy's backups and retention ------------------------------------------- */

struct policy_def {
    char name[129];
    char schedule[256], verify[256];
    char **drives;
    size_t ndrives;
    int64_t full_every;
    struct bv_retention ret;
    bool enabled;
    int64_t last_slot, verify_last_slot;
    char replicate_remote[128];      /* "" : no replicate */
    struct bv_replicate_opts replicate;
};

static void def_free(struct policy_def *d)
{
    for (size_t i = 0; i < d->ndrives; i++)
        free(d->drives[i]);
    free(d->drives);
    d->drives = NULL;
    d->ndrives = 0;
}

static void def_cb(const struct bvdb_policy *p, void *opaque)
{
    struct policy_def *d = opaque;
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", p->name);
    snprintf(d->schedule, sizeof(d->schedule), "%s", p->schedule);
    snprintf(d->verify, sizeof(d->verify), "%s", p->verify);
    d->full_every = p->full_every;
    d->enabled = p->enabled;
    d->last_slot = p->last_slot;
    d->verify_last_slot = p->verify_last_slot;
    cJSON *a = cJSON_Parse(p->drives);
    int n = cJSON_GetArraySize(a);
    d->drives = calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
    for (int i = 0; d->drives && i < n; i++) {
        const cJSON *it = cJSON_GetArrayItem(a, i);
        if (cJSON_IsString(it))
            d->drives[d->ndrives++] = strdup(it->valuestring);
    }
    cJSON_Delete(a);
    cJSON *r = cJSON_Parse(p->retention);
    for (int i = 0; i < 6; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, keep_names[i]);
        d->ret.keep[i] = cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
    }
    cJSON_Delete(r);
    d->replicate.keep_local = -1;
    cJSON *rp = p->replicate ? cJSON_Parse(p->replicate) : NULL;
    const cJSON *rv = cJSON_GetObjectItemCaseSensitive(rp, "remote");
    if (cJSON_IsString(rv)) {
        snprintf(d->replicate_remote, sizeof(d->replicate_remote), "%s", rv->valuestring);
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(rp, "keep_local");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(rp, "lock_days");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(rp, "lock_mode");
        d->replicate.keep_local = cJSON_IsNumber(k) ? (int64_t)k->valuedouble : -1;
        d->replicate.lock_days = cJSON_IsNumber(l) ? (int64_t)l->valuedouble : 0;
        d->replicate.compliance = cJSON_IsString(m) && !strcmp(m->valuestring, "compliance");
    }
    cJSON_Delete(rp);
}

static int load_def(struct bv_app *app, const char *name, struct policy_def *d)
{
    return bvdb_policy_get(app->db, name, def_cb, d);
}

static time_t parse_time(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%S", &tm))
        return 0;
    return timegm(&tm);
}

/* The policy's own complete backups of one drive (or all: drive NULL). */
struct own {
    const char *policy, *drive;
    struct bv_backup_rec *v;
    size_t n, cap;
};

static int own_cb(const struct bvdb_backup *b, void *opaque)
{
    struct own *o = opaque;
    if (!b->policy || strcmp(b->policy, o->policy) != 0 ||
        (strcmp(b->status, "complete") != 0 && strcmp(b->status, "corrupt") != 0))
        return 0;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 32;
        struct bv_backup_rec *v = realloc(o->v, cap * sizeof(*v));
        if (!v)
            return 1;
        o->v = v;
        o->cap = cap;
    }
    struct bv_backup_rec *r = &o->v[o->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", b->id);
    snprintf(r->drive, sizeof(r->drive), "%s", b->drive_id);
    snprintf(r->created_at, sizeof(r->created_at), "%s", b->created_at ? b->created_at : "");
    r->seq = b->seq;
    return 0;
}

static void utc_local(void *opaque, time_t t, struct tm *out)
{
    struct bv_scheduler *sc = opaque;
    bv_tz_localtime(sc->tz, t, out);
}

/* Verdicts for the policy's backups of `drive` (NULL: all its drives). */
static int retention_of(struct bv_app *app, const struct policy_def *d, const char *drive,
                        struct own *o, struct bv_retention_verdict **verdicts)
{
    memset(o, 0, sizeof(*o));
    o->policy = d->name;
    for (size_t i = 0; i < d->ndrives; i++)
        if (!drive || strcmp(drive, d->drives[i]) == 0)
            bvdb_backup_list(app->db, d->drives[i], NULL, own_cb, o);
    struct bv_retention_backup *in = calloc(o->n ? o->n : 1, sizeof(*in));
    *verdicts = calloc(o->n ? o->n : 1, sizeof(**verdicts));
    if (!in || !*verdicts) {
        free(in);
        free(*verdicts);
        free(o->v);
        return -ENOMEM;
    }
    for (size_t i = 0; i < o->n; i++)
        in[i] = (struct bv_retention_backup){ o->v[i].id, o->v[i].drive,
                                              parse_time(o->v[i].created_at), o->v[i].seq };
    int r = bv_retention_apply(&d->ret, in, o->n, utc_local, app->scheduler, *verdicts, NULL);
    free(in);
    return r;
}

int bv_policy_retention(struct bv_app *app, const char *name, struct bv_retention_row **out,
                        size_t *n, bv_error **errp)
{
    struct policy_def d;
    if (load_def(app, name, &d) < 0)
        return bv_error_setf(errp, ENODEV, "Policy '%s' not found", name);
    struct own o;
    struct bv_retention_verdict *v = NULL;
    int r = retention_of(app, &d, NULL, &o, &v);
    def_free(&d);
    if (r < 0)
        return bv_error_setf(errp, -r, "cannot compute the retention");
    struct bv_retention_row *rows = calloc(o.n ? o.n : 1, sizeof(*rows));
    for (size_t i = 0; rows && i < o.n; i++) {
        size_t k = o.n - 1 - i;                    /* newest first */
        snprintf(rows[i].id, sizeof(rows[i].id), "%s", o.v[k].id);
        snprintf(rows[i].drive, sizeof(rows[i].drive), "%s", o.v[k].drive);
        snprintf(rows[i].created_at, sizeof(rows[i].created_at), "%s", o.v[k].created_at);
        rows[i].keep = v[k].keep;
        rows[i].reasons = v[k].reasons;
    }
    *out = rows;
    *n = rows ? o.n : 0;
    free(v);
    free(o.v);
    return rows ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
}

/* ---- a run ------------------------------------------------------------------------ */

struct run {
    struct bv_app *app;
    const struct policy_def *d;
    cJSON *made, *pruned, *errors;
    int ok_drives, skipped_drives;
    char reason[1024];
};

static void run_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_error(struct run *r, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    cJSON_AddItemToArray(r->errors, cJSON_CreateString(buf));
    log_warn("policy '%s': %s", r->d->name, buf);
}

static void emit_run(struct bv_app *app, const char *policy, const char *status)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "policy", policy);
    cJSON_AddStringToObject(o, "status", status);
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (t)
        bv_app_emit(app, "POLICY_RUN", t);
    free(t);
}

/* Wait until pred(arg) or the deadline, woken by every event. */
static bool wait_until(struct bv_app *app, bool (*pred)(struct bv_app *, const void *),
                       const void *arg, unsigned max_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pthread_mutex_lock(&app->events_lock);
        int64_t head = app->events_head;
        pthread_mutex_unlock(&app->events_lock);
        if (pred(app, arg))
            return true;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((unsigned)((now.tv_sec - start.tv_sec) * 1000) > max_ms ||
            atomic_load(&app->stopping))
            return false;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 200 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&app->events_lock);
        while (app->events_head == head && !atomic_load(&app->stopping))
            if (pthread_cond_timedwait(&app->events_cond, &app->events_lock, &dl) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&app->events_lock);
    }
}

static bool backup_done(struct bv_app *app, const void *arg)
{
    struct bv_backup_rec b;
    return bv_backups_get(app, arg, &b, NULL) < 0 || strcmp(b.status, "running") != 0;
}

static bool job_gone(struct bv_app *app, const void *arg)
{
    struct bv_job *j = bv_job_find(app->jobs, arg);
    if (!j)
        return true;
    struct bv_job_info i;
    bv_job_query(j, &i);
    bv_job_unref(j);
    return i.status == BV_JOB_CONCLUDED || i.status == BV_JOB_NULL;
}

/* full_every: a new chain once the current one has that many links. */
struct chain_count {
    char chain[BV_BACKUP_ID_MAX];
    int64_t links;
};

static int count_cb(const struct bvdb_backup *b, void *opaque)
{
    struct chain_count *c = opaque;
    if (strcmp(b->status, "complete") != 0 && strcmp(b->status, "corrupt") != 0)
        return 0;
    if (strcmp(b->chain_id, c->chain) != 0) {
        snprintf(c->chain, sizeof(c->chain), "%s", b->chain_id);
        c->links = 0;
    }
    c->links++;
    return 0;
}

static bool want_full(struct run *r, const char *drive)
{
    if (r->d->full_every <= 0)
        return false;
    struct chain_count c = { "", 0 };
    bvdb_backup_list(r->app->db, drive, NULL, count_cb, &c);
    return c.links == 0 || c.links >= r->d->full_every;
}

static void verify_backup(struct run *r, const char *bid)
{
    struct bv_verify_request vq = { .checksum = true, .backup = bid, .link_only = true };
    struct bv_job_info info;
    bv_error *e = NULL;
    if (bv_verify_start(r->app, &vq, &info, &e) < 0) {
        run_error(r, "verify of %s: %s", bid, e ? e->msg : "cannot start");
        bv_error_free(e);
        return;
    }
    wait_until(r->app, job_gone, info.id, JOB_WAIT_MS);
}

/* The new backup to the policy's remote (and its chain tiered): a replicate job, waited for. */
static void replicate_backup(struct run *r, const char *bid)
{
    struct bv_job_info info;
    bv_error *e = NULL;
    if (bv_remotes_replicate_opts(r->app, bid, r->d->replicate_remote, &r->d->replicate, &info,
                                  &e) < 0) {
        run_error(r, "replicate of %s to '%s': %s", bid, r->d->replicate_remote,
                  e ? e->msg : "cannot start");
        bv_error_free(e);
        return;
    }
    wait_until(r->app, job_gone, info.id, JOB_WAIT_MS);
    struct bv_job_view v;
    if (bv_jobs_get(r->app, info.id, &v, NULL) == 0 &&
        (v.info.failed || v.info.cancelled || v.info.error[0]))
        run_error(r, "replicate of %s to '%s': %s", bid, r->d->replicate_remote,
                  v.info.error[0] ? v.info.error : "failed");
}

static void backup_drive(struct run *r, const char *drive)
{
    struct bv_drive_entry *e = bv_registry_get(r->app, drive);
    struct bv_vm_drive *vm = e ? NULL : bv_vm_drives_get(r->app, drive);
    bv_vm_drives_put(r->app, vm);      /* a VM drive's running backup is EBUSY below */
    if (!e && !vm) {
        run_error(r, "drive '%s' does not exist", drive);
        return;
    }
    bool busy = e && bv_drive_busy(e->drive);
    bv_registry_put(r->app, e);
    if (busy) {
        r->skipped_drives++;
        snprintf(r->reason, sizeof(r->reason), "drive '%s' is busy", drive);
        return;
    }
    struct bv_backup_request rq = {
        .drive = drive, .incremental = !want_full(r, drive), .policy = r->d->name,
    };
    struct bv_backup_rec b;
    bv_error *err = NULL;
    int rc = bv_backups_create(r->app, &rq, &b, NULL, &err);
    if (rc == -EBUSY) {
        r->skipped_drives++;
        snprintf(r->reason, sizeof(r->reason), "drive '%s' is busy: %s", drive,
                 err ? err->msg : "");
        bv_error_free(err);
        return;
    }
    if (rc < 0) {
        run_error(r, "backup of '%s': %s", drive, err ? err->msg : strerror(-rc));
        bv_error_free(err);
        return;
    }
    wait_until(r->app, backup_done, b.id, JOB_WAIT_MS);
    if (bv_backups_get(r->app, b.id, &b, NULL) < 0 || strcmp(b.status, "complete") != 0) {
        run_error(r, "backup %s of '%s' failed", b.id, drive);
        return;
    }
    cJSON_AddItemToArray(r->made, cJSON_CreateString(b.id));
    r->ok_drives++;
    if (strcmp(r->d->verify, "after") == 0)
        verify_backup(r, b.id);
    if (r->d->replicate_remote[0])
        replicate_backup(r, b.id);
}

/* Prune what the rules drop, oldest first. */
static void apply_retention(struct run *r, const char *drive)
{
    struct own o;
    struct bv_retention_verdict *v = NULL;
    if (retention_of(r->app, r->d, drive, &o, &v) < 0) {
        run_error(r, "retention of '%s': out of memory", drive);
        return;
    }
    for (size_t i = 0; i < o.n; i++) {
        if (v[i].keep)
            continue;
        struct bv_job_info info;
        bv_error *e = NULL;
        if (bv_prune_start(r->app, o.v[i].id, &info, &e) < 0) {
            run_error(r, "prune of %s: %s", o.v[i].id, e ? e->msg : "refused");
            bv_error_free(e);
            continue;
        }
        wait_until(r->app, job_gone, info.id, JOB_WAIT_MS);
        struct bv_backup_rec gone;
        if (bv_backups_get(r->app, o.v[i].id, &gone, NULL) == 0)
            run_error(r, "prune of %s did not complete", o.v[i].id);
        else
            cJSON_AddItemToArray(r->pruned, cJSON_CreateString(o.v[i].id));
    }
    free(v);
    free(o.v);
}

static void finish_run(struct run *r, int64_t id, const char *started, const char *kind)
{
    struct bv_app *app = r->app;
    const char *outcome = cJSON_GetArraySize(r->errors) ? "failed"
                        : r->skipped_drives && !r->ok_drives ? "skipped" : "ok";
    char now[32];
    bv_app_now_str(app, now);
    char *made = cJSON_PrintUnformatted(r->made), *pruned = cJSON_PrintUnformatted(r->pruned);
    char *errors = cJSON_PrintUnformatted(r->errors);
    struct bvdb_policy_run row = {
        .id = id, .policy = r->d->name, .kind = kind, .started_at = started,
        .finished_at = now, .outcome = outcome,
        .reason = r->reason[0] ? r->reason : NULL, .backups_made = made,
        .backups_pruned = pruned, .errors = errors,
    };
    if (bvdb_policy_run_finish(app->db, &row) < 0)
        log_error("cannot record the end of a run of policy '%s'", r->d->name);
    free(made);
    free(pruned);
    free(errors);
    struct bv_scheduler *sc = app->scheduler;
    pthread_mutex_lock(&sc->lock);
    sc->runs[strcmp(outcome, "ok") == 0 ? 0 : strcmp(outcome, "failed") == 0 ? 1 : 2]++;
    pthread_mutex_unlock(&sc->lock);
    emit_run(app, r->d->name, outcome);
}

/* One run of the policy (kind "backup" or "verify"). */
static void run_policy(struct bv_app *app, const struct policy_def *d, bool verify_only)
{
    struct run r = { .app = app, .d = d };
    r.made = cJSON_CreateArray();
    r.pruned = cJSON_CreateArray();
    r.errors = cJSON_CreateArray();
    char started[32];
    bv_app_now_str(app, started);
    const char *kind = verify_only ? "verify" : "backup";
    struct bvdb_policy_run row = {
        .policy = d->name, .kind = kind, .started_at = started, .outcome = "running",
    };
    int64_t id = 0;
    bvdb_policy_run_insert(app->db, &row, &id);
    emit_run(app, d->name, "started");
    for (size_t i = 0; i < d->ndrives && !atomic_load(&app->stopping); i++) {
        if (verify_only) {
            struct bv_verify_request vq = { .checksum = true, .drive = d->drives[i] };
            struct bv_job_info info;
            bv_error *e = NULL;
            if (bv_verify_start(app, &vq, &info, &e) < 0) {
                run_error(&r, "verify of '%s': %s", d->drives[i], e ? e->msg : "refused");
                bv_error_free(e);
            } else {
                wait_until(app, job_gone, info.id, JOB_WAIT_MS);
                r.ok_drives++;
            }
            continue;
        }
        backup_drive(&r, d->drives[i]);
        apply_retention(&r, d->drives[i]);
    }
    finish_run(&r, id, started, kind);
    cJSON_Delete(r.made);
    cJSON_Delete(r.pruned);
    cJSON_Delete(r.errors);
}

/* ---- the scheduler ----------------------------------------------------------------- */

/* The latest slot of text in (after, now], or 0 if none is due. */
static int64_t due_slot(struct bv_scheduler *sc, const char *text, int64_t after, int64_t now)
{
    int64_t slot = 0, t = after;
    char err[200];
    for (int i = 0; i < MAX_CATCHUP; i++) {
        int64_t next;
        if (next_slot(sc, text, t, &next, err, sizeof(err)) < 0 || next > now)
            break;
        slot = t = next;
    }
    return slot;
}

/* protection_stale webhooks (runtime/notify.h): the policy's interval is the
 * time between its next two slots. */
static void check_stale(struct bv_scheduler *sc, const struct policy_def *d)
{
    int64_t now = now_s(sc->app), a, b;
    char err[200];
    if (next_slot(sc, d->schedule, now, &a, err, sizeof(err)) == 0 &&
        next_slot(sc, d->schedule, a, &b, err, sizeof(err)) == 0)
        bv_notify_check_stale(sc->app, d->name, d->drives, d->ndrives, b - a, now);
}

/* Run every due policy once; *wake_ms: how long until the next slot. */
struct tick {
    struct bv_scheduler *sc;
    char **names;
    size_t n, cap;
};

static int name_cb(const struct bvdb_policy *p, void *opaque)
{
    struct tick *t = opaque;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        char **v = realloc(t->names, cap * sizeof(*v));
        if (!v)
            return 1;
        t->names = v;
        t->cap = cap;
    }
    t->names[t->n++] = strdup(p->name);
    return 0;
}

static int64_t tick(struct bv_scheduler *sc)
{
    struct bv_app *app = sc->app;
    struct tick t = { sc, NULL, 0, 0 };
    bvdb_policy_list(app->db, name_cb, &t);
    int64_t wake = now_s(app) + TICK_MAX_MS / 1000;
    for (size_t i = 0; i < t.n && !atomic_load(&app->stopping); i++) {
        struct policy_def d;
        if (!t.names[i] || load_def(app, t.names[i], &d) < 0)
            continue;
        int64_t now = now_s(app);
        if (d.enabled) {
            int64_t slot = due_slot(sc, d.schedule, d.last_slot, now);
            if (slot) {
                bvdb_policy_set_slots(app->db, d.name, slot, d.verify_last_slot);
                run_policy(app, &d, false);
            }
            bool vcron = strcmp(d.verify, "none") != 0 && strcmp(d.verify, "after") != 0;
            int64_t vslot = vcron ? due_slot(sc, d.verify, d.verify_last_slot, now_s(app)) : 0;
            if (vslot) {
                bvdb_policy_set_slots(app->db, d.name, slot ? slot : d.last_slot, vslot);
                run_policy(app, &d, true);
            }
            check_stale(sc, &d);
            int64_t next;
            char err[200];
            if (next_slot(sc, d.schedule, slot ? slot : d.last_slot, &next, err,
                          sizeof(err)) == 0 && next < wake)
                wake = next;
        }
        def_free(&d);
    }
    for (size_t i = 0; i < t.n; i++)
        free(t.names[i]);
    free(t.names);
    return wake;
}

static void run_queued(struct bv_scheduler *sc)
{
    for (;;) {
        pthread_mutex_lock(&sc->lock);
        char *name = sc->nqueue ? sc->queue[0] : NULL;
        if (name) {
            memmove(sc->queue, sc->queue + 1, (sc->nqueue - 1) * sizeof(sc->queue[0]));
            sc->nqueue--;
        }
        pthread_mutex_unlock(&sc->lock);
        if (!name)
            return;
        struct policy_def d;
        if (load_def(sc->app, name, &d) == 0) {
            run_policy(sc->app, &d, false);
            def_free(&d);
        }
        free(name);
    }
}

static void *scheduler_main(void *opaque)
{
    struct bv_scheduler *sc = opaque;
    struct bv_app *app = sc->app;
    for (;;) {
        pthread_mutex_lock(&sc->lock);
        bool stop = sc->stop;
        sc->kicked = false;
        pthread_mutex_unlock(&sc->lock);
        if (stop)
            break;
        run_queued(sc);
        int64_t wake_s = tick(sc);
        run_queued(sc);
        /* sleep until the next slot by the service clock (a test clock
         * moves only by kicks), at most TICK_MAX_MS */
        int64_t wait_ms = (wake_s - now_s(app)) * 1000;
        if (wait_ms < 50)
            wait_ms = 50;
        if (wait_ms > TICK_MAX_MS || atomic_load(&app->test_now_ms))
            wait_ms = TICK_MAX_MS;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += wait_ms / 1000;
        dl.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&sc->lock);
        while (!sc->kicked && !sc->stop)
            if (pthread_cond_timedwait(&sc->cond, &sc->lock, &dl) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&sc->lock);
    }
    return NULL;
}

int bv_scheduler_start(struct bv_app *app)
{
    struct bv_scheduler *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return -ENOMEM;
    sc->app = app;
    pthread_mutex_init(&sc->lock, NULL);
    pthread_cond_init(&sc->cond, NULL);
    char err[256];
    const char *zone = app->cfg.timezone[0] ? app->cfg.timezone : "UTC";
    if (bv_tz_load(zone, &sc->tz, err, sizeof(err)) < 0) {
        log_error("--timezone %s: %s", zone, err);
        free(sc);
        return -EINVAL;
    }
    app->scheduler = sc;
    char now[32];
    bvdb_now(now);
    bvdb_policy_run_interrupt(app->db, now);
    if (pthread_create(&sc->thread, NULL, scheduler_main, sc) != 0)
        return -EAGAIN;
    sc->running = true;
    return 0;
}

void bv_scheduler_stop(struct bv_app *app)
{
    struct bv_scheduler *sc = app->scheduler;
    if (!sc)
        return;
    pthread_mutex_lock(&sc->lock);
    sc->stop = true;
    pthread_cond_broadcast(&sc->cond);
    pthread_mutex_unlock(&sc->lock);
    if (sc->running)
        pthread_join(sc->thread, NULL);
    for (size_t i = 0; i < sc->nqueue; i++)
        free(sc->queue[i]);
    bv_tz_free(sc->tz);
    pthread_cond_destroy(&sc->cond);
    pthread_mutex_destroy(&sc->lock);
    free(sc);
    app->scheduler = NULL;
}

void bv_scheduler_kick(struct bv_app *app)
{
    struct bv_scheduler *sc = app->scheduler;
    if (!sc)
        return;
    pthread_mutex_lock(&sc->lock);
    sc->kicked = true;
    pthread_cond_broadcast(&sc->cond);
    pthread_mutex_unlock(&sc->lock);
}

int bv_policy_run_now(struct bv_app *app, const char *name, bv_error **errp)
{
    struct policy_def d;
    if (load_def(app, name, &d) < 0)
        return bv_error_setf(errp, ENODEV, "Policy '%s' not found", name);
    def_free(&d);
    struct bv_scheduler *sc = app->scheduler;
    int r = 0;
    pthread_mutex_lock(&sc->lock);
    if (sc->nqueue == MAX_RUNNOW)
        r = bv_error_setf(errp, EBUSY, "too many runs queued; try again later");
    else if (!(sc->queue[sc->nqueue] = strdup(name)))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    else
        sc->nqueue++;
    sc->kicked = true;
    pthread_cond_broadcast(&sc->cond);
    pthread_mutex_unlock(&sc->lock);
    return r;
}

/* ---- metrics ------------------------------------------------------------------------ */

struct newest {
    struct bv_app *app;
    FILE *f;
};

static int newest_cb(const struct bvdb_chain *c, void *opaque)
{
    (void)c;
    (void)opaque;
    return 0;
}

static int newest_backup_cb(const struct bvdb_backup *b, void *opaque)
{
    time_t *t = opaque;
    if (strcmp(b->status, "complete") == 0) {
        time_t c = parse_time(b->completed_at ? b->completed_at : b->created_at);
        if (c > *t)
            *t = c;
    }
    return 0;
}

void bv_policy_metrics(struct bv_app *app, FILE *f)
{
    struct bv_scheduler *sc = app->scheduler;
    uint64_t runs[3] = { 0, 0, 0 };
    if (sc) {
        pthread_mutex_lock(&sc->lock);
        memcpy(runs, sc->runs, sizeof(runs));
        pthread_mutex_unlock(&sc->lock);
    }
    fprintf(f, "# HELP blockvault_policy_runs_total Policy runs since start, by outcome.\n"
               "# TYPE blockvault_policy_runs_total counter\n"
               "blockvault_policy_runs_total{outcome=\"ok\"} %" PRIu64 "\n"
               "blockvault_policy_runs_total{outcome=\"failed\"} %" PRIu64 "\n"
               "blockvault_policy_runs_total{outcome=\"skipped\"} %" PRIu64 "\n",
            runs[0], runs[1], runs[2]);
    fprintf(f, "# HELP blockvault_newest_backup_age_seconds Age of each drive's newest "
               "complete backup.\n# TYPE blockvault_newest_backup_age_seconds gauge\n");
    struct bv_drive_entry **all = NULL;
    size_t n = bv_registry_all(app, &all);
    int64_t now = now_s(app);
    for (size_t i = 0; i < n; i++) {
        time_t t = 0;
        bvdb_backup_list(app->db, all[i]->id, NULL, newest_backup_cb, &t);
        if (t)
            fprintf(f, "blockvault_newest_backup_age_seconds{drive=\"%s\"} %" PRId64 "\n",
                    all[i]->id, now - (int64_t)t);
        bv_registry_put(app, all[i]);
    }
    free(all);
    (void)newest_cb;
}
