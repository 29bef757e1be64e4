/*
 * /api/v1/drives: create or open, list, get, delete, resize, the data path
 * (PUT/GET data, the qemu-io command list).  Writes go through the core
 * drive, so every write dirties the drive's recording bitmaps.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "bv/iocmd.h"
#include "bv/path.h"
#include "runtime/drives.h"
#include "runtime/registry.h"

#define MAX_READ_LENGTH (64u << 20)     /* GET …/data: larger ranges are a 413 */
#define MAX_IO_COMMANDS 1024

struct bv_drive_entry *api_drive_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_drive_entry *e = NULL;
    bv_error *err = NULL;
    int r = bv_drives_get(req->app, req->params[0], &e, &err);
    if (r < 0)
        api_fail(rep, 0, r, err);
    return e;
}

cJSON *api_drive_json(struct bv_drive_entry *e)
{
    bv_node *n = bv_drive_node(e->drive);
    struct bv_image_info info;
    memset(&info, 0, sizeof(info));
    bv_node_info(n, &info, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", e->id);
    cJSON_AddStringToObject(o, "format", bv_drive_format_names[e->format]);
    cJSON_AddStringToObject(o, "file", e->file);
    cJSON_AddNumberToObject(o, "size", (double)bv_drive_size(e->drive));
    cJSON_AddNumberToObject(o, "allocated", (double)info.actual_size);
    cJSON_AddNumberToObject(o, "cluster_size", bv_node_cluster_size(n));
    if (info.backing[0])
        cJSON_AddStringToObject(o, "backing", info.backing);
    else
        cJSON_AddNullToObject(o, "backing");
    cJSON *filters = cJSON_AddArrayToObject(o, "filters");
    cJSON *fj = cJSON_Parse(e->filters);
    cJSON *it;
    cJSON_ArrayForEach(it, fj) {
        cJSON *f = cJSON_Duplicate(it, true);
        cJSON_AddStringToObject(f, "driver", it->string);
        cJSON_AddItemToArray(filters, f);
    }
    cJSON_Delete(fj);
    cJSON_AddBoolToObject(o, "busy", bv_drive_busy(e->drive));
    cJSON_AddItemToObject(o, "bitmaps", api_bitmaps_array(e->drive));
    return o;
}

struct create_req {
    const char *id, *file;
    int format;
    uint64_t size, cluster;
    bool have_size, existing;
    const cJSON *blkdebug, *test, *raw;
};

/* The request's shape (which fields go together); the operation checks
 * the rest. */
static int check_create(struct bv_reply *rep, const struct create_req *c)
{
    bv_error *err = NULL;
    int r = bv_drive_id_check(c->id, &err);
    if (r < 0) {
        api_fail(rep, 0, r, err);
        return -1;
    }
    bool verify = c->format == BV_DRIVE_BLKVERIFY;
    const char *msg = NULL;
    if (verify && (!c->test || !c->raw || c->blkdebug || c->file || c->have_size))
        msg = "a blkverify drive takes \"test\" and \"raw\" (and no file, size or blkdebug)";
    else if (!verify && (c->test || c->raw))
        msg = "\"test\" and \"raw\" are for \"format\":\"blkverify\"";
    else if (!verify && !c->existing && !c->have_size)
        msg = "Parameter 'size' is missing (required to create the image; use \"existing\":true "
              "to open one)";
    else if (!verify && c->existing && c->have_size)
        msg = "'size' cannot be given with \"existing\":true";
    if (msg)
        bv_reply_error(rep, 400, NULL, "%s", msg);
    return msg ? -1 : 0;
}

/* The catalog text of the request's filters (model/filters.h decodes it). */
static char *filters_text(const struct create_req *c)
{
    cJSON *f = cJSON_CreateObject();
    if (c->blkdebug)
        cJSON_AddItemToObject(f, "blkdebug", cJSON_Duplicate(c->blkdebug, true));
    if (c->test) {
        cJSON *bv = cJSON_AddObjectToObject(f, "blkverify");
        cJSON_AddItemToObject(bv, "test", cJSON_Duplicate(c->test, true));
        cJSON_AddItemToObject(bv, "raw", cJSON_Duplicate(c->raw, true));
    }
    char *s = cJSON_PrintUnformatted(f);
    cJSON_Delete(f);
    return s;
}

void api_drives_create(struct bv_request *req, struct bv_reply *rep)
{
    struct create_req c = { .format = -1 };
    const struct bvj_field f[] = {
        { "id", BVJ_STRING, true, &c.id },
        { "format", BVJ_ENUM, true, &c.format, .names = bv_drive_format_names },
        { "file", BVJ_STRING, false, &c.file },
        { "size", BVJ_SIZE, false, &c.size, &c.have_size, 1, BV_MAX_IMAGE_SIZE },
        { "cluster_size", BVJ_U64, false, &c.cluster, .max = BV_MAX_CLUSTER_SIZE },
        { "existing", BVJ_BOOL, false, &c.existing },
        { "blkdebug", BVJ_OBJECT, false, &c.blkdebug },
        { "test", BVJ_OBJECT, false, &c.test },
        { "raw", BVJ_OBJECT, false, &c.raw },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    struct bv_drive_filters filters = { 0 };
    struct bv_drive_entry *e = NULL;
    bv_error *err = NULL;
    char *text = NULL;
    int r;
    if (check_create(rep, &c) < 0)
        goto out;
    if (!(text = filters_text(&c))) {
        bv_reply_error(rep, 500, NULL, "out of memory");
        goto out;
    }
    struct bv_drive_spec spec = {
        .id = c.id, .format = (enum bv_drive_format)c.format, .file = c.file,
        .create = !c.existing, .size = c.size, .cluster_size = (uint32_t)c.cluster,
        .filters = &filters, .filters_text = text,
    };
    if ((r = bv_filters_decode(text, &filters, &err)) < 0) {
        api_fail(rep, 0, r, err);
        goto out;
    }
    if ((r = bv_drives_create(req->app, &spec, &e, &err)) < 0)
        api_fail(rep, 0, r, err);
    else
        bv_reply_json(rep, 201, api_drive_json(e));
out:
    bv_registry_put(req->app, e);
    bv_filters_clear(&filters);
    free(text);
    cJSON_Delete(body);
}

void api_drives_list(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_drive_entry **all = NULL;
    size_t n = bv_registry_all(req->app, &all);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, api_drive_json(all[i]));
        bv_registry_put(req->app, all[i]);
    }
    free(all);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "drives", arr);
    bv_reply_json(rep, 200, o);
}

void api_drives_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    bv_reply_json(rep, 200, api_drive_json(e));
    bv_registry_put(req->app, e);
}

void api_drives_delete(struct bv_request *req, struct bv_reply *rep)
{
    const char *del = bv_req_query(req, "delete_file");
    bool delete_file = del && strcmp(del, "true") == 0;
    if (del && !delete_file && strcmp(del, "false") != 0) {
        bv_reply_error(rep, 400, NULL, "delete_file must be true or false");
        return;
    }
    bv_error *err = NULL;
    int r = bv_drives_remove(req->app, req->params[0], delete_file, &err);
    if (r < 0)
        api_fail(rep, 0, r, err);
    else
        bv_reply_empty(rep, 204);
}

void api_drives_resize(struct bv_request *req, struct bv_reply *rep)
{
    uint64_t size = 0;
    bool shrink = false;
    const struct bvj_field f[] = {
        { "size", BVJ_SIZE, true, &size, .min = 1, .max = BV_MAX_IMAGE_SIZE },
        { "shrink", BVJ_BOOL, false, &shrink },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (e) {
        bv_error *err = NULL;
        int r = bv_drives_resize(req->app, e, size, shrink, &err);
        if (r < 0)
            api_fail(rep, 0, r, err);
        else
            bv_reply_json(rep, 200, api_drive_json(e));
    }
    bv_registry_put(req->app, e);
    cJSON_Delete(body);
}

/* ---- data path ---- */

static int query_u64(struct bv_request *req, struct bv_reply *rep, const char *key, bool required,
                     uint64_t *out)
{
    const char *s = bv_req_query(req, key);
    if (!s) {
        if (required)
            bv_reply_error(rep, 400, NULL, "query parameter '%s' is missing", key);
        return required ? -1 : 0;
    }
    if (bvj_parse_size(s, out) < 0) {
        bv_reply_error(rep, 400, NULL, "query parameter '%s' must be a byte count", key);
        return -1;
    }
    return 0;
}

static int check_range(struct bv_reply *rep, struct bv_drive_entry *e, uint64_t off, uint64_t len)
{
    uint64_t size = bv_drive_size(e->drive);
    if (off > size || len > size - off) {
        bv_reply_error(rep, 400, NULL, "range [%llu, +%llu) lies past the end of drive '%s' "
                       "(%llu bytes)", (unsigned long long)off, (unsigned long long)len, e->id,
                       (unsigned long long)size);
        return -1;
    }
    return 0;
}

void api_drives_data_put(struct bv_request *req, struct bv_reply *rep)
{
    uint64_t off = 0;
    if (query_u64(req, rep, "offset", true, &off) < 0)
        return;
    const char *fl = bv_req_query(req, "flush");
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    bv_error *err = NULL;
    int r = 0;
    if (check_range(rep, e, off, req->body_len) < 0)
        goto out;
    if (req->body_len)
        r = bv_drive_pwrite(e->drive, req->body, req->body_len, off, 0, &err);
    if (r == 0 && fl && strcmp(fl, "true") == 0)
        r = bv_drive_flush(e->drive, &err);
    if (r < 0)
        api_fail(rep, 500, r, err);
    else
        bv_reply_empty(rep, 204);
out:
    bv_registry_put(req->app, e);
}

void api_drives_data_get(struct bv_request *req, struct bv_reply *rep)
{
    uint64_t off = 0, len = 0;
    if (query_u64(req, rep, "offset", true, &off) < 0 ||
        query_u64(req, rep, "length", true, &len) < 0)
        return;
    if (len > MAX_READ_LENGTH) {
        bv_reply_error(rep, 413, NULL, "length %llu exceeds the limit of %u bytes per request",
                       (unsigned long long)len, MAX_READ_LENGTH);
        return;
    }
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    if (check_range(rep, e, off, len) == 0) {
        char *buf = malloc(len ? len : 1);
        bv_error *err = NULL;
        int r = buf ? bv_drive_pread(e->drive, buf, len, off, &err) : -ENOMEM;
        if (r < 0) {
            free(buf);
            api_fail(rep, 500, r, err);
        } else {
            bv_reply_bytes(rep, 200, "application/octet-stream", buf, len);
        }
    }
    bv_registry_put(req->app, e);
}

/* bv_iocmd_target over a drive */
static int t_pread(void *o, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_pread(o, buf, len, off, errp);
}
static int t_pwrite(void *o, const void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_pwrite(o, buf, len, off, 0, errp);
}
static int t_zero(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_write_zeroes(o, len, off, BV_ZERO_MAY_UNMAP, errp);
}
static int t_discard(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_discard(o, len, off, errp);
}
static int t_flush(void *o, bv_error **errp)
{
    return bv_drive_flush(o, errp);
}

static cJSON *run_command(const struct bv_iocmd_target *t, const char *line, bool *ok)
{
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "command", line);
    struct bv_iocmd cmd;
    bv_error *err = NULL;
    int64_t n = bv_iocmd_parse(line, &cmd, &err);
    if (n >= 0)
        n = bv_iocmd_exec(&cmd, t, &err);
    *ok = n >= 0;
    cJSON_AddBoolToObject(res, "ok", *ok);
    if (*ok)
        cJSON_AddNumberToObject(res, "bytes", (double)n);
    else
        cJSON_AddStringToObject(res, "error", err ? err->msg : strerror((int)-n));
    bv_error_free(err);
    return res;
}

void api_drives_io(struct bv_request *req, struct bv_reply *rep)
{
    const cJSON *cmds = NULL;
    const struct bvj_field f[] = {
        { "commands", BVJ_ARRAY, true, &cmds },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    int n = cJSON_GetArraySize(cmds);
    const cJSON *it;
    cJSON_ArrayForEach(it, cmds) {
        if (!cJSON_IsString(it)) {
            bv_reply_error(rep, 400, NULL, "'commands' must be an array of strings");
            goto out;
        }
    }
    if (n > MAX_IO_COMMANDS) {
        bv_reply_error(rep, 413, NULL, "at most %d commands per request", MAX_IO_COMMANDS);
        goto out;
    }
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        goto out;
    struct bv_iocmd_target t = { e->drive, t_pread, t_pwrite, t_zero, t_discard, t_flush };
    cJSON *results = cJSON_CreateArray();
    cJSON_ArrayForEach(it, cmds) {
        bool ok;
        cJSON_AddItemToArray(results, run_command(&t, it->valuestring, &ok));
        if (!ok)
            break;
    }
    bv_registry_put(req->app, e);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "results", results);
    bv_reply_json(rep, 200, o);
out:
    cJSON_Delete(body);
}
