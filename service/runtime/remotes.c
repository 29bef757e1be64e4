/*
 * Remotes and replicate jobs (see remotes.h for the contract and the locking).
 *
 * Replicate, on a worker: under backups_lock, the point's links (the point and its parents
 * down to the full) are resolved and each link the remote lacks is opened (the descriptor
 * keeps the immutable file readable even if a prune removes its name meanwhile); then,
 * without the lock, each is uploaded (multipart above 16 MiB, 4 parts in flight), checked
 * with a HEAD (size) and recorded as present; last the chain's manifest is rewritten from
 * the catalog's present links.  A link already present is neither opened nor uploaded.
 */
#include "runtime/remotes.h"

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
#include "bvdb/remotes.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/jobs.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "s3/s3.h"

#define SECRET_MAX 256
#define MAX_LINKS 4096

/* ---- names and the secret file ---- */

static int check_name(const char *name, bv_error **errp)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > BV_REMOTE_NAME_MAX || name[0] == '.')
        return bv_error_setf(errp, EINVAL, "name: 1 to %d characters of [A-Za-z0-9._-], not "
                             "starting with '.'", BV_REMOTE_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return bv_error_setf(errp, EINVAL, "name: '%c' is not allowed (use [A-Za-z0-9._-])",
                                 c);
    }
    return 0;
}

static void secret_path(struct bv_app *app, const char *name, const char *suffix, char *out,
                        size_t len)
{
    snprintf(out, len, "%s/remotes/%s.secret%s", app->cfg.data_dir, name, suffix);
}

static int write_secret(struct bv_app *app, const char *name, const char *secret,
                        bv_error **errp)
{
    char dir[4200], tmp[4400], path[4400];
    snprintf(dir, sizeof(dir), "%s/remotes", app->cfg.data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return bv_error_setf(errp, errno, "cannot create %s: %s", dir, strerror(errno));
    secret_path(app, name, ".tmp", tmp, sizeof(tmp));
    secret_path(app, name, "", path, sizeof(path));
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return bv_error_setf(errp, errno, "cannot create %s: %s", tmp, strerror(errno));
    size_t n = strlen(secret);
    int r = 0;
    if (write(fd, secret, n) != (ssize_t)n || fsync(fd) < 0)
        r = bv_error_setf(errp, EIO, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    if (r == 0 && rename(tmp, path) < 0)
        r = bv_error_setf(errp, errno, "cannot rename %s: %s", tmp, strerror(errno));
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static int read_secret(struct bv_app *app, const char *name, char out[SECRET_MAX],
                       bv_error **errp)
{
    char path[4400];
    secret_path(app, name, "", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return bv_error_setf(errp, errno, "cannot read the secret key of remote '%s': %s", name,
                             strerror(errno));
    ssize_t n = read(fd, out, SECRET_MAX - 1);
    close(fd);
    if (n <= 0)
        return bv_error_setf(errp, EIO, "the secret key file of remote '%s' is empty", name);
    out[n] = '\0';
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
        r = write_secret(app, s->name, s->secret_key, errp);
    if (r == 0) {
        r = bvdb_remote_insert(app->db, &row);
        if (r < 0) {
            char path[4400];
            secret_path(app, s->name, "", path, sizeof(path));
            unlink(path);
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
    char until[32];
    if (r == 0 && bv_remotes_locked_until(app, name, NULL, until))
        r = bv_error_setf(errp, EBUSY, "Remote '%s' holds backup links under object lock until "
                          "%.10s (%s); it can be deleted after that date", name, until, until);
    if (r == 0 && bvdb_remote_delete(app->db, name) < 0)
        r = bv_error_setf(errp, EIO, "cannot delete remote '%s' from the catalog", name);
    if (r == 0) {
        char path[4400];
        secret_path(app, name, "", path, sizeof(path));
        unlink(path);
    }
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

static void key_of(const struct bv_backup_rec *b, char *out, size_t len)
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

static bool link_present(struct bv_app *app, const char *remote, const char *bid)
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
        key_of(&l->rec, l->key, sizeof(l->key));
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
        if (link_present(rp->app, rp->remote, v[i].rec.id))
            continue;
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
    if (!link_present(m->app, m->remote, b->id))
        return 0;
    struct bv_backup_rec rec = {0};
    snprintf(rec.drive, sizeof(rec.drive), "%s", b->drive_id);
    snprintf(rec.chain, sizeof(rec.chain), "%s", b->chain_id);
    snprintf(rec.file, sizeof(rec.file), "%s", b->file);
    char key[1200];
    key_of(&rec, key, sizeof(key));
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
static char *manifest_text_locked(struct bv_app *app, const char *remote, const char *drive,
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

static int upload_manifest(struct bv_s3 *s3, const char *drive, const char *chain,
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
    char *text = manifest_text_locked(rp->app, rp->remote, top->rec.drive, top->rec.chain);
    pthread_mutex_unlock(&rp->app->backups_lock);
    int r = upload_manifest(s3, top->rec.drive, top->rec.chain, text, errp);
    free(text);
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
            !link_present(app, remote, a.v[i].id))
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

/* ---- the remote side of a prune (see prune.c for the order) ---- */

struct key_q {
    char key[1200];
    bool present;
};

static int key_cb(const struct bvdb_remote_link *l, void *opaque)
{
    struct key_q *q = opaque;
    if (!strcmp(l->state, "present")) {
        q->present = true;
        snprintf(q->key, sizeof(q->key), "%s", l->key);
    }
    return 0;
}

/* The key of bid's present copy on remote, or false. */
static bool present_key(struct bv_app *app, const char *remote, const char *bid, char *key,
                        size_t len)
{
    struct key_q q = { "", false };
    if (bid && bid[0])
        bvdb_remote_link_list(app->db, remote, bid, key_cb, &q);
    if (q.present)
        snprintf(key, len, "%s", q.key);
    return q.present;
}

struct names_acc {
    char (*v)[BV_REMOTE_NAME_MAX + 1];
    size_t n;
};

static int names_cb(const struct bvdb_remote *r, void *opaque)
{
    struct names_acc *a = opaque;
    void *nv = realloc(a->v, (a->n + 1) * sizeof(*a->v));
    if (!nv)
        return 1;
    a->v = nv;
    snprintf(a->v[a->n++], sizeof(*a->v), "%s", r->name);
    return 0;
}

int bv_remotes_prune_plan_locked(struct bv_app *app, const char *link, const char *child,
                                 const char *grand, const char *new_file, char **plan,
                                 bv_error **errp)
{
    *plan = NULL;
    struct bv_backup_rec l;
    int r = bv_backups_get(app, link, &l, errp);
    if (r < 0)
        return r;
    struct names_acc names = { NULL, 0 };
    bvdb_remote_list(app->db, names_cb, &names);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; r == 0 && i < names.n; i++) {
        const char *rem = names.v[i];
        char lkey[1200], ckey[1200], gkey[1200], until[32];
        bool lp = present_key(app, rem, link, lkey, sizeof(lkey));
        bool cp = child && present_key(app, rem, child, ckey, sizeof(ckey));
        if (!lp && !cp)
            continue;
        const char *locked = bv_remotes_locked_until(app, rem, link, until) ? link
                           : child && bv_remotes_locked_until(app, rem, child, until) ? child
                           : NULL;
        if (locked) {
            r = bv_error_setf(errp, EBUSY, "Backup '%s' is under object lock on remote '%s' "
                              "until %.10s (%s): the prune would delete its object; it unlocks "
                              "on %.10s", locked, rem, until, until, until);
            break;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "remote", rem);
        cJSON_AddStringToObject(o, "drive", l.drive);
        cJSON_AddStringToObject(o, "chain", l.chain);
        cJSON *old = cJSON_AddArrayToObject(o, "old_keys");
        if (lp)
            cJSON_AddItemToArray(old, cJSON_CreateString(lkey));
        if (cp) {
            cJSON_AddItemToArray(old, cJSON_CreateString(ckey));
            struct bv_backup_rec tmp = { 0 };
            snprintf(tmp.drive, sizeof(tmp.drive), "%s", l.drive);
            snprintf(tmp.chain, sizeof(tmp.chain), "%s", l.chain);
            snprintf(tmp.file, sizeof(tmp.file), "%s", new_file ? new_file : "");
            char nkey[1200];
            key_of(&tmp, nkey, sizeof(nkey));
            cJSON_AddStringToObject(o, "new_key", nkey);
        }
        struct bv_backup_rec g;
        if (grand && present_key(app, rem, grand, gkey, sizeof(gkey)) &&
            bv_backups_get(app, grand, &g, NULL) == 0) {
            cJSON_AddStringToObject(o, "grand_key", gkey);
            cJSON_AddStringToObject(o, "grand_file", g.file);
        }
        cJSON_AddItemToArray(arr, o);
    }
    free(names.v);
    if (r == 0 && !(*plan = cJSON_PrintUnformatted(arr)))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    cJSON_Delete(arr);
    return r;
}

/* PUT the local file as key (its size checked with a HEAD). */
static int put_local_file(struct bv_app *app, struct bv_s3 *s3, const char *file,
                          const char *key, uint64_t *size_out, bv_error **errp)
{
    int fd = -1;
    int r = bv_path_open(app->root, NULL, file, 0, O_RDONLY, 0, &fd, NULL, errp);
    struct stat st;
    if (r == 0 && fstat(fd, &st) < 0)
        r = bv_error_setf(errp, errno, "cannot stat '%s'", file);
    if (r == 0)
        r = bv_s3_put_file(s3, key, fd, (uint64_t)st.st_size, NULL, NULL, errp);
    uint64_t got = 0;
    if (r == 0 && (r = bv_s3_head(s3, key, &got, errp)) == 0 && got != (uint64_t)st.st_size)
        r = bv_error_setf(errp, EIO, "the remote holds %" PRIu64 " bytes of '%s', expected %lld",
                          got, key, (long long)st.st_size);
    if (r == 0 && size_out)
        *size_out = got;
    if (fd >= 0)
        close(fd);
    return r;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int bv_remotes_prune_upload_locked(struct bv_app *app, const char *plan, const char *new_file,
                                   bv_error **errp)
{
    cJSON *arr = cJSON_Parse(plan ? plan : "[]");
    const cJSON *e;
    int r = 0;
    cJSON_ArrayForEach(e, arr) {
        const char *rem = jstr(e, "remote"), *nkey = jstr(e, "new_key");
        if (!rem || !nkey)
            continue;
        struct bv_s3 *s3 = NULL;
        r = bv_remotes_client(app, rem, &s3, errp);
        if (r == 0)
            r = put_local_file(app, s3, new_file, nkey, NULL, errp);
        bv_s3_free(s3);
        if (r < 0) {
            bv_error_prepend(errp, "uploading the merged link to remote '%s'", rem);
            break;
        }
    }
    cJSON_Delete(arr);
    return r;
}

int bv_remotes_prune_switch_locked(struct bv_app *app, const char *plan, const char *link,
                                   const char *child, const char *new_file)
{
    cJSON *arr = cJSON_Parse(plan ? plan : "[]");
    const cJSON *e;
    int r = 0;
    char now[32];
    bv_app_now_str(app, now);
    struct stat st;
    int64_t size = bv_path_stat(app->root, new_file, &st, NULL) == 0 ? (int64_t)st.st_size : 0;
    cJSON_ArrayForEach(e, arr) {
        const char *rem = jstr(e, "remote"), *nkey = jstr(e, "new_key");
        if (rem && nkey && child && r == 0) {
            bvdb_remote_part_clear(app->db, rem, child);
            struct bvdb_remote_link row = {
                .remote = rem, .backup_id = child, .key = nkey, .state = "present",
                .size = size, .updated_at = now,
            };
            r = bvdb_remote_link_put(app->db, &row);
        }
    }
    if (r == 0)
        r = bvdb_remote_link_delete(app->db, NULL, link);
    cJSON_Delete(arr);
    return r;
}

int bv_remotes_prune_finish_locked(struct bv_app *app, const char *plan, bv_error **errp)
{
    cJSON *arr = cJSON_Parse(plan ? plan : "[]");
    const cJSON *e;
    int r = 0;
    cJSON_ArrayForEach(e, arr) {
        const char *rem = jstr(e, "remote"), *drive = jstr(e, "drive"), *chain = jstr(e, "chain");
        const char *gkey = jstr(e, "grand_key"), *gfile = jstr(e, "grand_file");
        if (!rem || !drive || !chain)
            continue;
        struct bv_s3 *s3 = NULL;
        int q = bv_remotes_client(app, rem, &s3, r == 0 ? errp : NULL);
        /* 1. the grandchild's header now names the merged file: its object follows */
        struct stat st;
        if (q == 0 && gkey && gfile && bv_path_stat(app->root, gfile, &st, NULL) == 0)
            q = put_local_file(app, s3, gfile, gkey, NULL, r == 0 ? errp : NULL);
        /* 2. the manifest names the merged link instead of the two old ones */
        if (q == 0) {
            char *text = manifest_text_locked(app, rem, drive, chain);
            q = upload_manifest(s3, drive, chain, text, r == 0 ? errp : NULL);
            free(text);
        }
        /* 3. only then the old objects go */
        const cJSON *k;
        cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(e, "old_keys")) {
            if (q == 0 && cJSON_IsString(k)) {
                q = bv_s3_delete(s3, k->valuestring, r == 0 ? errp : NULL);
                if (q == -ENOENT)
                    q = 0;
            }
        }
        bv_s3_free(s3);
        if (q < 0 && r == 0) {
            r = q;
            bv_error_prepend(errp, "the prune's clean-up on remote '%s'", rem);
        }
    }
    cJSON_Delete(arr);
    return r;
}

void bv_remotes_prune_undo_locked(struct bv_app *app, const char *plan)
{
    cJSON *arr = cJSON_Parse(plan ? plan : "[]");
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const char *rem = jstr(e, "remote"), *nkey = jstr(e, "new_key");
        struct bv_s3 *s3 = NULL;
        if (!rem || !nkey || bv_remotes_client(app, rem, &s3, NULL) < 0)
            continue;
        if (bv_s3_delete(s3, nkey, NULL) < 0)
            log_warn("cannot delete '%s' from remote '%s' (an undone prune's upload)", nkey,
                     rem);
        bv_s3_free(s3);
    }
    cJSON_Delete(arr);
}

/* ---- remote-only drives ---- */

struct rd_q {
    char *remote;
    size_t len;
    uint64_t size;
};

static void rd_cb(const struct bvdb_remote_drive *d, void *opaque)
{
    struct rd_q *q = opaque;
    if (q->remote)
        snprintf(q->remote, q->len, "%s", d->remote);
    q->size = (uint64_t)d->size;
}

bool bv_remotes_drive_remote_only(struct bv_app *app, const char *id, char *remote,
                                  size_t len, uint64_t *size)
{
    struct rd_q q = { remote, len, 0 };
    if (bvdb_remote_drive_get(app->db, id, rd_cb, &q) < 0)
        return false;
    if (size)
        *size = q.size;
    return true;
}

struct rd_list {
    char **v;
    size_t n;
};

static int rd_list_cb(const struct bvdb_remote_drive *d, void *opaque)
{
    struct rd_list *a = opaque;
    char **nv = realloc(a->v, (a->n + 1) * sizeof(*nv));
    if (!nv)
        return 1;
    a->v = nv;
    if ((a->v[a->n] = strdup(d->id)))
        a->n++;
    return 0;
}

size_t bv_remotes_drives_list(struct bv_app *app, char ***ids)
{
    struct rd_list a = { NULL, 0 };
    bvdb_remote_drive_list(app->db, rd_list_cb, &a);
    *ids = a.v;
    return a.n;
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

/* ---- import: chains and backups rebuilt from a bucket's manifests ---- */

#define MANIFEST_MAX (64u << 20)

struct import {
    struct bv_app *app;
    char remote[BV_REMOTE_NAME_MAX + 1];
    cJSON *manifests;              /* [{"key", "doc", "sizes":{key:size}}] */
};

struct list_keys {
    cJSON *keys;                   /* manifest keys */
    cJSON *sizes;                  /* every object's size by key */
};

static int list_keys_cb(void *opaque, const char *key, uint64_t size)
{
    struct list_keys *lk = opaque;
    cJSON_AddNumberToObject(lk->sizes, key, (double)size);
    const char *s1 = strchr(key, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (s1 && s2 && !strchr(s2 + 1, '/') && strcmp(s2 + 1, "manifest.json") == 0)
        cJSON_AddItemToArray(lk->keys, cJSON_CreateString(key));
    return 0;
}

static bool id_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= max || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* A manifest as replicate writes it, checked before anything is recorded. */
static int check_manifest(const char *key, const cJSON *doc, bv_error **errp)
{
    const char *drive = jstr(doc, "drive"), *chain = jstr(doc, "chain");
    const cJSON *links = cJSON_GetObjectItemCaseSensitive(doc, "links");
    if (!id_ok(drive, 129) || !id_ok(chain, BV_BACKUP_ID_MAX) || !cJSON_IsArray(links))
        return bv_error_setf(errp, EINVAL, "manifest '%s' is not a Blockvault manifest (drive, "
                             "chain, links)", key);
    const cJSON *l;
    const char *prev = NULL;
    cJSON_ArrayForEach(l, links) {
        const char *id = jstr(l, "id"), *lkey = jstr(l, "key"), *kind = jstr(l, "kind");
        const cJSON *parent = cJSON_GetObjectItemCaseSensitive(l, "parent");
        if (!id_ok(id, BV_BACKUP_ID_MAX) || !lkey || !kind ||
            (strcmp(kind, "full") && strcmp(kind, "incremental")))
            return bv_error_setf(errp, EINVAL, "manifest '%s': a link lacks id, key or kind",
                                 key);
        const char *pid = cJSON_IsString(parent) ? parent->valuestring : NULL;
        if ((prev == NULL) != (pid == NULL) || (prev && strcmp(prev, pid) != 0))
            return bv_error_setf(errp, EINVAL, "manifest '%s': link '%s' does not follow "
                                 "'%s'", key, id, prev ? prev : "(none)");
        prev = id;
    }
    return 0;
}

struct collide {
    struct bv_app *app;
    char names[1024];
    size_t n;
};

static void collide_add(struct collide *c, const char *what, const char *id)
{
    size_t len = strlen(c->names);
    if (strstr(c->names, id))
        return;
    snprintf(c->names + len, sizeof(c->names) - len, "%s%s '%s'", c->n ? ", " : "", what, id);
    c->n++;
}

static void noop_chain(const struct bvdb_chain *ch, void *opaque)
{
    (void)ch;
    (void)opaque;
}

static void noop_backup(const struct bvdb_backup *b, void *opaque)
{
    (void)b;
    (void)opaque;
}

struct drive_has_q {
    bool any;
};

static int drive_chain_cb(const struct bvdb_chain *ch, void *opaque)
{
    (void)ch;
    ((struct drive_has_q *)opaque)->any = true;
    return 1;
}

/* Drive ids (and chain or backup ids) of the manifests that exist here already. */
static void collisions_locked(struct bv_app *app, const cJSON *manifests, struct collide *c)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, manifests) {
        const cJSON *doc = cJSON_GetObjectItemCaseSensitive(m, "doc");
        const char *drive = jstr(doc, "drive"), *chain = jstr(doc, "chain");
        struct bv_drive_entry *e = bv_registry_get(app, drive);
        struct bv_vm_drive *vm = e ? NULL : bv_vm_drives_get(app, drive);
        struct drive_has_q dq = { false };
        bvdb_chain_list(app->db, drive, drive_chain_cb, &dq);
        if (e || vm || dq.any || bv_remotes_drive_remote_only(app, drive, NULL, 0, NULL))
            collide_add(c, "drive", drive);
        bv_registry_put(app, e);
        bv_vm_drives_put(app, vm);
        if (bvdb_chain_get(app->db, chain, noop_chain, NULL) == 0)
            collide_add(c, "chain", chain);
        const cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(doc, "links"))
            if (bvdb_backup_get(app->db, jstr(l, "id"), noop_backup, NULL) == 0)
                collide_add(c, "backup", jstr(l, "id"));
    }
}

static int64_t id_number(const char *id, char prefix)
{
    if (!id || id[0] != prefix)
        return 0;
    char *end = NULL;
    long long v = strtoll(id + 1, &end, 10);
    return end && *end == '\0' && v > 0 ? v : 0;
}

/* The counters that name new ids move past the imported ones. */
static int bump_seq(bvdb *db, const char *name, int64_t past)
{
    return past > 0 ? bvdb_seq_at_least(db, name, past) : 0;
}

static int hex_val(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int import_link_locked(struct import *im, const cJSON *doc, const cJSON *sizes,
                              const cJSON *l, const char *now, int64_t *maxes)
{
    const char *drive = jstr(doc, "drive"), *chain = jstr(doc, "chain");
    const char *id = jstr(l, "id"), *key = jstr(l, "key"), *file = jstr(l, "file");
    char fbuf[1024];
    if (!file || strncmp(file, "chains/", 7) != 0) {
        const char *base = strrchr(key, '/');
        snprintf(fbuf, sizeof(fbuf), "chains/%s/%s/%s", drive, chain, base ? base + 1 : key);
        file = fbuf;
    }
    const cJSON *parent = cJSON_GetObjectItemCaseSensitive(l, "parent");
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(l, "virtual_size");
    const cJSON *db_ = cJSON_GetObjectItemCaseSensitive(l, "data_bytes");
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(l, "seq");
    const char *hex = jstr(l, "crcs");
    size_t hl = hex ? strlen(hex) : 0;
    unsigned char *crcs = hl && hl % 2 == 0 ? malloc(hl / 2) : NULL;
    for (size_t i = 0; crcs && i < hl / 2; i++) {
        int a = hex_val(hex[2 * i]), b = hex_val(hex[2 * i + 1]);
        if (a < 0 || b < 0) {
            free(crcs);
            crcs = NULL;
            break;
        }
        crcs[i] = (unsigned char)(a * 16 + b);
    }
    const char *created = jstr(l, "created_at"), *completed = jstr(l, "completed_at");
    struct bvdb_backup b = {
        .id = id, .drive_id = drive, .chain_id = chain,
        .parent_id = cJSON_IsString(parent) ? parent->valuestring : NULL,
        .kind = jstr(l, "kind"), .file = file, .status = "complete",
        .created_at = created && created[0] ? created : now,
        .completed_at = completed && completed[0] ? completed : now,
        .virtual_size = cJSON_IsNumber(vs) ? (uint64_t)vs->valuedouble : 0,
        .data_bytes = cJSON_IsNumber(db_) ? (uint64_t)db_->valuedouble : 0,
        .checksum = jstr(l, "checksum"),
        .compress = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "compress")),
        .crcs = crcs, .crcs_len = crcs ? hl / 2 : 0,
        .seq = cJSON_IsNumber(sq) ? (int64_t)sq->valuedouble : 0,
    };
    int r = bvdb_backup_insert(im->app->db, &b);
    free(crcs);
    if (r == 0)
        r = bvdb_backup_set_local(im->app->db, id, false);
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(sizes, key);
    struct bvdb_remote_link row = {
        .remote = im->remote, .backup_id = id, .key = key, .state = "present",
        .size = cJSON_IsNumber(sz) ? (int64_t)sz->valuedouble : 0, .updated_at = now,
    };
    if (r == 0)
        r = bvdb_remote_link_put(im->app->db, &row);
    int64_t v = id_number(id, 'b');
    if (v > maxes[0])
        maxes[0] = v;
    if (b.seq > maxes[0])
        maxes[0] = b.seq;
    const char *m = strstr(file, ".m");
    if (m && (v = strtoll(m + 2, NULL, 10)) > maxes[2])
        maxes[2] = v;
    return r;
}

static int import_locked(struct import *im, struct bv_job *job, bv_error **errp)
{
    struct bv_app *app = im->app;
    struct collide c = { app, "", 0 };
    collisions_locked(app, im->manifests, &c);
    if (c.n)
        return bv_error_setf(errp, EEXIST, "the import collides with what exists here: %s",
                             c.names);
    char now[32];
    bv_app_now_str(app, now);
    int64_t maxes[3] = { 0, 0, 0 };     /* backup, chain, merge */
    bv_job_set_len(job, (uint64_t)cJSON_GetArraySize(im->manifests));
    int r = bvdb_begin(app->db);
    const cJSON *m;
    cJSON_ArrayForEach(m, im->manifests) {
        if (r < 0)
            break;
        const cJSON *doc = cJSON_GetObjectItemCaseSensitive(m, "doc");
        const cJSON *sizes = cJSON_GetObjectItemCaseSensitive(m, "sizes");
        const char *drive = jstr(doc, "drive"), *chain = jstr(doc, "chain");
        const cJSON *vs = cJSON_GetObjectItemCaseSensitive(doc, "virtual_size");
        if (!bv_remotes_drive_remote_only(app, drive, NULL, 0, NULL)) {
            struct bvdb_remote_drive d = {
                .id = drive, .remote = im->remote,
                .size = cJSON_IsNumber(vs) ? (int64_t)vs->valuedouble : 0, .created_at = now,
            };
            r = bvdb_remote_drive_insert(app->db, &d);
        }
        char dir[512];
        snprintf(dir, sizeof(dir), "chains/%s/%s", drive, chain);
        const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "links"), 0);
        const char *created = first ? jstr(first, "created_at") : NULL;
        struct bvdb_chain ch = {
            .id = chain, .drive_id = drive, .bitmap = NULL, .dir = dir, .closed = true,
            .created_at = created && created[0] ? created : now,
        };
        if (r == 0)
            r = bvdb_chain_insert(app->db, &ch);
        int64_t cv = id_number(chain, 'c');
        if (cv > maxes[1])
            maxes[1] = cv;
        const cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(doc, "links"))
            if (r == 0)
                r = import_link_locked(im, doc, sizes, l, now, maxes);
        bv_job_progress_add(job, 1);
    }
    if (r == 0)
        r = bump_seq(app->db, "backup", maxes[0]);
    if (r == 0)
        r = bump_seq(app->db, "chain", maxes[1]);
    if (r == 0)
        r = bump_seq(app->db, "merge", maxes[2]);
    if (r == 0)
        r = bvdb_commit(app->db);
    else
        bvdb_rollback(app->db);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot record the import from remote '%s' in the "
                             "catalog (nothing was recorded)", im->remote);
    return 0;
}

static int import_run(struct bv_job *job, void *opaque, bv_error **errp)
{
    struct import *im = opaque;
    pthread_mutex_lock(&im->app->backups_lock);
    int r = import_locked(im, job, errp);
    pthread_mutex_unlock(&im->app->backups_lock);
    if (r == 0)
        log_info("imported %d chain(s) from remote '%s'", cJSON_GetArraySize(im->manifests),
                 im->remote);
    return r;
}

static void import_release(void *opaque)
{
    struct import *im = opaque;
    cJSON_Delete(im->manifests);
    free(im);
}

/* The bucket's manifests: [{"key","doc","sizes"}]. */
static int read_manifests(struct bv_app *app, const char *name, cJSON **out, bv_error **errp)
{
    struct bv_s3 *s3 = NULL;
    int r = bv_remotes_client(app, name, &s3, errp);
    if (r < 0)
        return r;
    struct list_keys lk = { cJSON_CreateArray(), cJSON_CreateObject() };
    r = bv_s3_list(s3, "", list_keys_cb, &lk, errp);
    cJSON *all = cJSON_CreateArray();
    const cJSON *k;
    cJSON_ArrayForEach(k, lk.keys) {
        if (r < 0)
            break;
        char *text = NULL;
        size_t len = 0;
        r = bv_s3_get(s3, k->valuestring, MANIFEST_MAX, &text, &len, errp);
        cJSON *doc = r == 0 ? cJSON_ParseWithLength(text, len) : NULL;
        free(text);
        if (r == 0 && !doc)
            r = bv_error_setf(errp, EINVAL, "manifest '%s' is not JSON", k->valuestring);
        if (r == 0)
            r = check_manifest(k->valuestring, doc, errp);
        if (r < 0) {
            cJSON_Delete(doc);
            break;
        }
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "key", k->valuestring);
        cJSON_AddItemToObject(m, "doc", doc);
        /* the sizes of this chain's objects */
        cJSON *sizes = cJSON_AddObjectToObject(m, "sizes");
        const cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(doc, "links")) {
            const cJSON *sz = cJSON_GetObjectItemCaseSensitive(lk.sizes, jstr(l, "key"));
            if (!sz) {
                r = bv_error_setf(errp, ENOENT, "manifest '%s' names object '%s', which the "
                                  "bucket does not hold", k->valuestring, jstr(l, "key"));
                break;
            }
            cJSON_AddNumberToObject(sizes, jstr(l, "key"), sz->valuedouble);
        }
        cJSON_AddItemToArray(all, m);
    }
    cJSON_Delete(lk.keys);
    cJSON_Delete(lk.sizes);
    bv_s3_free(s3);
    if (r == 0 && cJSON_GetArraySize(all) == 0)
        r = bv_error_setf(errp, ENOENT, "remote '%s' holds no chain manifests "
                          "(<drive>/<chain>/manifest.json)", name);
    if (r < 0) {
        cJSON_Delete(all);
        return r;
    }
    *out = all;
    return 0;
}

int bv_remotes_import(struct bv_app *app, const char *name, struct bv_job_info *info,
                      bv_error **errp)
{
    struct bv_remote_view rv;
    int r = bv_remotes_get(app, name, &rv, NULL);
    if (r < 0)
        return bv_error_setf(errp, ENODEV, "Remote '%s' not found", name);
    cJSON *manifests = NULL;
    r = read_manifests(app, name, &manifests, errp);
    if (r < 0)
        return r;
    struct collide c = { app, "", 0 };
    pthread_mutex_lock(&app->backups_lock);
    collisions_locked(app, manifests, &c);
    pthread_mutex_unlock(&app->backups_lock);
    if (c.n) {
        cJSON_Delete(manifests);
        return bv_error_setf(errp, EEXIST, "the import from remote '%s' collides with what "
                             "exists here: %s", name, c.names);
    }
    struct import *im = calloc(1, sizeof(*im));
    if (!im) {
        cJSON_Delete(manifests);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    im->app = app;
    snprintf(im->remote, sizeof(im->remote), "%s", name);
    im->manifests = manifests;
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "remote", name);
    cJSON_AddNumberToObject(params, "chains", cJSON_GetArraySize(manifests));
    char *text = cJSON_PrintUnformatted(params);
    cJSON_Delete(params);
    struct bv_task_spec s = {
        .type = "import", .device = NULL, .params = text, .run = import_run,
        .release = import_release, .opaque = im,
    };
    r = bv_jobs_task(app, &s, info, errp);      /* im belongs to the job */
    free(text);
    return r;
}

/* ---- tiered links brought back for a prune ---- */

#define FETCH_CHUNK (8u << 20)

bool bv_remotes_has_copy(struct bv_app *app, const char *bid)
{
    struct present_q q = { bid, false };
    bvdb_remote_link_list(app->db, NULL, bid, present_cb, &q);
    return q.present;
}

struct first_present {
    char remote[BV_REMOTE_NAME_MAX + 1];
    char key[1200];
};

static int first_present_cb(const struct bvdb_remote_link *l, void *opaque)
{
    struct first_present *f = opaque;
    if (strcmp(l->state, "present") != 0 || f->remote[0])
        return 0;
    snprintf(f->remote, sizeof(f->remote), "%s", l->remote);
    snprintf(f->key, sizeof(f->key), "%s", l->key);
    return 0;
}

int bv_remotes_fetch_locked(struct bv_app *app, const char *bid, bv_error **errp)
{
    struct bv_backup_rec b;
    int r = bv_backups_get(app, bid, &b, errp);
    struct stat st;
    if (r < 0 || bv_path_stat(app->root, b.file, &st, NULL) == 0)
        return r;                                   /* already here */
    struct first_present f = { "", "" };
    bvdb_remote_link_list(app->db, NULL, bid, first_present_cb, &f);
    if (!f.remote[0])
        return bv_error_setf(errp, ENOENT, "backup '%s' is on no remote", bid);
    struct bv_s3 *s3 = NULL;
    uint64_t size = 0;
    r = bv_remotes_client(app, f.remote, &s3, errp);
    if (r == 0)
        r = bv_s3_head(s3, f.key, &size, errp);
    int fd = -1;
    if (r == 0)
        r = bv_path_open(app->root, NULL, b.file, 0, O_WRONLY | O_CREAT | O_EXCL, 0644, &fd,
                         NULL, errp);
    char *buf = r == 0 ? malloc(FETCH_CHUNK) : NULL;
    if (r == 0 && !buf)
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    for (uint64_t off = 0; r == 0 && off < size; off += FETCH_CHUNK) {
        size_t n = size - off < FETCH_CHUNK ? (size_t)(size - off) : FETCH_CHUNK;
        r = bv_s3_get_range(s3, f.key, off, n, buf, errp);
        if (r == 0 && pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
            r = bv_error_setf(errp, EIO, "cannot write '%s': %s", b.file, strerror(errno));
    }
    if (r == 0 && fdatasync(fd) < 0)
        r = bv_error_setf(errp, EIO, "cannot sync '%s': %s", b.file, strerror(errno));
    free(buf);
    if (fd >= 0) {
        close(fd);
        if (r < 0)
            bv_path_unlink(app->root, b.file, NULL);
    }
    bv_s3_free(s3);
    if (r < 0)
        bv_error_prepend(errp, "fetching backup '%s' from remote '%s'", bid, f.remote);
    else
        log_info("fetched tiered backup '%s' from remote '%s' for a prune", bid, f.remote);
    return r;
}

struct drop_acc {
    struct bv_app *app;
};

static int drop_cb(const struct bvdb_backup *b, void *opaque)
{
    struct drop_acc *d = opaque;
    struct stat st;
    if (bvdb_backup_get_local(d->app->db, b->id) == 0 &&
        bv_path_stat(d->app->root, b->file, &st, NULL) == 0)
        bv_path_unlink(d->app->root, b->file, NULL);
    return 0;
}

void bv_remotes_drop_fetched_locked(struct bv_app *app, const char *chain)
{
    struct drop_acc d = { app };
    bvdb_backup_list(app->db, NULL, chain, drop_cb, &d);
}
