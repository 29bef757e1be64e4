/*
 * /api/v1/drives/{id}/bitmaps: QEMU's block-dirty-bitmap-* verbs.  This file
 * only parses requests and formats replies: the operations (and their
 * catalog rows) are runtime/bitmaps.c's, the engine enforces the semantics
 * and the texts, and api_fail maps the errno (404 unknown drive or bitmap,
 * 409 name taken or busy or inconsistent, 400 bad values).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "runtime/drives.h"
#include "runtime/registry.h"

#define MAX_EXTENTS_PER_REPLY 100000
#define MAX_MERGE_SOURCES     BV_BITMAP_MAX_MERGE_SOURCES

cJSON *api_bitmap_json(struct bv_bitmap_set *set, const struct bv_bitmap_info *bi)
{
    (void)set;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", bi->name);
    cJSON_AddNumberToObject(o, "granularity", bi->granularity);
    cJSON_AddNumberToObject(o, "count", (double)bi->count);
    cJSON_AddStringToObject(o, "status", bv_bitmap_status_name(bi->status));
    cJSON_AddBoolToObject(o, "recording", bi->recording);
    cJSON_AddBoolToObject(o, "busy", bi->busy);
    cJSON_AddBoolToObject(o, "persistent", bi->persistent);
    return o;
}

static void reply_bitmap(struct bv_reply *rep, int status, struct bv_bitmap_set *set,
                         struct bv_dirty_bitmap *bm)
{
    struct bv_bitmap_info bi;
    bv_bitmap_query(set, bm, &bi);
    bv_reply_json(rep, status, api_bitmap_json(set, &bi));
}

/* The bitmap in the URL (params[1]) of the drive e, or NULL after a 404. */
static struct bv_dirty_bitmap *url_bitmap(struct bv_request *req, struct bv_reply *rep,
                                          struct bv_drive_entry *e)
{
    struct bv_dirty_bitmap *bm = NULL;
    bv_error *err = NULL;
    int r = bv_bitmaps_lookup(e, req->params[1], &bm, &err);
    if (r < 0)
        api_fail(rep, 0, r, err);
    return bm;
}

cJSON *api_bitmaps_array(bv_drive *d)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(d);
    size_t n = bv_bitmap_list(set, NULL, 0);
    struct bv_bitmap_info *infos = calloc(n ? n : 1, sizeof(*infos));
    cJSON *arr = cJSON_CreateArray();
    if (infos) {
        n = bv_bitmap_list(set, infos, n);
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(arr, api_bitmap_json(set, &infos[i]));
    }
    free(infos);
    return arr;
}

void api_bitmaps_list(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "bitmaps", api_bitmaps_array(e->drive));
    bv_reply_json(rep, 200, o);
    bv_registry_put(req->app, e);
}

void api_bitmaps_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    struct bv_dirty_bitmap *bm = url_bitmap(req, rep, e);
    if (bm)
        reply_bitmap(rep, 200, bv_drive_bitmaps(e->drive), bm);
    bv_registry_put(req->app, e);
}

/* granularity: any JSON integer is read with QMP's type texts; the engine
 * checks the value (power of 2, at least 512) */
static int check_granularity(struct bv_reply *rep, const cJSON *g, uint32_t *out)
{
    double d = g->valuedouble;
    if (!cJSON_IsNumber(g) || d != (double)(int64_t)d) {
        bv_reply_error(rep, 400, NULL, "Invalid parameter type for 'granularity', expected: integer");
        return -1;
    }
    if (d < 0 || d > 4294967295.0) {
        bv_reply_error(rep, 400, NULL, "Parameter 'granularity' expects uint32_t");
        return -1;
    }
    *out = (uint32_t)d;
    return 0;
}

void api_bitmaps_create(struct bv_request *req, struct bv_reply *rep)
{
    const char *name = NULL;
    const cJSON *g = NULL;
    bool persistent = false, disabled = false;
    const struct bvj_field f[] = {
        { "name", BVJ_STRING, true, &name },
        { "granularity", BVJ_ANY, false, &g },
        { "persistent", BVJ_BOOL, false, &persistent },
        { "disabled", BVJ_BOOL, false, &disabled },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    uint32_t gran = 0;
    struct bv_drive_entry *e = NULL;
    if (g && check_granularity(rep, g, &gran) < 0)
        goto out;
    if (!(e = api_drive_get(req, rep)))
        goto out;
    struct bv_dirty_bitmap *bm = NULL;
    bv_error *err = NULL;
    const struct bv_bitmap_spec spec = {
        .name = name, .granularity = gran, .has_granularity = g != NULL,
        .persistent = persistent, .disabled = disabled,
    };
    int r = bv_bitmaps_add(req->app, e, &spec, &bm, &err);
    if (r < 0)
        api_fail(rep, 0, r, err);
    else
        reply_bitmap(rep, 201, bv_drive_bitmaps(e->drive), bm);
out:
    bv_registry_put(req->app, e);
    cJSON_Delete(body);
}

void api_bitmaps_delete(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    bv_error *err = NULL;
    int r = bv_bitmaps_remove(req->app, e, req->params[1], &err);
    if (r < 0)
        api_fail(rep, 0, r, err);
    else
        bv_reply_empty(rep, 204);
    bv_registry_put(req->app, e);
}

static void simple_verb(struct bv_request *req, struct bv_reply *rep, enum bv_bitmap_verb v)
{
    if (req->body_len) {
        cJSON *body = bv_req_json(req, rep);
        if (!body)
            return;
        bool empty = cJSON_GetArraySize(body) == 0;
        cJSON_Delete(body);
        if (!empty) {
            bv_reply_error(rep, 400, NULL, "this call takes no parameters");
            return;
        }
    }
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    struct bv_dirty_bitmap *bm = NULL;
    bv_error *err = NULL;
    int r = bv_bitmaps_apply(req->app, e, req->params[1], v, &bm, &err);
    if (r < 0)
        api_fail(rep, 0, r, err);
    else
        reply_bitmap(rep, 200, bv_drive_bitmaps(e->drive), bm);
    bv_registry_put(req->app, e);
}

void api_bitmaps_clear(struct bv_request *req, struct bv_reply *rep) { simple_verb(req, rep, BV_BITMAP_CLEAR); }
void api_bitmaps_enable(struct bv_request *req, struct bv_reply *rep) { simple_verb(req, rep, BV_BITMAP_ENABLE); }
void api_bitmaps_disable(struct bv_request *req, struct bv_reply *rep) { simple_verb(req, rep, BV_BITMAP_DISABLE); }

void api_bitmaps_merge(struct bv_request *req, struct bv_reply *rep)
{
    const cJSON *sources = NULL;
    const struct bvj_field f[] = {
        { "sources", BVJ_ARRAY, true, &sources },
    };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    struct bv_drive_entry *e = api_drive_get(req, rep);
    const char *names[MAX_MERGE_SOURCES];
    size_t n = 0;
    if (!e || !url_bitmap(req, rep, e))
        goto out;
    const cJSON *it;
    cJSON_ArrayForEach(it, sources) {
        if (!cJSON_IsString(it) || n >= MAX_MERGE_SOURCES) {
            bv_reply_error(rep, 400, NULL, "'sources' must be 1 to %d bitmap names",
                           MAX_MERGE_SOURCES);
            goto out;
        }
        names[n++] = it->valuestring;
    }
    struct bv_dirty_bitmap *bm = NULL;
    bv_error *err = NULL;
    int r = bv_bitmaps_merge(req->app, e, req->params[1], names, n, &bm, &err);
    if (r < 0)
        api_fail(rep, 0, r, err);
    else
        reply_bitmap(rep, 200, bv_drive_bitmaps(e->drive), bm);
out:
    bv_registry_put(req->app, e);
    cJSON_Delete(body);
}

void api_bitmaps_extents(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_drive_entry *e = api_drive_get(req, rep);
    if (!e)
        return;
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    struct bv_dirty_bitmap *bm = url_bitmap(req, rep, e);
    if (bm) {
        cJSON *arr = cJSON_CreateArray();
        uint64_t cursor = 0, size = bv_drive_size(e->drive);
        struct bv_extent buf[256];
        size_t total = 0, got;
        while (cursor < size && total < MAX_EXTENTS_PER_REPLY) {
            bv_bitmap_extents(set, bm, &cursor, buf, 256, &got);
            for (size_t i = 0; i < got; i++) {
                cJSON *x = cJSON_CreateObject();
                cJSON_AddNumberToObject(x, "offset", (double)buf[i].offset);
                cJSON_AddNumberToObject(x, "length", (double)buf[i].length);
                cJSON_AddItemToArray(arr, x);
            }
            total += got;
            if (got == 0)
                break;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "extents", arr);
        if (cursor < size && total >= MAX_EXTENTS_PER_REPLY)
            cJSON_AddBoolToObject(o, "truncated", true);
        bv_reply_json(rep, 200, o);
    }
    bv_registry_put(req->app, e);
}
