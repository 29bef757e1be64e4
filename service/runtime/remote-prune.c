/*
 * The remote side of a prune and the tiered links a merge fetches back (runtime/remotes.h;
 * the order of the steps and why it is crash-safe: the top of runtime/prune.c).  Every
 * function here runs under app->backups_lock, held by the prune for its whole run.
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
#include "s3/s3.h"

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
            bv_remote_key_of(&tmp, nkey, sizeof(nkey));
            cJSON_AddStringToObject(o, "new_key", nkey);
        }
        struct bv_backup_rec g;
        if (grand && present_key(app, rem, grand, gkey, sizeof(gkey)) &&
            bv_backups_get(app, grand, &g, NULL) == 0) {
            cJSON_AddStringToObject(o, "grand_key", gkey);
            cJSON_AddStringToObject(o, "grand_file", g.file);
            /* A locked grandchild is re-uploaded as a new version of its key: that version
             * gets the same retention, read now from the remote (the catalog keeps only the
             * date), so that a redo after a crash still knows it. */
            char mode[32], guntil[64];
            if (bv_remotes_locked_until(app, rem, grand, until)) {
                struct bv_s3 *s3 = NULL;
                r = bv_remotes_client(app, rem, &s3, errp);
                if (r == 0)
                    r = bv_s3_get_retention(s3, gkey, mode, sizeof(mode), guntil,
                                            sizeof(guntil), errp);
                bv_s3_free(s3);
                if (r < 0) {
                    bv_error_prepend(errp, "reading the object lock of backup '%s' on remote "
                                     "'%s'", grand, rem);
                    cJSON_Delete(o);
                    break;
                }
                cJSON_AddStringToObject(o, "grand_lock_mode", mode);
                cJSON_AddStringToObject(o, "grand_lock_until", guntil);
            }
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

int bv_remotes_prune_upload_locked(struct bv_app *app, const char *plan, const char *new_file,
                                   bv_error **errp)
{
    cJSON *arr = cJSON_Parse(plan ? plan : "[]");
    const cJSON *e;
    int r = 0;
    cJSON_ArrayForEach(e, arr) {
        const char *rem = bv_remote_jstr(e, "remote"), *nkey = bv_remote_jstr(e, "new_key");
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
        const char *rem = bv_remote_jstr(e, "remote"), *nkey = bv_remote_jstr(e, "new_key");
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
        const char *rem = bv_remote_jstr(e, "remote"), *drive = bv_remote_jstr(e, "drive"), *chain = bv_remote_jstr(e, "chain");
        const char *gkey = bv_remote_jstr(e, "grand_key"), *gfile = bv_remote_jstr(e, "grand_file");
        if (!rem || !drive || !chain)
            continue;
        struct bv_s3 *s3 = NULL;
        int q = bv_remotes_client(app, rem, &s3, r == 0 ? errp : NULL);
        /* 1. the grandchild's header now names the merged file: its object follows */
        struct stat st;
        const char *gmode = bv_remote_jstr(e, "grand_lock_mode");
        const char *guntil = bv_remote_jstr(e, "grand_lock_until");
        if (q == 0 && gkey && gfile && bv_path_stat(app->root, gfile, &st, NULL) == 0) {
            q = put_local_file(app, s3, gfile, gkey, NULL, r == 0 ? errp : NULL);
            if (q == 0 && gmode && guntil)   /* the new version is locked as the old one */
                q = bv_s3_put_retention(s3, gkey, gmode, guntil, r == 0 ? errp : NULL);
        }
        /* 2. the manifest names the merged link instead of the two old ones */
        if (q == 0) {
            char *text = bv_remote_manifest_text_locked(app, rem, drive, chain);
            q = bv_remote_upload_manifest(s3, drive, chain, text, r == 0 ? errp : NULL);
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
        const char *rem = bv_remote_jstr(e, "remote"), *nkey = bv_remote_jstr(e, "new_key");
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

/* ---- tiered links brought back for a prune ---- */

#define FETCH_CHUNK (8u << 20)

bool bv_remotes_has_copy(struct bv_app *app, const char *bid)
{
    return bv_remote_link_present(app, NULL, bid);
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
