/*
 * /api/v1/images: plain image files in the storage directory, like qemu-img
 * (create, info, list, delete, compare, check, rebase -u).  Every path is
 * confined to the storage directory; every operation calls the same core
 * functions as bvimg.
 */
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "bv/image.h"
#include "bv/path.h"
#include "runtime/registry.h"

#define MAX_LISTED_IMAGES 10000

/* abs: a canonical path inside the storage directory */
static int open_image(struct bv_app *app, const char *abs, bool no_backing, bool rw,
                      bv_node **out, bv_error **errp)
{
    char root[4200];
    if (!realpath(app->images_dir, root))
        return bv_error_setf(errp, EIO, "storage directory is not accessible");
    size_t n = strlen(root);
    if (strncmp(abs, root, n) != 0 || abs[n] != '/')
        return bv_error_setf(errp, EACCES, "'%s' is outside the storage directory", abs);
    struct bv_open_opts o = {
        .path = abs + n + 1, .format = BV_FMT_NONE, .root = app->images_dir,
        .read_only = !rw, .no_backing = no_backing,
    };
    return bv_node_open(&o, out, errp);
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
    return o;
}

static void reply_info(struct bv_request *req, struct bv_reply *rep, int status,
                       const char *abs)
{
    bv_node *n = NULL;
    bv_error *e = NULL;
    int r = open_image(req->app, abs, true, false, &n, &e);
    cJSON *o = r < 0 ? NULL : api_image_info_json(api_relpath(req, abs), n, &e);
    bv_node_close(n, NULL);
    if (!o) {
        api_fail(rep, 400, r, e);
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
    char *abs = NULL, *babs = NULL;
    if (!have_size && !backing) {
        bv_reply_error(rep, 400, NULL, "Parameter 'size' is missing (required without a backing file)");
        goto out;
    }
    if (backing && bfmt < 0) {
        bv_reply_error(rep, 400, NULL, "Backing file specified without backing format");
        goto out;
    }
    if (backing && !(babs = api_resolve(req, rep, backing, true)))
        goto out;
    if (!(abs = api_resolve(req, rep, file, false)))
        goto out;
    if (access(abs, F_OK) == 0) {
        bv_reply_error(rep, 409, NULL, "Image '%s' already exists", file);
        goto out;
    }
    struct bv_create_opts co = {
        .path = file, .root = req->app->images_dir, .format = api_format(fmt),
        .size = size, .cluster_size = (uint32_t)cluster, .backing = backing,
        .backing_format = bfmt >= 0 ? api_format(bfmt) : BV_FMT_NONE,
    };
    if (cluster > BV_MAX_CLUSTER_SIZE) {
        bv_reply_error(rep, 400, NULL, "Cluster size must be a power of two between 512 and 2048k");
        goto out;
    }
    bv_error *e = NULL;
    int r = bv_image_create(&co, &e);
    if (r < 0) {
        api_fail(rep, 400, r, e);
        goto out;
    }
    reply_info(req, rep, 201, abs);
out:
    free(abs);
    free(babs);
    cJSON_Delete(body);
}

void api_images_get(struct bv_request *req, struct bv_reply *rep)
{
    char *abs = NULL;
    bv_error *e = NULL;
    int r = bv_path_resolve(req->app->images_dir, NULL, req->params[0], 0, &abs, &e);
    if (r < 0) {
        api_fail(rep, r == -ENOENT ? 404 : 400, r, e);
        return;
    }
    reply_info(req, rep, 200, abs);
    free(abs);
}

struct walk {
    struct bv_request *req;
    cJSON *arr;
    unsigned n;
};

static void walk_dir(struct walk *w, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) && w->n < MAX_LISTED_IMAGES) {
        if (de->d_name[0] == '.')
            continue;
        char path[4608];
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
            continue;
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 8) {
            walk_dir(w, path, depth + 1);
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        bv_node *n = NULL;
        if (open_image(w->req->app, path, true, false, &n, NULL) == 0) {
            cJSON *o = api_image_info_json(api_relpath(w->req, path), n, NULL);
            if (o) {
                cJSON_AddItemToArray(w->arr, o);
                w->n++;
            }
        }
        bv_node_close(n, NULL);
    }
    closedir(d);
}

void api_images_list(struct bv_request *req, struct bv_reply *rep)
{
    char *root = NULL;
    if (bv_path_resolve(NULL, NULL, req->app->images_dir, 0, &root, NULL) < 0) {
        bv_reply_error(rep, 500, NULL, "storage directory is not readable");
        return;
    }
    struct walk w = { .req = req, .arr = cJSON_CreateArray() };
    walk_dir(&w, root, 0);
    free(root);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "images", w.arr);
    bv_reply_json(rep, 200, o);
}

void api_images_delete(struct bv_request *req, struct bv_reply *rep)
{
    char *abs = NULL;
    bv_error *e = NULL;
    int r = bv_path_resolve(req->app->images_dir, NULL, req->params[0], 0, &abs, &e);
    if (r < 0) {
        api_fail(rep, r == -ENOENT ? 404 : 400, r, e);
        return;
    }
    char who[300];
    if (bv_registry_file_in_use(req->app, abs, who, sizeof(who))) {
        bv_reply_error(rep, 409, NULL, "Image '%s' is in use by %s", req->params[0], who);
    } else if (unlink(abs) < 0) {
        bv_reply_error(rep, 500, NULL, "cannot delete '%s': %s", req->params[0], strerror(errno));
    } else {
        bv_reply_empty(rep, 204);
    }
    free(abs);
}

/* {"file","format"?} → an open node, or NULL after replying. */
static bv_node *open_side(struct bv_request *req, struct bv_reply *rep, const cJSON *side,
                          const char *what)
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
    char *abs = api_resolve(req, rep, file, true);
    if (!abs)
        return NULL;
    free(abs);
    struct bv_open_opts o = {
        .path = file, .format = fmt >= 0 ? api_format(fmt) : BV_FMT_NONE,
        .root = req->app->images_dir, .read_only = true,
    };
    bv_node *n = NULL;
    bv_error *e = NULL;
    int r = bv_node_open(&o, &n, &e);
    if (r < 0) {
        api_fail(rep, 400, r, e);
        return NULL;
    }
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
    bv_node *na = open_side(req, rep, a, "a");
    bv_node *nb = na ? open_side(req, rep, b, "b") : NULL;
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
    bv_node_close(na, NULL);
    bv_node_close(nb, NULL);
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
    char *abs = api_resolve(req, rep, file, true);
    bv_node *n = NULL;
    bv_error *e = NULL;
    int r = 0;
    if (!abs)
        goto out;
    char who[300];
    if (repair && bv_registry_file_in_use(req->app, abs, who, sizeof(who))) {
        bv_reply_error(rep, 409, NULL, "Image '%s' is in use by %s", file, who);
        goto out;
    }
    r = open_image(req->app, abs, true, repair, &n, &e);
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
    free(abs);
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
    char *abs = NULL, *babs = NULL;
    if (!unsafe) {
        bv_reply_error(rep, 400, NULL, "only an unsafe rebase (\"unsafe\":true, qemu-img rebase -u) "
                       "is supported: it rewrites the backing file name without copying data");
        goto out;
    }
    if (!(abs = api_resolve(req, rep, file, true)))
        goto out;
    if (backing[0] && !(babs = api_resolve(req, rep, backing, true)))
        goto out;
    char who[300];
    if (bv_registry_file_in_use(req->app, abs, who, sizeof(who))) {
        bv_reply_error(rep, 409, NULL, "Image '%s' is in use by %s", file, who);
        goto out;
    }
    bv_error *e = NULL;
    int r = bv_image_rebase_unsafe(file, req->app->images_dir, backing, api_format(bfmt), &e);
    if (r < 0) {
        api_fail(rep, 400, r, e);
        goto out;
    }
    reply_info(req, rep, 200, abs);
out:
    free(abs);
    free(babs);
    cJSON_Delete(body);
}
