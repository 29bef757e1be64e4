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
#include "api/remotes.h"
#include "api/vmdrives.h"
#include "app.h"
#include "bv/iocmd.h"
#include "bv/path.h"
#include "bvdb/reports.h"
#include "nbd/nbd.h"
#include "runtime/drives.h"
#include "runtime/registry.h"

#define MAX_READ_LENGTH (64u << 20)     /* GET …/data: larger ranges are a 413 */
#define MAX_IO_COMMANDS 1024
#define MAX_IO_BYTES    (4ULL << 30)    /* /io: bytes all commands of one request may move */

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
    char uri[4400];
    bv_nbd_uri(e->app, e->id, uri, sizeof(uri));
    if (uri[0])
        cJSON_AddStringToObject(o, "nbd_uri", uri);
    else
        cJSON_AddNullToObject(o, "nbd_uri");
    return o;
}

/* A detached drive (runtime/drives.h, "drive lifecycle"): no image, only its backups. */
static cJSON *detached_json(const struct bv_detached_drive *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "format", "detached");
    cJSON_AddNullToObject(o, "file");
    cJSON_AddNumberToObject(o, "size", (double)d->size);
    cJSON_AddNumberToObject(o, "allocated", 0);
    cJSON_AddNumberToObject(o, "cluster_size", d->cluster_size);
    cJSON_AddNullToObject(o, "backing");
    cJSON_AddArrayToObject(o, "filters");
    cJSON_AddBoolToObject(o, "busy", false);
    cJSON_AddArrayToObject(o, "bitmaps");
    cJSON_AddNullToObject(o, "nbd_uri");
    cJSON_AddStringToObject(o, "detached_at", d->detached_at);
    return o;
}

/* GET /drives/{id} of a detached drive: true when answered. */
static bool detached_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_detached_drive d;
    if (bv_drives_detached_get(req->app, req->params[0], &d) < 0)
        return false;
    bv_reply_json(rep, 200, detached_json(&d));
    return true;
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
    if (api_vm_drives_create(req, rep))          /* "format":"qemu" */
        return;
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
    api_vm_drives_list(req, arr);
    struct bv_detached_drive *dd = NULL;
    int nd = bv_drives_detached_list(req->app, &dd);
    for (int i = 0; i < nd; i++)
        cJSON_AddItemToArray(arr, detached_json(&dd[i]));
    free(dd);
    api_remote_drives_list(req, arr);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "drives", arr);
    bv_reply_json(rep, 200, o);
}

void api_drives_get(struct bv_request *req, struct bv_reply *rep)
{
    if (api_vm_drives_get(req, rep) || detached_get(req, rep) || api_remote_drives_get(req, rep))
        return;
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    bv_reply_json(rep, 200, api_drive_json(e));
    bv_registry_put(req->app, e);
}

/* ?key= is true, false or absent (false). */
static int query_flag(struct bv_request *req, struct bv_reply *rep, const char *key, bool *out)
{
    const char *s = bv_req_query(req, key);
    *out = s && strcmp(s, "true") == 0;
    if (s && !*out && strcmp(s, "false") != 0) {
        bv_reply_error(rep, 400, NULL, "%s must be true or false", key);
        return -1;
    }
    return 0;
}

void api_drives_delete(struct bv_request *req, struct bv_reply *rep)
{
    bool force, keep, drop;
    struct bv_drive_delete_opts o = { .backups = BV_DRIVE_BACKUPS_REFUSE };
    if (query_flag(req, rep, "delete_file", &o.delete_file) < 0 ||
        query_flag(req, rep, "force", &force) < 0 ||
        query_flag(req, rep, "keep_backups", &keep) < 0 ||
        query_flag(req, rep, "delete_backups", &drop) < 0)
        return;
    if (keep && drop) {
        bv_reply_error(rep, 400, NULL, "keep_backups and delete_backups exclude each other");
        return;
    }
    o.backups = keep ? BV_DRIVE_BACKUPS_KEEP : drop ? BV_DRIVE_BACKUPS_DELETE
                                                    : BV_DRIVE_BACKUPS_REFUSE;
    unsigned clients = bv_nbd_clients(req->app, req->params[0]);
    if (clients && !force) {
        bv_reply_error(rep, 409, NULL, "Drive '%s' has %u NBD client%s attached (use "
                       "?force=true to disconnect them)", req->params[0], clients,
                       clients == 1 ? "" : "s");
        return;
    }
    bv_error *err = NULL;
    int r = bv_drives_delete(req->app, req->params[0], &o, &err);
    if (r < 0) {
        api_fail(rep, 0, r, err);
    } else {
        bv_nbd_disconnect(req->app, req->params[0]);   /* forced, or attached meanwhile */
        bv_reply_empty(rep, 204);
    }
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

/* ?flush= is true, false or absent; anything else is a 400, not a guess. */
static int query_bool(struct bv_request *req, struct bv_reply *rep, const char *key, bool *out)
{
    const char *s = bv_req_query(req, key);
    *out = false;
    if (!s)
        return 0;
    if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
        *out = s[0] == 't';
        return 0;
    }
    bv_reply_error(rep, 400, NULL, "query parameter '%s' must be true or false, got '%s'", key, s);
    return -1;
}

struct report_find {
    const char *drive;
    char id[64];
};

static int newest_report(const struct bvdb_report *r, void *opaque)
{
    struct report_find *f = opaque;
    if (!r->drive_id || strcmp(r->drive_id, f->drive) != 0)
        return 0;
    snprintf(f->id, sizeof(f->id), "%s", r->id);
    return 1;
}

/* A failed read or write of drive data: 500 IOError (the contract's row for
 * I/O errors, blkverify mismatches included), with the id of the report a
 * mismatch filed (the drive's newest; the report is filed before the read
 * returns). */
static void data_fail(struct bv_request *req, struct bv_reply *rep, struct bv_drive_entry *e,
                      int r, bv_error *err)
{
    const char *msg = err ? err->msg : strerror(-r);
    struct report_find f = { .drive = e->id };
    if (err && err->kind == BV_ERR_MISMATCH)
        bvdb_report_list(req->app->db, 16, newest_report, &f);
    if (r == -ENOMEM)
        bv_reply_error(rep, 500, NULL, "%s", msg);
    else
        bv_reply_error_report(rep, 500, "IOError", f.id[0] ? f.id : NULL, "%s", msg);
    bv_error_free(err);
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
    bool flush;
    if (query_u64(req, rep, "offset", true, &off) < 0 || query_bool(req, rep, "flush", &flush) < 0)
        return;
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    bv_error *err = NULL;
    int r = 0;
    if (check_range(rep, e, off, req->body_len) < 0)
        goto out;
    if (req->body_len)
        r = bv_drive_pwrite(e->drive, req->body, req->body_len, off, 0, &err);
    if (r == 0 && flush)
        r = bv_drive_flush(e->drive, &err);
    if (r < 0)
        data_fail(req, rep, e, r, err);
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
    if (api_vm_drives_data_get(req, rep, off, len))
        return;
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    if (check_range(rep, e, off, len) == 0) {
        char *buf = malloc(len ? len : 1);
        bv_error *err = NULL;
        int r = buf ? bv_drive_pread(e->drive, buf, len, off, &err) : -ENOMEM;
        if (r < 0) {
            free(buf);
            data_fail(req, rep, e, r, err);
        } else {
            bv_reply_bytes(rep, 200, "application/octet-stream", buf, len);
        }
    }
    bv_registry_put(req->app, e);
}

/* bv_iocmd_target over a drive, for one request: cancelled when its client
 * has gone */
struct io_ctx {
    bv_drive *drive;
    struct bv_request *req;
};

static int t_pread(void *o, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_pread(((struct io_ctx *)o)->drive, buf, len, off, errp);
}
static int t_pwrite(void *o, const void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_pwrite(((struct io_ctx *)o)->drive, buf, len, off, 0, errp);
}
static int t_zero(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_write_zeroes(((struct io_ctx *)o)->drive, len, off, BV_ZERO_MAY_UNMAP, errp);
}
static int t_discard(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_drive_discard(((struct io_ctx *)o)->drive, len, off, errp);
}
static int t_flush(void *o, bv_error **errp)
{
    return bv_drive_flush(((struct io_ctx *)o)->drive, errp);
}
static bool t_cancelled(void *o)
{
    return bv_req_client_gone(((struct io_ctx *)o)->req);
}

/* One parsed command, or why it did not parse (reported in its turn). */
struct io_item {
    const char *line;
    struct bv_iocmd cmd;
    bv_error *err;
};

static cJSON *run_command(struct bv_iocmd_target *t, struct io_item *it, bool *ok)
{
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "command", it->line);
    bv_error *err = it->err;
    int64_t n = err ? -err->err : 0;
    it->err = NULL;
    if (!err) {
        t->size = bv_drive_size(((struct io_ctx *)t->opaque)->drive);
        n = bv_iocmd_exec(&it->cmd, t, &err);
    }
    *ok = n >= 0;
    cJSON_AddBoolToObject(res, "ok", *ok);
    if (*ok)
        cJSON_AddNumberToObject(res, "bytes", (double)n);
    else
        cJSON_AddStringToObject(res, "error", err ? err->msg : strerror((int)-n));
    bv_error_free(err);
    return res;
}

/* Parse every command first: the request's total is known (and capped)
 * before the first byte moves. */
static struct io_item *parse_commands(const cJSON *cmds, size_t n, struct bv_reply *rep)
{
    struct io_item *items = calloc(n ? n : 1, sizeof(*items));
    uint64_t total = 0;
    size_t i = 0;
    const cJSON *it;
    if (!items) {
        bv_reply_error(rep, 500, NULL, "out of memory for %zu commands", n);
        return NULL;
    }
    cJSON_ArrayForEach(it, cmds) {
        items[i].line = it->valuestring;
        if (bv_iocmd_parse(it->valuestring, &items[i].cmd, &items[i].err) == 0 &&
            (total += items[i].cmd.length) > MAX_IO_BYTES)
            break;
        i++;
    }
    if (total > MAX_IO_BYTES) {
        bv_reply_error(rep, 413, NULL, "the commands of one request may move at most %llu bytes "
                       "(command %zu passes it)", MAX_IO_BYTES, i + 1);
        for (size_t k = 0; k < n; k++)
            bv_error_free(items[k].err);
        free(items);
        return NULL;
    }
    return items;
}

static cJSON *run_commands(struct bv_request *req, bv_drive *d, struct io_item *items, size_t n)
{
    struct io_ctx ctx = { d, req };
    struct bv_iocmd_target t = {
        .opaque = &ctx, .pread = t_pread, .pwrite = t_pwrite, .write_zeroes = t_zero,
        .discard = t_discard, .flush = t_flush, .cancelled = t_cancelled,
    };
    cJSON *results = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        bool ok;
        cJSON_AddItemToArray(results, run_command(&t, &items[i], &ok));
        if (!ok)
            break;
    }
    return results;
}

void api_drives_io(struct bv_request *req, struct bv_reply *rep)
{
    const cJSON *cmds = NULL;
    const struct bvj_field f[] = {
        { "commands", BVJ_ARRAY, true, &cmds },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    struct io_item *items = NULL;
    size_t n = 0;
    if (!body)
        return;
    const cJSON *it;
    cJSON_ArrayForEach(it, cmds) {
        if (!cJSON_IsString(it)) {
            bv_reply_error(rep, 400, NULL, "'commands' must be an array of strings");
            goto out;
        }
        n++;
    }
    if (n > MAX_IO_COMMANDS) {
        bv_reply_error(rep, 413, NULL, "at most %d commands per request", MAX_IO_COMMANDS);
        goto out;
    }
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e || !(items = parse_commands(cmds, n, rep)))
        goto put;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "results", run_commands(req, e->drive, items, n));
    bv_reply_json(rep, 200, o);
    for (size_t i = 0; i < n; i++)
        bv_error_free(items[i].err);
    free(items);
put:
    bv_registry_put(req->app, e);
out:
    cJSON_Delete(body);
}
