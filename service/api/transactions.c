/*
 * POST /api/v1/transactions: parse the actions into typed form
 * (runtime/transactions.h) and report the started jobs.  Each action's
 * `data` is read with the single call's field table.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "runtime/transactions.h"

static const char *const completion_modes[] = { "individual", "grouped", NULL };

static int read_granularity(const cJSON *g, struct bv_bitmap_spec *b, char *err, size_t errlen)
{
    if (!g)
        return 0;
    double d = g->valuedouble;
    if (!cJSON_IsNumber(g) || d != floor(d)) {
        snprintf(err, errlen, "Invalid parameter type for 'granularity', expected: integer");
        return -1;
    }
    if (d < 0 || d > 4294967295.0) {
        snprintf(err, errlen, "Parameter 'granularity' expects uint32_t");
        return -1;
    }
    b->granularity = (uint32_t)d;
    b->has_granularity = true;
    return 0;
}

/* The sources of a merge, as borrowed strings (kept in a->sources). */
static int read_sources(const cJSON *arr, struct bv_txn_action *a, char *err, size_t errlen)
{
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > BV_BITMAP_MAX_MERGE_SOURCES) {
        snprintf(err, errlen, "'sources' must name 1 to %d bitmaps", BV_BITMAP_MAX_MERGE_SOURCES);
        return -1;
    }
    const char **s = calloc((size_t)n, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const cJSON *it = cJSON_GetArrayItem(arr, i);
        if (!cJSON_IsString(it)) {
            snprintf(err, errlen, "Invalid parameter type for 'sources[%d]', expected: string", i);
            free(s);
            return -1;
        }
        s[i] = it->valuestring;
    }
    a->sources = s;
    a->nsources = (size_t)n;
    return 0;
}

static int read_bitmap_action(const cJSON *data, struct bv_txn_action *a, char *err,
                              size_t errlen)
{
    const cJSON *g = NULL, *sources = NULL;
    struct bvj_field f[] = {
        { "node", BVJ_STRING, true, &a->node },
        { "name", BVJ_STRING, true, &a->bitmap.name },
        { "granularity", BVJ_ANY, false, &g },
        { "persistent", BVJ_BOOL, false, &a->bitmap.persistent },
        { "disabled", BVJ_BOOL, false, &a->bitmap.disabled },
        { "sources", BVJ_ARRAY, true, &sources },
    };
    size_t n = a->type == BV_TXN_BITMAP_ADD ? 5 : 2;
    if (a->type == BV_TXN_BITMAP_MERGE) {
        f[2] = f[5];
        n = 3;
    }
    if (bvj_read(data, f, n, err, errlen) < 0)
        return -1;
    if (a->type == BV_TXN_BITMAP_ADD)
        return read_granularity(g, &a->bitmap, err, errlen);
    if (a->type == BV_TXN_BITMAP_MERGE)
        return read_sources(sources, a, err, errlen);
    return 0;
}

static int read_action(const cJSON *item, struct bv_txn_action *a, char *err, size_t errlen)
{
    int type = -1;
    const cJSON *data = NULL;
    const struct bvj_field f[] = {
        { "type", BVJ_ENUM, true, &type, .names = bv_txn_type_names },
        { "data", BVJ_OBJECT, true, &data },
    };
    if (!cJSON_IsObject(item)) {
        snprintf(err, errlen, "Invalid parameter type for 'actions[]', expected: object");
        return -1;
    }
    if (bvj_read(item, f, BVJ_COUNT(f), err, errlen) < 0)
        return -1;
    a->type = (enum bv_txn_type)type;
    if (a->type == BV_TXN_DRIVE_BACKUP)
        return api_backup_spec_read(data, false, &a->backup, err, errlen);
    return read_bitmap_action(data, a, err, errlen);
}

static void free_actions(struct bv_txn_action *acts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)acts[i].sources);
    free(acts);
}

void api_transactions_run(struct bv_request *req, struct bv_reply *rep)
{
    const cJSON *actions = NULL, *props = NULL;
    const struct bvj_field f[] = {
        { "actions", BVJ_ARRAY, true, &actions },
        { "properties", BVJ_OBJECT, false, &props },
    };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    char err[512];
    int mode = 0;
    const struct bvj_field pf[] = {
        { "completion_mode", BVJ_ENUM, false, &mode, .names = completion_modes },
    };
    size_t n = (size_t)cJSON_GetArraySize(actions);
    struct bv_txn_action *acts = calloc(n ? n : 1, sizeof(*acts));
    int bad = !acts;
    if (bad)
        snprintf(err, sizeof(err), "out of memory");
    else if (n > BV_TXN_MAX_ACTIONS) {
        snprintf(err, sizeof(err), "A transaction takes at most %d actions", BV_TXN_MAX_ACTIONS);
        bad = 1;
    } else if (props && bvj_read(props, pf, BVJ_COUNT(pf), err, sizeof(err)) < 0) {
        bad = 1;
    }
    for (size_t i = 0; i < n && !bad; i++)
        bad = read_action(cJSON_GetArrayItem(actions, (int)i), &acts[i], err, sizeof(err)) < 0;
    if (bad) {
        bv_reply_error(rep, 400, NULL, "%s", err);
        goto out;
    }
    char **ids = NULL;
    size_t nids = 0;
    bv_error *e = NULL;
    int r = bv_txn_run(req->app, acts, n, mode == 1, &ids, &nids, &e);
    if (r < 0) {
        api_fail(rep, 0, r, e);
        goto out;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "jobs");
    for (size_t i = 0; i < nids; i++) {
        if (ids[i])
            cJSON_AddItemToArray(arr, cJSON_CreateString(ids[i]));
        free(ids[i]);
    }
    free(ids);
    bv_reply_json(rep, 200, o);
out:
    free_actions(acts, n);
    cJSON_Delete(obj);
}
