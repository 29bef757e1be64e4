/*
 * Import (POST /remotes/{name}/import, runtime/remotes.h): drives, chains and backups rebuilt
 * from a bucket's manifests alone, and the remote-only drives it makes.  The request reads and
 * checks every manifest and refuses collisions; the job records everything in one catalog
 * transaction under app->backups_lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "bv/path.h"
#include "bvdb/backups.h"
#include "bvdb/remotes.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/remotes.h"
#include "runtime/remotes-int.h"
#include "runtime/jobs.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "s3/s3.h"

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

/* The local name an imported link gets: chains/<drive>/<chain>/<name>, <name> being the
 * last part of its recorded "file" (or, without one, of its object key).  The manifest comes
 * from the bucket, not from us: a recorded file anywhere else (another chain's link, '..')
 * is refused, since files of links that are not local are removed at start. */
static int link_file(const cJSON *doc, const cJSON *l, char *out, size_t len)
{
    const char *drive = bv_remote_jstr(doc, "drive"), *chain = bv_remote_jstr(doc, "chain");
    const char *file = bv_remote_jstr(l, "file"), *key = bv_remote_jstr(l, "key");
    const char *from = file ? file : key;
    if (!from)
        return -EINVAL;
    const char *base = strrchr(from, '/');
    base = base ? base + 1 : from;
    if (!id_ok(base, 256))
        return -EINVAL;
    int n = snprintf(out, len, "chains/%s/%s/%s", drive, chain, base);
    if (n < 0 || (size_t)n >= len || (file && strcmp(file, out) != 0))
        return -EINVAL;
    return 0;
}

/* A manifest as replicate writes it, checked before anything is recorded. */
static int check_manifest(const char *key, const cJSON *doc, bv_error **errp)
{
    const char *drive = bv_remote_jstr(doc, "drive"), *chain = bv_remote_jstr(doc, "chain");
    const cJSON *links = cJSON_GetObjectItemCaseSensitive(doc, "links");
    if (!id_ok(drive, 129) || !id_ok(chain, BV_BACKUP_ID_MAX) || !cJSON_IsArray(links))
        return bv_error_setf(errp, EINVAL, "manifest '%s' is not a Blockvault manifest (drive, "
                             "chain, links)", key);
    const cJSON *l;
    const char *prev = NULL;
    cJSON_ArrayForEach(l, links) {
        const char *id = bv_remote_jstr(l, "id"), *lkey = bv_remote_jstr(l, "key"), *kind = bv_remote_jstr(l, "kind");
        const cJSON *parent = cJSON_GetObjectItemCaseSensitive(l, "parent");
        if (!id_ok(id, BV_BACKUP_ID_MAX) || !lkey || !kind ||
            (strcmp(kind, "full") && strcmp(kind, "incremental")))
            return bv_error_setf(errp, EINVAL, "manifest '%s': a link lacks id, key or kind",
                                 key);
        char file[1024];
        if (link_file(doc, l, file, sizeof(file)) < 0)
            return bv_error_setf(errp, EINVAL, "manifest '%s': link '%s' names a file outside "
                                 "its chain's folder chains/%s/%s/ ('%s')", key, id, drive,
                                 chain, bv_remote_jstr(l, "file") ? bv_remote_jstr(l, "file")
                                                                  : lkey);
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
        const char *drive = bv_remote_jstr(doc, "drive"), *chain = bv_remote_jstr(doc, "chain");
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
            if (bvdb_backup_get(app->db, bv_remote_jstr(l, "id"), noop_backup, NULL) == 0)
                collide_add(c, "backup", bv_remote_jstr(l, "id"));
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
    const char *drive = bv_remote_jstr(doc, "drive"), *chain = bv_remote_jstr(doc, "chain");
    const char *id = bv_remote_jstr(l, "id"), *key = bv_remote_jstr(l, "key");
    char file[1024];
    if (link_file(doc, l, file, sizeof(file)) < 0)     /* checked by check_manifest */
        return -EINVAL;
    const cJSON *parent = cJSON_GetObjectItemCaseSensitive(l, "parent");
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(l, "virtual_size");
    const cJSON *db_ = cJSON_GetObjectItemCaseSensitive(l, "data_bytes");
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(l, "seq");
    const char *hex = bv_remote_jstr(l, "crcs");
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
    const char *created = bv_remote_jstr(l, "created_at"), *completed = bv_remote_jstr(l, "completed_at");
    struct bvdb_backup b = {
        .id = id, .drive_id = drive, .chain_id = chain,
        .parent_id = cJSON_IsString(parent) ? parent->valuestring : NULL,
        .kind = bv_remote_jstr(l, "kind"), .file = file, .status = "complete",
        .created_at = created && created[0] ? created : now,
        .completed_at = completed && completed[0] ? completed : now,
        .virtual_size = cJSON_IsNumber(vs) ? (uint64_t)vs->valuedouble : 0,
        .data_bytes = cJSON_IsNumber(db_) ? (uint64_t)db_->valuedouble : 0,
        .checksum = bv_remote_jstr(l, "checksum"),
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
        const char *drive = bv_remote_jstr(doc, "drive"), *chain = bv_remote_jstr(doc, "chain");
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
        const char *created = first ? bv_remote_jstr(first, "created_at") : NULL;
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
            const cJSON *sz = cJSON_GetObjectItemCaseSensitive(lk.sizes, bv_remote_jstr(l, "key"));
            if (!sz) {
                r = bv_error_setf(errp, ENOENT, "manifest '%s' names object '%s', which the "
                                  "bucket does not hold", k->valuestring, bv_remote_jstr(l, "key"));
                break;
            }
            cJSON_AddNumberToObject(sizes, bv_remote_jstr(l, "key"), sz->valuedouble);
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
