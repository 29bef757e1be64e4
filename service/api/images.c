/*
 * /api/v1/images: plain image files in the storage directory, like qemu-img
 * (create, info, list, delete, compare, check, rebase -u).  Every path is
 * confined to the storage directory; every operation calls the same core
 * functions as bvimg.
 */
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "bv/image.h"
#include "bv/path.h"
#include "runtime/jobs.h"
#include "runtime/registry.h"

#define MAX_LISTED_IMAGES 10000

/* rel: a client name, resolved beneath the storage directory */
static int open_image(struct bv_app *app, const char *rel, bool no_backing, bool rw,
                      bv_node **out, bv_error **errp)
{
    struct bv_open_opts o = {
        .path = rel, .format = BV_FMT_NONE, .root = app->root,
        .read_only = !rw, .no_backing = no_backing,
    };
    return bv_node_open(&o, out, errp);
}

/* A name read from an image file: bytes that are not UTF-8 would make the
 * reply invalid JSON, so such a name shows its non-ASCII bytes as '?'. */
static void add_file_string(cJSON *o, const char *key, const char *s)
{
    size_t n = strlen(s);
    char *copy = bvj_utf8_valid(s, n) ? NULL : strdup(s);
    for (size_t i = 0; copy && i < n; i++)
        if ((unsigned char)copy[i] >= 0x80)
            copy[i] = '?';
    cJSON_AddStringToObject(o, key, copy ? copy : bvj_utf8_valid(s, n) ? s : "");
    free(copy);
}

/* {"id","name","vm_state_size","date" (RFC 3339, UTC),"vm_clock_ns"} */
static cJSON *snapshot_json(const struct bv_snapshot_info *sn)
{
    char date[32] = "";
    struct tm tm;
    time_t t = (time_t)sn->date_sec;
    if (gmtime_r(&t, &tm))
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON *o = cJSON_CreateObject();
    add_file_string(o, "id", sn->id);
    add_file_string(o, "name", sn->name);
    cJSON_AddNumberToObject(o, "vm_state_size", (double)sn->vm_state_size);
    cJSON_AddStringToObject(o, "date", date);
    cJSON_AddNumberToObject(o, "vm_clock_ns", (double)sn->vm_clock_ns);
    return o;
}

/* "snapshots":[…] on o, only when the image has internal snapshots. */
static int add_snapshots(cJSON *o, bv_node *n, bv_error **errp)
{
    struct bv_snapshot_list sl;
    int r = bv_node_snapshots(n, &sl, errp);
    if (r < 0 || sl.count == 0)
        return r;
    cJSON *arr = cJSON_AddArrayToObject(o, "snapshots");
    for (uint32_t i = 0; arr && i < sl.count; i++)
        cJSON_AddItemToArray(arr, snapshot_json(&sl.sn[i]));
    bv_snapshot_list_free(&sl);
    return 0;
}

/* Info object for an open node; rel is the client-visible file name. */
cJSON *api_image_info_json(const char *rel, bv_node *n, bv_error **errp)
{
    struct bv_image_info info;
    if (bv_node_info(n, &info, errp) < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", rel);
    cJSON_AddStringToObject(o, "format", bv_format_name(info.format));
    cJSON_AddNumberToObject(o, "virtual_size", (double)info.virtual_size);
    cJSON_AddNumberToObject(o, "actual_size", (double)info.actual_size);
    cJSON_AddNumberToObject(o, "cluster_size", info.cluster_size);
    if (info.backing[0]) {
        cJSON_AddStringToObject(o, "backing", info.backing);
        const char *bf = bv_format_name(info.backing_format);
        if (bf)
            cJSON_AddStringToObject(o, "backing_format", bf);
        else
            cJSON_AddNullToObject(o, "backing_format");
    } else {
        cJSON_AddNullToObject(o, "backing");
        cJSON_AddNullToObject(o, "backing_format");
    }
    cJSON_AddBoolToObject(o, "dirty", info.dirty);
    if (add_snapshots(o, n, errp) < 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static void reply_info(struct bv_request *req, struct bv_reply *rep, int status,
                       const char *rel)
{
    bv_node *n = NULL;
    bv_error *e = NULL;
    int r = open_image(req->app, rel, true, false, &n, &e);
    cJSON *o = r < 0 ? NULL : api_image_info_json(rel, n, &e);
    bv_node_close(n, NULL);
    if (!o) {
        api_fail(rep, r == -ENOENT ? 404 : 400, r, e);
        return;
    }
    bv_reply_json(rep, status, o);
}

void api_images_create(struct bv_request *req, struct bv_reply *rep)
{
    const char *file = NULL, *backing = NULL;
    int fmt = -1, bfmt = -1;
    uint64_t size = 0, cluster = 0;
    bool have_size = false;
    const struct bvj_field f[] = {
        { "file", BVJ_STRING, true, &file },
        { "format", BVJ_ENUM, true, &fmt, .names = api_format_names },
        { "size", BVJ_SIZE, false, &size, &have_size, 1, BV_MAX_IMAGE_SIZE },
        { "cluster_size", BVJ_U64, false, &cluster },
        { "backing", BVJ_STRING, false, &backing },
        { "backing_format", BVJ_ENUM, false, &bfmt, .names = api_format_names },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    if (!have_size && !backing) {
        bv_reply_error(rep, 400, NULL, "Parameter 'size' is missing (required without a backing file)");
        goto out;
    }
    /* the engine checks the options and words the refusals (a backing file
     * without its format; a cluster size out of range: one past 32 bits
     * saturates to a value it refuses) */
    struct bv_create_opts co = {
        .path = file, .root = req->app->root, .format = api_format(fmt),
        .size = size, .cluster_size = cluster > UINT32_MAX ? UINT32_MAX : (uint32_t)cluster,
        .backing = backing, .backing_format = bfmt >= 0 ? api_format(bfmt) : BV_FMT_NONE,
    };
    bv_error *e = NULL;
    int r = bv_image_create(&co, &e);       /* O_EXCL: "already exists" is -EEXIST */
    if (r < 0) {
        api_fail(rep, r == -EEXIST ? 409 : 400, r, e);
        goto out;
    }
    reply_info(req, rep, 201, file);
out:
    cJSON_Delete(body);
}

void api_images_get(struct bv_request *req, struct bv_reply *rep)
{
    reply_info(req, rep, 200, req->params[0]);
}

struct walk {
    struct bv_request *req;
    cJSON *arr;
    unsigned n;
};

static void walk_entry(struct walk *w, int dfd, const char *rel, const char *name, int depth);

/* List rel (a directory beneath the storage dir) through its own descriptor. */
static void walk_dir(struct walk *w, const char *rel, int depth)
{
    int fd = -1;
    if (bv_path_open(w->req->app->root, NULL, rel, 0, O_RDONLY | O_DIRECTORY, 0, &fd, NULL,
                     NULL) < 0)
        return;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) && w->n < MAX_LISTED_IMAGES) {
        if (de->d_name[0] == '.')
            continue;
        char path[4608];
        if (snprintf(path, sizeof(path), "%s%s%s", strcmp(rel, ".") ? rel : "",
                     strcmp(rel, ".") ? "/" : "", de->d_name) >= (int)sizeof(path))
            continue;
        walk_entry(w, dirfd(d), path, de->d_name, depth);
    }
    closedir(d);
}

static void walk_entry(struct walk *w, int dfd, const char *rel, const char *name, int depth)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return;
    if (S_ISDIR(st.st_mode) && depth < 8) {
        walk_dir(w, rel, depth + 1);
        return;
    }
    if (!S_ISREG(st.st_mode))
        return;
    bv_node *n = NULL;
    if (open_image(w->req->app, rel, true, false, &n, NULL) == 0) {
        cJSON *o = api_image_info_json(rel, n, NULL);
        if (o) {
            cJSON_AddItemToArray(w->arr, o);
            w->n++;
        }
    }
    bv_node_close(n, NULL);
}

void api_images_list(struct bv_request *req, struct bv_reply *rep)
{
    struct walk w = { .req = req, .arr = cJSON_CreateArray() };
    walk_dir(&w, ".", 0);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "images", w.arr);
    bv_reply_json(rep, 200, o);
}

/* 409 (after replying) if a drive keeps the file open or a job writes it. */
static bool in_use(struct bv_request *req, struct bv_reply *rep, const char *file)
{
    struct bv_file_id id;
    char who[300];
    if (api_file_id(req->app, file, &id, NULL) < 0 ||
        (!bv_registry_file_in_use(req->app, &id, who, sizeof(who)) &&
         !bv_jobs_file_in_use(req->app, &id, who, sizeof(who))))
        return false;
    bv_reply_error(rep, 409, NULL, "Image '%s' is in use by %s", file, who);
    return true;
}

void api_images_delete(struct bv_request *req, struct bv_reply *rep)
{
    const char *file = req->params[0];
    bv_error *e = NULL;
    if (in_use(req, rep, file))
        return;
    int r = bv_path_unlink(req->app->root, file, &e);   /* unlinkat beneath the storage dir */
    if (r < 0)
        api_fail(rep, r == -ENOENT ? 404 : 0, r, e);    /* a directory: 400 */
    else
        bv_reply_empty(rep, 204);
}

/* {"file","format"?} → an open node, or NULL after replying. */
/* A side of a compare: a plain open, or the node of the drive that has the
 * file open (its view includes metadata not yet written back). */
struct side {
    bv_node *node;                      /* owned unless drive is set */
    struct bv_drive_entry *drive;       /* a reference, or NULL */
};

static void close_side(struct bv_app *app, struct side *s)
{
    if (s->drive)
        bv_registry_put(app, s->drive);
    else
        bv_node_close(s->node, NULL);
}

static bool drive_side(struct bv_app *app, const char *file, int fmt, struct side *out)
{
    struct bv_file_id id;
    if (api_file_id(app, file, &id, NULL) < 0)
        return false;
    struct bv_drive_entry *e = bv_registry_get_by_image(app, &id);
    if (!e)
        return false;
    bv_node *n = bv_drive_node(e->drive);
    if (fmt >= 0 && bv_node_format(n) != api_format(fmt)) {
        bv_registry_put(app, e);
        return false;
    }
    out->node = n;
    out->drive = e;
    return true;
}

static bv_node *open_side(struct bv_request *req, struct bv_reply *rep, const cJSON *side,
                          const char *what, struct side *out)
{
    const char *file = NULL;
    int fmt = -1;
    const struct bvj_field f[] = {
        { "file", BVJ_STRING, true, &file },
        { "format", BVJ_ENUM, false, &fmt, .names = api_format_names },
    };
    char err[512];
    if (bvj_read(side, f, BVJ_COUNT(f), err, sizeof(err)) < 0) {
        bv_reply_error(rep, 400, NULL, "'%s': %s", what, err);
        return NULL;
    }
    out->drive = NULL;
    if (drive_side(req->app, file, fmt, out))
        return out->node;
    struct bv_open_opts o = {
        .path = file, .format = fmt >= 0 ? api_format(fmt) : BV_FMT_NONE,
        .root = req->app->root, .read_only = true,
    };
    bv_node *n = NULL;
    bv_error *e = NULL;
    int r = bv_node_open(&o, &n, &e);
    if (r < 0) {
        api_fail(rep, 400, r, e);
        return NULL;
    }
    out->node = n;
    return n;
}

void api_images_compare(struct bv_request *req, struct bv_reply *rep)
{
    const cJSON *a = NULL, *b = NULL;
    bool strict = false;
    const struct bvj_field f[] = {
        { "a", BVJ_OBJECT, true, &a },
        { "b", BVJ_OBJECT, true, &b },
        { "strict", BVJ_BOOL, false, &strict },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    struct side sa = { NULL, NULL }, sb = { NULL, NULL };
    bv_node *na = open_side(req, rep, a, "a", &sa);
    bv_node *nb = na ? open_side(req, rep, b, "b", &sb) : NULL;
    if (na && nb) {
        bool same = false;
        uint64_t first = UINT64_MAX;
        bv_error *e = NULL;
        int r = bv_image_compare(na, nb, strict, &same, &first, &e);
        if (r < 0) {
            api_fail(rep, 500, r, e);
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddBoolToObject(o, "identical", same);
            if (same || first == UINT64_MAX)
                cJSON_AddNullToObject(o, "first_difference_offset");
            else
                cJSON_AddNumberToObject(o, "first_difference_offset", (double)first);
            bv_reply_json(rep, 200, o);
        }
    }
    close_side(req->app, &sa);
    close_side(req->app, &sb);
    cJSON_Delete(body);
}

void api_images_check(struct bv_request *req, struct bv_reply *rep)
{
    const char *file = NULL;
    bool repair = false;
    const struct bvj_field f[] = {
        { "file", BVJ_STRING, true, &file },
        { "repair_leaks", BVJ_BOOL, false, &repair },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    bv_node *n = NULL;
    bv_error *e = NULL;
    int r = 0;
    if (repair && in_use(req, rep, file))
        goto out;
    r = open_image(req->app, file, true, repair, &n, &e);
    if (r < 0) {
        api_fail(rep, 400, r, e);
        goto out;
    }
    struct bv_check_result res = { 0 };
    r = bv_image_check(n, repair, &res, &e);
    if (r < 0) {
        api_fail(rep, r == -ENOTSUP ? 400 : 500, r, e);
        goto out;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "errors", (double)res.corruptions);
    cJSON_AddNumberToObject(o, "leaks", (double)res.leaks);
    if (repair)
        cJSON_AddNumberToObject(o, "leaks_fixed", (double)res.leaks_fixed);
    cJSON *msgs = cJSON_AddArrayToObject(o, "corruptions");
    for (unsigned i = 0; i < res.nmessages; i++)
        cJSON_AddItemToArray(msgs, cJSON_CreateString(res.messages[i]));
    bv_check_result_free(&res);
    bv_reply_json(rep, 200, o);
out:
    bv_node_close(n, NULL);
    cJSON_Delete(body);
}

void api_images_rebase(struct bv_request *req, struct bv_reply *rep)
{
    const char *file = NULL, *backing = NULL;
    int bfmt = -1;
    bool unsafe = false;
    const struct bvj_field f[] = {
        { "file", BVJ_STRING, true, &file },
        { "backing", BVJ_STRING, true, &backing },
        { "backing_format", BVJ_ENUM, true, &bfmt, .names = api_format_names },
        { "unsafe", BVJ_BOOL, false, &unsafe },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    if (!unsafe) {
        bv_reply_error(rep, 400, NULL, "only an unsafe rebase (\"unsafe\":true, qemu-img rebase -u) "
                       "is supported: it rewrites the backing file name without copying data");
        goto out;
    }
    bv_error *e = NULL;
    struct stat st;
    int r = 0;
    if ((r = bv_path_stat(req->app->root, file, &st, &e)) < 0 ||
        (backing[0] && (r = bv_path_stat(req->app->root, backing, &st, &e)) < 0)) {
        api_fail(rep, 400, r, e);
        goto out;
    }
    if (in_use(req, rep, file))
        goto out;
    r = bv_image_rebase_unsafe(file, req->app->root, backing, api_format(bfmt), &e);
    if (r < 0) {
        api_fail(rep, 400, r, e);
        goto out;
    }
    reply_info(req, rep, 200, file);
out:
    cJSON_Delete(body);
}
