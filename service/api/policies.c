/*
 * /api/v1/policies: scheduled backup policies.  Parsing and formatting
 * only: the definitions, runs and retention are runtime/policies.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "runtime/policies.h"
#include "runtime/upkeep.h"
#include "sched/retention.h"
#include "bvdb/policies.h"

/* The body of POST (with name) or PUT (name from the URL). */
static int read_spec(const cJSON *obj, const char *url_name, struct bv_policy_spec *s,
                     const char ***drives, char *err, size_t errlen)
{
    const cJSON *dr = NULL, *ret = NULL, *rep = NULL;
    uint64_t full_every = 0;
    memset(s, 0, sizeof(*s));
    s->verify = "none";
    s->enabled = true;
    const struct bvj_field f[] = {
        { "name", BVJ_STRING, url_name == NULL, &s->name },
        { "drives", BVJ_ARRAY, true, &dr },
        { "schedule", BVJ_STRING, true, &s->schedule },
        { "full_every", BVJ_U64, false, &full_every, .max = 1000000 },
        { "retention", BVJ_OBJECT, true, &ret },
        { "verify", BVJ_STRING, false, &s->verify },
        { "enabled", BVJ_BOOL, false, &s->enabled },
        { "replicate", BVJ_OBJECT, false, &rep },
    };
    if (bvj_read(obj, f, BVJ_COUNT(f), err, errlen) < 0)
        return -1;
    s->keep_local = -1;
    if (rep) {
        static const char *const modes[] = { "governance", "compliance", NULL };
        uint64_t keep_local = 0, lock_days = 0;
        int mode = 0;
        bool has_keep = cJSON_GetObjectItemCaseSensitive(rep, "keep_local") != NULL;
        const struct bvj_field pf[] = {
            { "remote", BVJ_STRING, true, &s->replicate_remote },
            { "keep_local", BVJ_U64, false, &keep_local, .max = 1000000 },
            { "lock_days", BVJ_U64, false, &lock_days, .min = 0, .max = 36500 },
            { "lock_mode", BVJ_ENUM, false, &mode, .names = modes },
        };
        char perr[400];
        if (bvj_read(rep, pf, BVJ_COUNT(pf), perr, sizeof(perr)) < 0) {
            snprintf(err, errlen, "replicate: %s", perr);
            return -1;
        }
        s->keep_local = has_keep ? (int64_t)keep_local : -1;
        s->lock_days = (int64_t)lock_days;
        s->lock_compliance = mode == 1;
    }
    if (url_name && s->name && strcmp(s->name, url_name) != 0) {
        snprintf(err, errlen, "name: '%s' does not match the policy in the URL ('%s')", s->name,
                 url_name);
        return -1;
    }
    if (url_name)
        s->name = url_name;
    s->full_every = (int64_t)full_every;
    uint64_t keep[6] = { 0 };
    const struct bvj_field rf[] = {
        { "keep_last", BVJ_U64, false, &keep[0], .max = 1000000 },
        { "keep_hourly", BVJ_U64, false, &keep[1], .max = 1000000 },
        { "keep_daily", BVJ_U64, false, &keep[2], .max = 1000000 },
        { "keep_weekly", BVJ_U64, false, &keep[3], .max = 1000000 },
        { "keep_monthly", BVJ_U64, false, &keep[4], .max = 1000000 },
        { "keep_yearly", BVJ_U64, false, &keep[5], .max = 1000000 },
    };
    char rerr[400];
    if (bvj_read(ret, rf, BVJ_COUNT(rf), rerr, sizeof(rerr)) < 0) {
        snprintf(err, errlen, "retention: %s", rerr);
        return -1;
    }
    for (int i = 0; i < 6; i++)
        s->keep[i] = (int64_t)keep[i];
    int n = cJSON_GetArraySize(dr);
    if (n < 1 || n > BV_POLICY_MAX_DRIVES) {
        snprintf(err, errlen, "drives: name 1 to %d drives", BV_POLICY_MAX_DRIVES);
        return -1;
    }
    *drives = calloc((size_t)n, sizeof(char *));
    if (!*drives) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const cJSON *it = cJSON_GetArrayItem(dr, i);
        if (!cJSON_IsString(it)) {
            snprintf(err, errlen, "drives[%d]: expected a drive id (string)", i);
            return -1;
        }
        (*drives)[i] = it->valuestring;
    }
    s->drives = *drives;
    s->ndrives = (size_t)n;
    return 0;
}

static cJSON *policy_json(const struct bv_policy_view *v)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", v->name);
    cJSON *d = cJSON_Parse(v->drives_json ? v->drives_json : "[]");
    cJSON_AddItemToObject(o, "drives", d ? d : cJSON_CreateArray());
    cJSON_AddStringToObject(o, "schedule", v->schedule);
    if (v->full_every > 0)
        cJSON_AddNumberToObject(o, "full_every", (double)v->full_every);
    else
        cJSON_AddNullToObject(o, "full_every");
    cJSON *r = cJSON_Parse(v->retention_json ? v->retention_json : "{}");
    cJSON_AddItemToObject(o, "retention", r ? r : cJSON_CreateObject());
    cJSON_AddStringToObject(o, "verify", v->verify);
    cJSON *rp = v->replicate_json ? cJSON_Parse(v->replicate_json) : NULL;
    if (rp)
        cJSON_AddItemToObject(o, "replicate", rp);
    cJSON_AddBoolToObject(o, "enabled", v->enabled);
    if (v->next_run[0])
        cJSON_AddStringToObject(o, "next_run", v->next_run);
    else
        cJSON_AddNullToObject(o, "next_run");
    if (v->has_last_run) {
        cJSON *l = cJSON_AddObjectToObject(o, "last_run");
        cJSON_AddStringToObject(l, "started_at", v->last_started);
        if (v->last_finished[0])
            cJSON_AddStringToObject(l, "finished_at", v->last_finished);
        else
            cJSON_AddNullToObject(l, "finished_at");
        cJSON_AddStringToObject(l, "outcome", v->last_outcome);
    } else {
        cJSON_AddNullToObject(o, "last_run");
    }
    cJSON_AddStringToObject(o, "created_at", v->created_at);
    cJSON_AddStringToObject(o, "updated_at", v->updated_at);
    return o;
}

static void reply_policy(struct bv_request *req, struct bv_reply *rep, int status,
                         const char *name)
{
    struct bv_policy_view v;
    bv_error *e = NULL;
    if (bv_policy_get(req->app, name, &v, &e) < 0) {
        api_fail(rep, 404, -ENODEV, e);
        return;
    }
    bv_reply_json(rep, status, policy_json(&v));
    bv_policy_view_free(&v);
}

static void store(struct bv_request *req, struct bv_reply *rep, bool create)
{
    cJSON *obj = bv_req_json(req, rep);
    if (!obj)
        return;
    struct bv_policy_spec s;
    const char **drives = NULL;
    char err[512];
    if (read_spec(obj, create ? NULL : req->params[0], &s, &drives, err, sizeof(err)) < 0) {
        bv_reply_error(rep, 400, NULL, "%s", err);
    } else {
        bv_error *e = NULL;
        int r = create ? bv_policy_create(req->app, &s, &e) : bv_policy_replace(req->app, &s, &e);
        if (r < 0)
            api_fail(rep, 0, r, e);
        else
            reply_policy(req, rep, create ? 201 : 200, s.name);
    }
    free(drives);
    cJSON_Delete(obj);
}

void api_policies_create(struct bv_request *req, struct bv_reply *rep) { store(req, rep, true); }
void api_policies_put(struct bv_request *req, struct bv_reply *rep) { store(req, rep, false); }

void api_policies_list(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_policy_view *v = NULL;
    size_t n = bv_policy_list(req->app, &v);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "policies");
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, policy_json(&v[i]));
        bv_policy_view_free(&v[i]);
    }
    free(v);
    bv_reply_json(rep, 200, o);
}

void api_policies_get(struct bv_request *req, struct bv_reply *rep)
{
    reply_policy(req, rep, 200, req->params[0]);
}

void api_policies_delete(struct bv_request *req, struct bv_reply *rep)
{
    bv_error *e = NULL;
    int r = bv_policy_delete(req->app, req->params[0], &e);
    if (r < 0)
        api_fail(rep, 404, r, e);
    else
        bv_reply_empty(rep, 204);
}

void api_policies_run(struct bv_request *req, struct bv_reply *rep)
{
    bv_error *e = NULL;
    int r = bv_policy_run_now(req->app, req->params[0], &e);
    if (r == -ENODEV)
        api_fail(rep, 404, r, e);
    else if (r < 0)
        api_fail(rep, 0, r, e);
    else
        reply_policy(req, rep, 202, req->params[0]);
}

static int run_cb(const struct bvdb_policy_run *r, void *opaque)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)r->id);
    cJSON_AddStringToObject(o, "kind", r->kind ? r->kind : "backup");
    cJSON_AddStringToObject(o, "started_at", r->started_at ? r->started_at : "");
    if (r->finished_at)
        cJSON_AddStringToObject(o, "finished_at", r->finished_at);
    else
        cJSON_AddNullToObject(o, "finished_at");
    cJSON_AddStringToObject(o, "outcome", r->outcome ? r->outcome : "");
    if (r->reason)
        cJSON_AddStringToObject(o, "reason", r->reason);
    else
        cJSON_AddNullToObject(o, "reason");
    const char *arrays[3][2] = { { "backups_made", r->backups_made },
                                 { "backups_pruned", r->backups_pruned },
                                 { "errors", r->errors } };
    for (int i = 0; i < 3; i++) {
        cJSON *a = cJSON_Parse(arrays[i][1] ? arrays[i][1] : "[]");
        cJSON_AddItemToObject(o, arrays[i][0], a ? a : cJSON_CreateArray());
    }
    cJSON_AddItemToArray(opaque, o);
    return 0;
}

void api_policies_runs(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_policy_view v;
    bv_error *e = NULL;
    if (bv_policy_get(req->app, req->params[0], &v, &e) < 0) {
        api_fail(rep, 404, -ENODEV, e);
        return;
    }
    bv_policy_view_free(&v);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "runs");
    bvdb_policy_run_list(req->app->db, req->params[0], 1000, run_cb, arr);
    bv_reply_json(rep, 200, o);
}

void api_policies_retention(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_retention_row *rows = NULL;
    size_t n = 0;
    bv_error *e = NULL;
    int r = bv_policy_retention(req->app, req->params[0], &rows, &n, &e);
    if (r < 0) {
        api_fail(rep, r == -ENODEV ? 404 : 0, r, e);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "backups");
    for (size_t i = 0; i < n; i++) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "id", rows[i].id);
        cJSON_AddStringToObject(b, "drive", rows[i].drive);
        cJSON_AddStringToObject(b, "created_at", rows[i].created_at);
        cJSON_AddBoolToObject(b, "keep", rows[i].keep);
        cJSON *rules = cJSON_AddArrayToObject(b, "rules");
        for (int k = 0; k < BV_RET_N_REASONS; k++)
            if (rows[i].reasons & BV_RET_BIT(k))
                cJSON_AddItemToArray(rules, cJSON_CreateString(
                                         bv_retention_reason_name((enum bv_retention_rule)k)));
        cJSON_AddItemToArray(arr, b);
    }
    free(rows);
    bv_reply_json(rep, 200, o);
}

/* POST /api/v1/test/clock {"now": unix seconds}: only with --test-clock. */
void api_test_clock(struct bv_request *req, struct bv_reply *rep)
{
    if (!req->app->cfg.test_clock) {
        bv_reply_error(rep, 404, NULL, "no such resource (the test clock is off)");
        return;
    }
    uint64_t now = 0;
    const struct bvj_field f[] = { { "now", BVJ_U64, true, &now, .min = 1, .max = 1ULL << 40 } };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    cJSON_Delete(obj);
    atomic_store(&req->app->test_now_ms, (int64_t)now * 1000);
    bv_scheduler_kick(req->app);
    bv_upkeep_kick(req->app);          /* history ages by the same clock */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "now", (double)now);
    bv_reply_json(rep, 200, o);
}
