/*
 * VM drives over REST: see api/vmdrives.h and runtime/vmdrives.h.  Parse,
 * call, format; the drive object is the local drive's shape (so clients and
 * the dashboard read both alike) plus "source".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/common.h"
#include "api/vmdrives.h"
#include "app.h"
#include "json/json.h"
#include "runtime/vmdrives.h"

static const char *const qemu_format[] = { "qemu", NULL };

bool api_vm_drives_create(struct bv_request *req, struct bv_reply *rep)
{
    char err[256];
    cJSON *peek = bvj_parse_object(req->body, req->body_len, err, sizeof(err));
    const char *fmt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(peek, "format"));
    bool mine = fmt && strcmp(fmt, "qemu") == 0;
    cJSON_Delete(peek);
    if (!mine)
        return false;
    struct bv_vm_drive_spec s = { 0 };
    int format = -1;
    const struct bvj_field f[] = {
        { "id", BVJ_STRING, true, &s.id },
        { "format", BVJ_ENUM, true, &format, .names = qemu_format },
        { "qmp", BVJ_STRING, true, &s.qmp },
        { "node", BVJ_STRING, true, &s.node },
        { "scratch_dir", BVJ_STRING, false, &s.scratch_dir },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return true;
    struct bv_vm_drive *d = NULL;
    bv_error *e = NULL;
    int r = bv_vm_drives_create(req->app, &s, &d, &e);
    if (r < 0)
        api_fail(rep, 0, r, e);
    else
        bv_reply_json(rep, 201, api_vm_drive_json(d));
    bv_vm_drives_put(req->app, d);
    cJSON_Delete(body);
    return true;
}

cJSON *api_vm_drive_json(struct bv_vm_drive *d)
{
    struct bv_vm_drive_info info;
    bv_vm_drive_info(d, &info, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "format", "qemu");
    cJSON_AddNullToObject(o, "file");
    cJSON_AddNumberToObject(o, "size", (double)info.size);
    cJSON_AddNullToObject(o, "allocated");
    cJSON_AddNullToObject(o, "cluster_size");
    cJSON_AddNullToObject(o, "backing");
    cJSON_AddArrayToObject(o, "filters");
    cJSON_AddBoolToObject(o, "busy", false);
    cJSON_AddItemToObject(o, "bitmaps", info.bitmaps ? info.bitmaps : cJSON_CreateArray());
    info.bitmaps = NULL;
    cJSON_AddNullToObject(o, "nbd_uri");
    cJSON *src = cJSON_AddObjectToObject(o, "source");
    cJSON_AddStringToObject(src, "qmp", d->vm->qmp);
    cJSON_AddStringToObject(src, "node", d->node);
    cJSON_AddStringToObject(src, "vm_status", info.vm_status);
    return o;
}

void api_vm_drives_list(struct bv_request *req, cJSON *arr)
{
    struct bv_vm_drive **all = NULL;
    size_t n = bv_vm_drives_all(req->app, &all);
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, api_vm_drive_json(all[i]));
        bv_vm_drives_put(req->app, all[i]);
    }
    free(all);
}

bool api_vm_drives_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_vm_drive *d = bv_vm_drives_get(req->app, req->params[0]);
    if (!d)
        return false;
    bv_reply_json(rep, 200, api_vm_drive_json(d));
    bv_vm_drives_put(req->app, d);
    return true;
}

bool api_vm_drives_data_get(struct bv_request *req, struct bv_reply *rep, uint64_t off,
                            uint64_t len)
{
    struct bv_vm_drive *d = bv_vm_drives_get(req->app, req->params[0]);
    if (!d)
        return false;
    char *buf = malloc(len ? len : 1);
    bv_error *e = NULL;
    int r = buf ? bv_vm_drive_read(d, buf, len, off, &e) : -ENOMEM;
    if (r < 0) {
        free(buf);
        api_fail(rep, 0, r, e);
    } else {
        bv_reply_bytes(rep, 200, "application/octet-stream", buf, len);
    }
    bv_vm_drives_put(req->app, d);
    return true;
}
