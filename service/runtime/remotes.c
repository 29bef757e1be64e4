/*
 * Remotes and replicate jobs (see remotes.h for the contract and the locking).
 *
 * Replicate, on a worker: under backups_lock, the point's links (the point and its parents
 * down to the full) are resolved and each link the remote lacks is opened (the descriptor
 * keeps the immutable file readable even if a prune removes its name meanwhile); then,
 * without the lock, each is uploaded (multipart above 16 MiB, 4 parts in flight), checked
 * with a HEAD (size) and recorded as present; last the chain's manifest is rewritten from
 * the catalog's present links, and a copy of the catalog goes up as catalog.sqlite at the
 * bucket's root.  A link already present is neither opened nor uploaded.
 * With a policy's options, a replicate then tiers the chain (keep_local) and sets object-lock
 * retentions on what it uploaded (lock_days).
 *
 * The remote side of a prune is in remote-prune.c, import and remote-only drives in
 * remote-import.c (shared helpers: remotes-int.h).
 */
#include "runtime/remotes.h"
#include "runtime/secrets.h"
#include "runtime/remotes-int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "bv/path.h"
#include "bvdb/backups.h"
#include "bvdb/policies.h"
#include "bvdb/remotes.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/jobs.h"
#include "runtime/upkeep.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "s3/s3.h"

#define SECRET_MAX 256
#define MAX_LINKS 4096

/* ---- names and the secret file ---- */

static int check_name(const char *name, bv_error **errp)
{
    return bv_secret_name_check(name, BV_REMOTE_NAME_MAX, errp);
}

static int read_secret(struct bv_app *app, const char *name, char out[SECRET_MAX],
                       bv_error **errp)
{
    int r = bv_secret_read(app, "remotes", name, out, SECRET_MAX);
    if (r == -EIO)
        return bv_error_setf(errp, EIO, "the secret key file of remote '%s' is empty", name);
    if (r < 0)
        return bv_error_setf(errp, -r, "cannot read the secret key of remote '%s': %s", name,
                             strerror(-r));
    return 0;
}

/* ---- views ---- */

static void view_of(const struct bvdb_remote *r, struct bv_remote_view *v)
{
    memset(v, 0, sizeof(*v));
    snprintf(v->name, sizeof(v->name), "%s", r->name);
    snprintf(v->endpoint, sizeof(v->endpoint), "%s", r->endpoint);
    snprintf(v->bucket, sizeof(v->bucket), "%s", r->bucket);
    snprintf(v->region, sizeof(v->region), "%s", r->region);
    snprintf(v->access_key, sizeof(v->access_key), "%s", r->access_key);
    snprintf(v->created_at, sizeof(v->created_at), "%s", r->created_at ? r->created_at : "");
    v->path_style = r->path_style;
    v->object_lock = r->object_lock;
}

static int get_cb(const struct bvdb_remote *r, void *opaque)
{
    view_of(r, opaque);
    return 0;
}

int bv_remotes_get(struct bv_app *app, const char *name, struct bv_remote_view *out,
                   bv_error **errp)
{
    int r = bvdb_remote_get(app->db, name, get_cb, out);
    if (r == -ENOENT)
        return bv_error_setf(errp, ENOENT, "Remote '%s' not found", name);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot read remote '%s' from the catalog", name);
    return 0;
}

struct list_acc {
    struct bv_remote_view *v;
    size_t n, cap;
    bool oom;
};

static int list_cb(const struct bvdb_remote *r, void *opaque)
{
    struct list_acc *a = opaque;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        struct bv_remote_view *nv = realloc(a->v, cap * sizeof(*nv));
        if (!nv) {
            a->oom = true;
            return 1;
        }
        a->v = nv;
        a->cap = cap;
    }
    view_of(r, &a->v[a->n++]);
    return 0;
}

int bv_remotes_list(struct bv_app *app, struct bv_remote_view **out)
{
    struct list_acc a = {0};
    int r = bvdb_remote_list(app->db, list_cb, &a);
    if (r < 0 || a.oom) {
        free(a.v);
        *out = NULL;
        return r < 0 ? r : -ENOMEM;
    }
    *out = a.v;
    return (int)a.n;
}

/* ---- create / delete ---- */

static int check_remote(const struct bv_remote_spec *s, bv_error **errp)
{
    struct bv_s3_config cfg = {
        .endpoint = s->endpoint, .bucket = s->bucket, .region = s->region,
        .access_key = s->access_key, .secret_key = s->secret_key, .retries = 1,
        .timeout_s = 10,
    };
    struct bv_s3 *s3 = NULL;
    int r = bv_s3_new(&cfg, &s3, errp);
    if (r == 0)
        r = bv_s3_check_bucket(s3, s->create_bucket, s->object_lock, errp);
    bv_s3_free(s3);
    if (r == -ENOENT && errp && *errp)
        bv_error_prepend(errp, "bucket check");
    /* any failure to reach or use the remote is a bad reference in the body (400) */
    if (r < 0 && r != -EACCES && r != -ENOENT && r != -ENOMEM && errp && *errp)
        (*errp)->err = EINVAL;
    return r < 0 && r != -EACCES && r != -ENOENT && r != -ENOMEM ? -EINVAL : r;
}

int bv_remotes_create(struct bv_app *app, const struct bv_remote_spec *s,
                      struct bv_remote_view *out, bv_error **errp)
{
    int r = check_name(s->name, errp);
    if (r == 0 && !s->path_style)
        r = bv_error_setf(errp, EINVAL, "path_style: only path-style addressing is supported "
                          "(true)");
    if (r == 0 && strlen(s->secret_key) >= SECRET_MAX)
        r = bv_error_setf(errp, EINVAL, "secret_key: at most %d characters", SECRET_MAX - 1);
    if (r == 0 && strlen(s->access_key) >= sizeof(out->access_key))
        r = bv_error_setf(errp, EINVAL, "access_key: at most %zu characters",
                          sizeof(out->access_key) - 1);
    if (r == 0 && strlen(s->endpoint) >= sizeof(out->endpoint))
        r = bv_error_setf(errp, EINVAL, "endpoint: at most %zu characters",
                          sizeof(out->endpoint) - 1);
    if (r == 0 && bvdb_remote_get(app->db, s->name, get_cb, out) == 0)
        r = bv_error_setf(errp, EEXIST, "Remote '%s' already exists", s->name);
    if (r == 0)
        r = check_remote(s, errp);         /* before any lock: talks to the remote */
    if (r < 0)
        return r;
    char now[32];
    bv_app_now_str(app, now);
    struct bvdb_remote row = {
        .name = s->name, .endpoint = s->endpoint, .bucket = s->bucket,
        .region = s->region && s->region[0] ? s->region : "us-east-1",
        .access_key = s->access_key, .path_style = true, .object_lock = s->object_lock,
        .created_at = now,
    };
    pthread_mutex_lock(&app->backups_lock);
    if (bvdb_remote_get(app->db, s->name, get_cb, out) == 0)
        r = bv_error_setf(errp, EEXIST, "Remote '%s' already exists", s->name);
    if (r == 0)
        r = bv_secret_write(app, "remotes", s->name, s->secret_key, errp);
    if (r == 0) {
        r = bvdb_remote_insert(app->db, &row);
        if (r < 0) {
            bv_secret_remove(app, "remotes", s->name);
            r = r == -EEXIST ? bv_error_setf(errp, EEXIST, "Remote '%s' already exists", s->name)
                             : bv_error_setf(errp, EIO, "cannot record remote '%s'", s->name);
        }
    }
    pthread_mutex_unlock(&app->backups_lock);
    if (r == 0)
        view_of(&row, out);
    return r;
}

struct only_there {
    struct bv_app *app;
    char bid[BV_BACKUP_ID_MAX];
    int n;
};

static int only_cb(const struct bvdb_remote_link *l, void *opaque)
{
    struct only_there *o = opaque;
    if (strcmp(l->state, "present") != 0)
        return 0;
    struct bv_backup_rec b;
    if (bv_backups_get(o->app, l->backup_id, &b, NULL) < 0)
        return 0;                      /* the backup is gone: nothing lives there */
    struct stat st;
    if (bvdb_backup_get_local(o->app->db, l->backup_id) == 0 ||
        bv_path_stat(o->app->root, b.file, &st, NULL) < 0) {
        if (o->n++ == 0)
            snprintf(o->bid, sizeof(o->bid), "%s", l->backup_id);
    }
    return 0;
}

struct policy_q {
    const char *remote;
    char *out;
    size_t len;
    bool found;
};

static int policy_cb(const struct bvdb_policy *p, void *opaque)
{
    struct policy_q *q = opaque;
    cJSON *rp = p->replicate ? cJSON_Parse(p->replicate) : NULL;
    const char *rem = bv_remote_jstr(rp, "remote");
    if (rem && strcmp(rem, q->remote) == 0) {
        q->found = true;
        snprintf(q->out, q->len, "%s", p->name);
    }
    cJSON_Delete(rp);
    return q->found;
}

/* The first policy whose "replicate" names remote. */
static bool policy_of_remote(struct bv_app *app, const char *remote, char *out, size_t len)
{
    struct policy_q q = { remote, out, len, false };
    bvdb_policy_list(app->db, policy_cb, &q);
    return q.found;
}

int bv_remotes_delete(struct bv_app *app, const char *name, bv_error **errp)
{
    struct bv_remote_view v;
    pthread_mutex_lock(&app->backups_lock);
    int r = bv_remotes_get(app, name, &v, errp);
    struct only_there o = {.app = app};
    if (r == 0)
        bvdb_remote_link_list(app->db, name, NULL, only_cb, &o);
    if (r == 0 && o.n > 0)
        r = bv_error_setf(errp, EBUSY, "Remote '%s' holds the only copy of %d backup link(s) "
                          "(e.g. '%s'); delete those backups first", name, o.n, o.bid);
    char until[32], policy[160];
    if (r == 0 && policy_of_remote(app, name, policy, sizeof(policy)))
        r = bv_error_setf(errp, EBUSY, "Policy '%s' replicates to remote '%s': change or delete "
                          "the policy first", policy, name);
    if (r == 0 && bv_remotes_locked_until(app, name, NULL, until))
        r = bv_error_setf(errp, EBUSY, "Remote '%s' holds backup links under object lock until "
                          "%.10s (%s); it can be deleted after that date", name, until, until);
    if (r == 0 && bvdb_remote_delete(app->db, name) < 0)
        r = bv_error_setf(errp, EIO, "cannot delete remote '%s' from the catalog", name);
    if (r == 0)
        bv_secret_remove(app, "remotes", name);
    pthread_mutex_unlock(&app->backups_lock);
    return r;
}

int bv_remotes_client(struct bv_app *app, const char *name, struct bv_s3 **out,
                      bv_error **errp)
{
    struct bv_remote_view v;
    char secret[SECRET_MAX];
    int r = bv_remotes_get(app, name, &v, errp);
    if (r == 0)
        r = read_secret(app, name, secret, errp);
    if (r < 0)
        return r;
    struct bv_s3_config cfg = {
        .endpoint = v.endpoint, .bucket = v.bucket, .region = v.region,
        .access_key = v.access_key, .secret_key = secret, .retries = -1,
    };
    r = bv_s3_new(&cfg, out, errp);
    explicit_bzero(secret, sizeof(secret));
    return r;
}

const char *bv_remote_jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- times ---- */

/* unix seconds as RFC 3339 UTC ("2026-12-03T19:00:00Z") */
static void iso_time(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* RFC 3339 UTC (seconds, optional fraction, 'Z') to unix seconds; -1 if malformed. */
static int64_t parse_iso(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *e = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!e)
        return -1;
    return (int64_t)timegm(&tm);
}

/* ---- object lock ---- */

struct lock_q {
    int64_t now, until;
    char text[32];
};

static int lock_cb(const struct bvdb_remote_link *l, void *opaque)
{
    struct lock_q *q = opaque;
    int64_t t = l->locked_until ? parse_iso(l->locked_until) : -1;
    if (t > q->now && t > q->until) {
        q->until = t;
        snprintf(q->text, sizeof(q->text), "%s", l->locked_until);
    }
    return 0;
}

bool bv_remotes_locked_until(struct bv_app *app, const char *remote, const char *bid,
                             char until[32])
{
    struct lock_q q = { bv_app_now_ms(app) / 1000, -1, "" };
    bvdb_remote_link_list(app->db, remote, bid, lock_cb, &q);
    if (q.until < 0)
        return false;
    snprintf(until, 32, "%s", q.text);
    return true;
}

/* ---- a backup's copies ---- */

static int copies_cb(const struct bvdb_remote_link *l, void *opaque)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "remote", l->remote);
    cJSON_AddStringToObject(o, "state", l->state);
    if (l->locked_until)
        cJSON_AddStringToObject(o, "locked_until", l->locked_until);
    cJSON_AddItemToArray(opaque, o);
    return 0;
}

char *bv_remotes_of_backup_json(struct bv_app *app, const char *bid)
{
    cJSON *arr = cJSON_CreateArray();
    bvdb_remote_link_list(app->db, NULL, bid, copies_cb, arr);
    char *text = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return text;
}

/* ---- replicate ---- */

struct part_rec {
    unsigned part;
    char etag[128];
    uint64_t size;
};

struct link {
    struct bv_backup_rec rec;
    char key[1200];
    int fd;                        /* -1: already present (or not opened) */
    uint64_t size;
    /* an interrupted multipart upload to resume (from the catalog) */
    char upload_id[256];
    struct part_rec *parts;        /* acknowledged parts of upload_id */
    size_t nparts;
    uint64_t done;                 /* their bytes */
    char locked_until[32];         /* "" : no retention set */
};

struct replicate {
    struct bv_app *app;
    char bid[BV_BACKUP_ID_MAX];
    char remote[BV_REMOTE_NAME_MAX + 1];
    struct bv_replicate_opts opts;
    char job_id[129];
};

void bv_remote_key_of(const struct bv_backup_rec *b, char *out, size_t len)
{
    const char *base = strrchr(b->file, '/');
    snprintf(out, len, "%s/%s/%s", b->drive, b->chain, base ? base + 1 : b->file);
}

struct present_q {
    const char *bid;
    bool present;
};

static int present_cb(const struct bvdb_remote_link *l, void *opaque)
{
    struct present_q *q = opaque;
    if (!strcmp(l->state, "present"))
        q->present = true;
    return 0;
}

bool bv_remote_link_present(struct bv_app *app, const char *remote, const char *bid)
{
    struct present_q q = {bid, false};
    bvdb_remote_link_list(app->db, remote, bid, present_cb, &q);
    return q.present;
}

/* The point's links, the full first, each missing one opened.  Under backups_lock. */
static int resolve_locked(struct replicate *rp, struct link **out, size_t *n, bv_error **errp)
{
    struct link *v = calloc(MAX_LINKS, sizeof(*v));
    if (!v)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    size_t k = 0;
    char cur[BV_BACKUP_ID_MAX];
    snprintf(cur, sizeof(cur), "%s", rp->bid);
    int r = 0;
    while (r == 0 && cur[0]) {
        if (k == MAX_LINKS) {
            r = bv_error_setf(errp, E2BIG, "chain of '%s' is longer than %d links", rp->bid,
                              MAX_LINKS);
            break;
        }
        struct link *l = &v[k];
        l->fd = -1;
        r = bv_backups_get(rp->app, cur, &l->rec, errp);
        if (r < 0)
            break;
        if (strcmp(l->rec.status, "complete") != 0) {
            r = bv_error_setf(errp, EBUSY, "Backup '%s' is %s, not complete: only complete "
                              "links are replicated", cur, l->rec.status);
            break;
        }
        bv_remote_key_of(&l->rec, l->key, sizeof(l->key));
        k++;
        snprintf(cur, sizeof(cur), "%s", l->rec.parent);
    }
    /* full first */
    for (size_t i = 0; i < k / 2; i++) {
        struct link t = v[i];
        v[i] = v[k - 1 - i];
        v[k - 1 - i] = t;
    }
    for (size_t i = 0; r == 0 && i < k; i++) {
        if (bv_remote_link_present(rp->app, rp->remote, v[i].rec.id))
            continue;
        if (bvdb_backup_get_local(rp->app->db, v[i].rec.id) == 0) {
            r = bv_error_setf(errp, EBUSY, "Backup '%s' lives only on a remote (its local file "
                              "is gone): this build does not copy it to another remote",
                              v[i].rec.id);
            break;
        }
        r = bv_path_open(rp->app->root, NULL, v[i].rec.file, 0, O_RDONLY, 0, &v[i].fd, NULL,
                         errp);
        struct stat st;
        if (r == 0 && fstat(v[i].fd, &st) < 0)
            r = bv_error_setf(errp, errno, "cannot stat '%s'", v[i].rec.file);
        if (r == 0)
            v[i].size = (uint64_t)st.st_size;
    }
    if (r < 0) {
        for (size_t i = 0; i < k; i++)
            if (v[i].fd >= 0)
                close(v[i].fd);
        free(v);
        return r;
    }
    *out = v;
    *n = k;
    return 0;
}

static void record(struct bv_app *app, const char *remote, const struct link *l,
                   const char *state)
{
    char now[32];
    bv_app_now_str(app, now);
    struct bvdb_remote_link row = {
        .remote = remote, .backup_id = l->rec.id, .key = l->key, .state = state,
        .size = (int64_t)l->size, .updated_at = now,
        .locked_until = l->locked_until[0] ? l->locked_until : NULL,
        .upload_id = strcmp(state, "present") && l->upload_id[0] ? l->upload_id : NULL,
    };
    pthread_mutex_lock(&app->backups_lock);
    bvdb_remote_link_put(app->db, &row);
    pthread_mutex_unlock(&app->backups_lock);
}

/* From the upload threads: bv_job_progress_add is atomic. */
static void on_progress(void *opaque, uint64_t bytes)
{
    bv_job_progress_add(opaque, bytes);
}

/* ---- resuming an interrupted upload ---- */

struct resume_ctx {
    struct replicate *rp;
    struct link *l;
};

static int upload_id_cb(const struct bvdb_remote_link *row, void *opaque)
{
    struct link *l = opaque;
    if (row->upload_id && strcmp(row->state, "present") != 0)
        snprintf(l->upload_id, sizeof(l->upload_id), "%s", row->upload_id);
    return 0;
}

static int part_cb(const struct bvdb_remote_part *p, void *opaque)
{
    struct link *l = opaque;
    struct part_rec *np = realloc(l->parts, (l->nparts + 1) * sizeof(*np));
    if (!np || !p->etag || strlen(p->etag) >= sizeof(np->etag) || p->part < 1)
        return np ? (l->parts = np, 0) : 1;
    l->parts = np;
    np[l->nparts].part = (unsigned)p->part;
    snprintf(np[l->nparts].etag, sizeof(np->etag), "%s", p->etag);
    np[l->nparts].size = (uint64_t)p->size;
    l->done += (uint64_t)p->size;
    l->nparts++;
    return 0;
}

/* What an earlier run of this link left: its upload id and acknowledged parts. */
static void load_resume(struct bv_app *app, const char *remote, struct link *l)
{
    bvdb_remote_link_list(app->db, remote, l->rec.id, upload_id_cb, l);
    if (l->upload_id[0])
        bvdb_remote_part_list(app->db, remote, l->rec.id, l->upload_id, part_cb, l);
}

static void forget_resume(struct bv_app *app, const char *remote, struct link *l)
{
    bvdb_remote_part_clear(app->db, remote, l->rec.id);
    free(l->parts);
    l->parts = NULL;
    l->nparts = 0;
    l->done = 0;
    l->upload_id[0] = '\0';
}

static bool rs_have_part(void *opaque, unsigned part, char *etag)
{
    struct resume_ctx *c = opaque;
    for (size_t i = 0; i < c->l->nparts; i++)
        if (c->l->parts[i].part == part) {
            memcpy(etag, c->l->parts[i].etag, sizeof(c->l->parts[i].etag));
            return true;
        }
    return false;
}

static void rs_started(void *opaque, const char *upload_id)
{
    struct resume_ctx *c = opaque;
    forget_resume(c->rp->app, c->rp->remote, c->l);
    snprintf(c->l->upload_id, sizeof(c->l->upload_id), "%s", upload_id);
    record(c->rp->app, c->rp->remote, c->l, "uploading");
}

static void rs_part_done(void *opaque, unsigned part, const char *etag, uint64_t bytes)
{
    struct resume_ctx *c = opaque;
    struct bvdb_remote_part p = {
        .remote = c->rp->remote, .backup_id = c->l->rec.id, .upload_id = c->l->upload_id,
        .part = part, .etag = etag, .size = (int64_t)bytes,
    };
    bvdb_remote_part_put(c->rp->app->db, &p);    /* lost record: the part goes up again */
}

static int put_link(struct replicate *rp, struct bv_s3 *s3, struct link *l, struct bv_job *job,
                    bv_error **errp)
{
    struct resume_ctx c = { rp, l };
    struct bv_s3_resume rs = {
        .upload_id = l->upload_id[0] ? l->upload_id : NULL, .have_part = rs_have_part,
        .started = rs_started, .part_done = rs_part_done, .opaque = &c,
    };
    bv_error *err = NULL;
    int r = bv_s3_put_file_resumable(s3, l->key, l->fd, l->size, on_progress, job, &rs, &err);
    if (r == -ENOENT && rs.upload_id) {           /* the remote dropped the upload: anew */
        bv_error_free(err);
        err = NULL;
        bv_job_add_len(job, l->done);
        forget_resume(rp->app, rp->remote, l);
        rs.upload_id = NULL;
        r = bv_s3_put_file_resumable(s3, l->key, l->fd, l->size, on_progress, job, &rs, &err);
    }
    bv_error_propagate(errp, &err);
    return r;
}

static int upload_link(struct replicate *rp, struct bv_s3 *s3, struct link *l,
                       struct bv_job *job, bv_error **errp)
{
    record(rp->app, rp->remote, l, "uploading");
    int r = put_link(rp, s3, l, job, errp);
    uint64_t got = 0;
    if (r == 0 && (r = bv_s3_head(s3, l->key, &got, errp)) == 0 && got != l->size)
        r = bv_error_setf(errp, EIO, "the remote holds %" PRIu64 " bytes of '%s', expected %"
                          PRIu64, got, l->key, l->size);
    if (r == 0 && rp->opts.lock_days > 0) {
        char until[32];
        iso_time(bv_app_now_ms(rp->app) / 1000 + rp->opts.lock_days * 86400, until);
        r = bv_s3_put_retention(s3, l->key, rp->opts.compliance ? "COMPLIANCE" : "GOVERNANCE",
                                until, errp);
        if (r == 0)
            snprintf(l->locked_until, sizeof(l->locked_until), "%s", until);
        else
            bv_error_prepend(errp, "object lock");
    }
    if (r < 0)
        bv_error_prepend(errp, "uploading backup '%s'", l->rec.id);
    record(rp->app, rp->remote, l, r == 0 ? "present" : "failed");
    if (r == 0)
        forget_resume(rp->app, rp->remote, l);
    return r;
}

struct manifest_acc {
    struct bv_app *app;
    const char *remote, *chain;
    cJSON *links;
};

static int manifest_cb(const struct bvdb_backup *b, void *opaque)
{
    struct manifest_acc *m = opaque;
    if (!bv_remote_link_present(m->app, m->remote, b->id))
        return 0;
    struct bv_backup_rec rec = {0};
    snprintf(rec.drive, sizeof(rec.drive), "%s", b->drive_id);
    snprintf(rec.chain, sizeof(rec.chain), "%s", b->chain_id);
    snprintf(rec.file, sizeof(rec.file), "%s", b->file);
    char key[1200];
    bv_remote_key_of(&rec, key, sizeof(key));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", b->id);
    if (b->parent_id)
        cJSON_AddStringToObject(o, "parent", b->parent_id);
    else
        cJSON_AddNullToObject(o, "parent");
    cJSON_AddStringToObject(o, "kind", b->kind);
    cJSON_AddStringToObject(o, "key", key);
    cJSON_AddStringToObject(o, "file", b->file);
    if (b->checksum)
        cJSON_AddStringToObject(o, "checksum", b->checksum);
    cJSON_AddNumberToObject(o, "virtual_size", (double)b->virtual_size);
    cJSON_AddNumberToObject(o, "data_bytes", (double)b->data_bytes);
    cJSON_AddNumberToObject(o, "seq", (double)b->seq);
    cJSON_AddBoolToObject(o, "compress", b->compress);
    cJSON_AddStringToObject(o, "created_at", b->created_at ? b->created_at : "");
    cJSON_AddStringToObject(o, "completed_at", b->completed_at ? b->completed_at : "");
    if (b->crcs && b->crcs_len > 0) {
        /* the link's CRC map (zlib-compressed), hex: import rebuilds checksums from it */
        char *hex = malloc(b->crcs_len * 2 + 1);
        if (hex) {
            for (size_t i = 0; i < b->crcs_len; i++)
                snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)b->crcs)[i]);
            cJSON_AddStringToObject(o, "crcs", hex);
            free(hex);
        }
    }
    cJSON_AddItemToArray(m->links, o);
    return 0;
}

struct vsize_q {
    uint64_t size;
};

static int vsize_cb(const struct bvdb_backup *b, void *opaque)
{
    struct vsize_q *q = opaque;
    if (b->virtual_size)
        q->size = b->virtual_size;     /* the newest link's (oldest first) */
    return 0;
}

/* The manifest of chain on remote from the catalog's present links.  Under backups_lock. */
char *bv_remote_manifest_text_locked(struct bv_app *app, const char *remote, const char *drive,
                                  const char *chain)
{
    struct vsize_q vq = { 0 };
    bvdb_backup_list(app->db, NULL, chain, vsize_cb, &vq);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "format", 1);
    cJSON_AddStringToObject(doc, "drive", drive);
    cJSON_AddStringToObject(doc, "chain", chain);
    cJSON_AddNumberToObject(doc, "virtual_size", (double)vq.size);
    struct manifest_acc m = {app, remote, chain, NULL};
    m.links = cJSON_AddArrayToObject(doc, "links");
    int r = bvdb_backup_list(app->db, NULL, chain, manifest_cb, &m);
    char *text = r < 0 ? NULL : cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return text;
}

int bv_remote_upload_manifest(struct bv_s3 *s3, const char *drive, const char *chain,
                           const char *text, bv_error **errp)
{
    if (!text)
        return bv_error_setf(errp, EIO, "cannot build the manifest of chain '%s'", chain);
    char key[600];
    snprintf(key, sizeof(key), "%s/%s/manifest.json", drive, chain);
    return bv_s3_put(s3, key, text, strlen(text), errp);
}

static int put_manifest(struct replicate *rp, struct bv_s3 *s3, const struct link *top,
                        bv_error **errp)
{
    pthread_mutex_lock(&rp->app->backups_lock);
    char *text = bv_remote_manifest_text_locked(rp->app, rp->remote, top->rec.drive, top->rec.chain);
    pthread_mutex_unlock(&rp->app->backups_lock);
    int r = bv_remote_upload_manifest(s3, top->rec.drive, top->rec.chain, text, errp);
    free(text);
    return r;
}

/* A copy of the whole catalog (runtime/upkeep.h) at CATALOG_KEY, replaced by each run: with
 * the manifests, what a new appliance needs to know what the bucket holds. */
#define CATALOG_KEY "catalog.sqlite"

static int put_catalog(struct replicate *rp, struct bv_s3 *s3, bv_error **errp)
{
    int fd = -1;
    uint64_t size = 0;
    int r = bv_catalog_copy_temp(rp->app, &fd, &size, errp);
    if (r == 0)
        r = bv_s3_put_file(s3, CATALOG_KEY, fd, size, NULL, NULL, errp);
    if (fd >= 0)
        close(fd);
    return r;
}

/* ---- tiering ---- */

struct tier_row {
    char id[BV_BACKUP_ID_MAX], file[1024], status[16];
};

struct tier_acc {
    struct tier_row *v;
    size_t n;
    bool oom;
};

static int tier_cb(const struct bvdb_backup *b, void *opaque)
{
    struct tier_acc *a = opaque;
    if (strcmp(b->status, "failed") == 0)
        return 0;
    struct tier_row *nv = realloc(a->v, (a->n + 1) * sizeof(*nv));
    if (!nv) {
        a->oom = true;
        return 1;
    }
    a->v = nv;
    struct tier_row *t = &a->v[a->n++];
    snprintf(t->id, sizeof(t->id), "%s", b->id);
    snprintf(t->file, sizeof(t->file), "%s", b->file);
    snprintf(t->status, sizeof(t->status), "%s", b->status);
    return 0;
}

/* Does a live job other than self work on the drive or on one of the chain's backups? */
static bool chain_in_use(struct bv_app *app, const char *drive, const struct tier_acc *a,
                         const char *self)
{
    struct bv_job_view *v = NULL;
    size_t n = bv_jobs_list(app, false, NULL, NULL, &v);
    bool busy = false;
    for (size_t i = 0; i < n && !busy; i++) {
        const struct bv_job_info *j = &v[i].info;
        if ((self && strcmp(j->id, self) == 0) || j->status == BV_JOB_CONCLUDED ||
            j->status == BV_JOB_NULL)
            continue;
        if (strcmp(j->device, drive) == 0)
            busy = true;
        for (size_t k = 0; k < a->n && !busy; k++) {
            char quoted[BV_BACKUP_ID_MAX + 4];
            snprintf(quoted, sizeof(quoted), "\"%s\"", a->v[k].id);
            busy = strcmp(j->device, a->v[k].id) == 0 || strstr(v[i].params, quoted) != NULL;
        }
    }
    free(v);
    return busy;
}

/* A chain may have been closed by a newer full (then its newest link may go too). */
static void closed_cb(const struct bvdb_chain *c, void *opaque)
{
    *(bool *)opaque = c->closed;
}

int bv_remotes_tier_locked(struct bv_app *app, const char *remote, const char *drive,
                           const char *chain, int64_t keep_local, const char *self_job,
                           bv_error **errp)
{
    struct tier_acc a = { 0 };
    bool closed = false;
    if (bvdb_chain_get(app->db, chain, closed_cb, &closed) < 0 ||
        bvdb_backup_list(app->db, NULL, chain, tier_cb, &a) < 0 || a.oom) {
        free(a.v);
        return bv_error_setf(errp, EIO, "cannot read chain '%s' from the catalog", chain);
    }
    if (chain_in_use(app, drive, &a, self_job)) {
        log_info("tiering of chain '%s' postponed: a job works on it", chain);
        free(a.v);
        return 0;
    }
    /* the newest keep_local links stay; never the newest of a chain still extended */
    size_t keep = keep_local > 0 ? (size_t)keep_local : 0;
    if (!closed && keep < 1)
        keep = 1;
    size_t upto = a.n > keep ? a.n - keep : 0;
    bool *go = calloc(a.n ? a.n : 1, sizeof(*go));
    size_t ngo = 0;
    for (size_t i = 0; go && i < upto; i++) {
        if (strcmp(a.v[i].status, "complete") != 0 && strcmp(a.v[i].status, "corrupt") != 0)
            continue;
        if (bvdb_backup_get_local(app->db, a.v[i].id) != 1 ||
            !bv_remote_link_present(app, remote, a.v[i].id))
            continue;
        go[i] = true;
        ngo++;
    }
    int r = 0;
    if (ngo) {
        /* one transaction: the catalog says "remote" first; the files go after the commit
         * (a crash in between: bv_remotes_recover removes them at the next start) */
        r = bvdb_begin(app->db);
        for (size_t i = 0; r == 0 && i < a.n; i++)
            if (go[i])
                r = bvdb_backup_set_local(app->db, a.v[i].id, false);
        if (r == 0)
            r = bvdb_commit(app->db);
        else
            bvdb_rollback(app->db);
        if (r < 0)
            r = bv_error_setf(errp, EIO, "cannot record the tiering of chain '%s'", chain);
        /* test-only: die between the commit and the unlinks (bv_remotes_recover's case) */
        const char *crash = getenv("BV_TEST_TIER_CRASH");
        if (r == 0 && crash && atoi(crash) == 1) {
            fprintf(stderr, "blockvault: BV_TEST_TIER_CRASH=1: exiting in the middle of a "
                    "tiering\n");
            _exit(86);
        }
    }
    for (size_t i = 0; r == 0 && i < a.n; i++) {
        if (!go[i])
            continue;
        int u = bv_path_unlink(app->root, a.v[i].file, NULL);
        if (u < 0 && u != -ENOENT)
            log_warn("tiering: cannot remove '%s': %s", a.v[i].file, strerror(-u));
        else
            log_info("tiering: backup '%s' now lives only on remote '%s'", a.v[i].id, remote);
    }
    free(go);
    free(a.v);
    return r;
}

struct recover_acc {
    struct bv_app *app;
};

static int recover_cb(const char *id, const char *file, void *opaque)
{
    struct recover_acc *ra = opaque;
    struct stat st;
    if (file && bv_path_stat(ra->app->root, file, &st, NULL) == 0) {
        log_warn("tiering of backup '%s' was interrupted: removing its local file '%s'", id,
                 file);
        bv_path_unlink(ra->app->root, file, NULL);
    }
    return 0;
}

void bv_remotes_recover(struct bv_app *app)
{
    struct recover_acc ra = { app };
    pthread_mutex_lock(&app->backups_lock);
    bvdb_backup_list_remote_only(app->db, recover_cb, &ra);
    pthread_mutex_unlock(&app->backups_lock);
}

static int replicate_run(struct bv_job *job, void *opaque, bv_error **errp)
{
    struct replicate *rp = opaque;
    struct bv_s3 *s3 = NULL;
    struct link *v = NULL;
    size_t n = 0;
    int r = bv_remotes_client(rp->app, rp->remote, &s3, errp);
    if (r == 0) {
        pthread_mutex_lock(&rp->app->backups_lock);
        r = resolve_locked(rp, &v, &n, errp);
        pthread_mutex_unlock(&rp->app->backups_lock);
    }
    uint64_t total = 0;
    for (size_t i = 0; r == 0 && i < n; i++)
        if (v[i].fd >= 0) {
            load_resume(rp->app, rp->remote, &v[i]);
            total += v[i].size - (v[i].done < v[i].size ? v[i].done : v[i].size);
        }
    if (r == 0)
        bv_job_set_len(job, total);
    for (size_t i = 0; r == 0 && i < n; i++) {
        if (v[i].fd < 0)
            continue;
        if (bv_job_is_cancelled(job))
            r = -ECANCELED;
        else
            r = upload_link(rp, s3, &v[i], job, errp);
    }
    if (r == 0 && n > 0)
        r = put_manifest(rp, s3, &v[n - 1], errp);
    if (r == 0 && n > 0 && rp->opts.keep_local >= 0) {
        pthread_mutex_lock(&rp->app->backups_lock);
        r = bv_remotes_tier_locked(rp->app, rp->remote, v[n - 1].rec.drive, v[n - 1].rec.chain,
                                   rp->opts.keep_local, bv_job_id(job), errp);
        pthread_mutex_unlock(&rp->app->backups_lock);
    }
    if (r == 0 && n > 0)
        r = put_catalog(rp, s3, errp);
    for (size_t i = 0; i < n; i++) {
        if (v[i].fd >= 0)
            close(v[i].fd);
        free(v[i].parts);
    }
    free(v);
    bv_s3_free(s3);
    return r;
}

int bv_remotes_replicate(struct bv_app *app, const char *bid, const char *remote,
                         struct bv_job_info *info, bv_error **errp)
{
    struct bv_replicate_opts o = { .keep_local = -1 };
    return bv_remotes_replicate_opts(app, bid, remote, &o, info, errp);
}

int bv_remotes_replicate_opts(struct bv_app *app, const char *bid, const char *remote,
                              const struct bv_replicate_opts *o, struct bv_job_info *info,
                              bv_error **errp)
{
    struct bv_backup_rec b;
    struct bv_remote_view rv;
    int r = bv_backups_get(app, bid, &b, errp);
    if (r == 0)
        r = bv_remotes_get(app, remote, &rv, errp);
    if (r == 0 && strcmp(b.status, "complete") != 0)
        r = bv_error_setf(errp, EBUSY, "Backup '%s' is %s, not complete", bid, b.status);
    if (r < 0)
        return r;
    struct replicate *rp = calloc(1, sizeof(*rp));
    if (!rp)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    rp->app = app;
    snprintf(rp->bid, sizeof(rp->bid), "%s", bid);
    snprintf(rp->remote, sizeof(rp->remote), "%s", remote);
    rp->opts = *o;
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "backup", bid);
    cJSON_AddStringToObject(params, "remote", remote);
    if (o->keep_local >= 0)
        cJSON_AddNumberToObject(params, "keep_local", (double)o->keep_local);
    if (o->lock_days > 0) {
        cJSON_AddNumberToObject(params, "lock_days", (double)o->lock_days);
        cJSON_AddStringToObject(params, "lock_mode", o->compliance ? "compliance" : "governance");
    }
    char *text = cJSON_PrintUnformatted(params);
    cJSON_Delete(params);
    struct bv_task_spec s = {
        .type = "replicate", .device = b.drive, .params = text, .run = replicate_run,
        .release = free, .opaque = rp,
    };
    r = bv_jobs_task(app, &s, info, errp);      /* rp belongs to the job */
    free(text);
    return r;
}

struct tiered_q {
    struct bv_app *app;
    bool tiered;
};

static int tiered_cb(const struct bvdb_backup *b, void *opaque)
{
    struct tiered_q *q = opaque;
    if (bvdb_backup_get_local(q->app->db, b->id) == 0) {
        q->tiered = true;
        return 1;
    }
    return 0;
}

bool bv_remotes_replicating(struct bv_app *app, const char *drive, char *job, size_t len)
{
    struct bv_job_view *v = NULL;
    size_t n = bv_jobs_list(app, false, NULL, "replicate", &v);
    bool busy = false;
    for (size_t i = 0; i < n && !busy; i++) {
        const struct bv_job_info *j = &v[i].info;
        if (j->status == BV_JOB_CONCLUDED || j->status == BV_JOB_NULL)
            continue;
        if (strcmp(j->device, drive) == 0) {
            busy = true;
            snprintf(job, len, "%s", j->id);
        }
    }
    free(v);
    return busy;
}

bool bv_remotes_chain_tiered(struct bv_app *app, const char *chain)
{
    struct tiered_q q = { app, false };
    bvdb_backup_list(app->db, NULL, chain, tiered_cb, &q);
    return q.tiered;
}
