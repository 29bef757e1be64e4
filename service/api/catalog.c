/* /api/v1/catalog: see catalog.h.  Parsing and formatting only. */
#include "api/catalog.h"
#include "api/common.h"
#include "app.h"
#include "runtime/upkeep.h"

void api_catalog_backup(struct bv_request *req, struct bv_reply *rep)
{
    const char *file = NULL;
    const struct bvj_field f[] = { { "file", BVJ_STRING, true, &file } };
    cJSON *body = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!body)
        return;
    uint64_t size = 0;
    bv_error *e = NULL;
    int r = bv_catalog_backup(req->app, file, &size, &e);
    if (r < 0) {
        api_fail(rep, 0, r, e);
    } else {
        char now[32];
        bv_app_now_str(req->app, now);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", file);
        cJSON_AddNumberToObject(o, "size", (double)size);
        cJSON_AddStringToObject(o, "created_at", now);
        bv_reply_json(rep, 201, o);
    }
    cJSON_Delete(body);
}

static void add_time(cJSON *o, const char *key, const char *v)
{
    if (v[0])
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static cJSON *status_json(struct bv_app *app)
{
    struct bv_upkeep_status st;
    bv_upkeep_status(app, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "history_days", st.history_days);
    cJSON_AddBoolToObject(o, "running", st.running);
    cJSON_AddNumberToObject(o, "runs", (double)st.runs);
    add_time(o, "cutoff", st.cutoff);
    add_time(o, "last_started", st.last_started);
    add_time(o, "last_finished", st.last_finished);
    add_time(o, "next_run", st.next_run);
    cJSON *d = cJSON_AddObjectToObject(o, "deleted");
    for (int k = 0; k < BVDB_HISTORY_KINDS; k++)
        cJSON_AddNumberToObject(d, bvdb_history_names[k], (double)st.deleted[k]);
    add_time(o, "error", st.error);
    return o;
}

void api_catalog_upkeep_get(struct bv_request *req, struct bv_reply *rep)
{
    bv_reply_json(rep, 200, status_json(req->app));
}

void api_catalog_upkeep_run(struct bv_request *req, struct bv_reply *rep)
{
    if (req->body_len > 0) {               /* no fields: "{}" at most */
        cJSON *body = api_read_body(req, rep, NULL, 0);
        if (!body)
            return;
        cJSON_Delete(body);
    }
    if (req->app->cfg.history_days == 0) {
        bv_reply_error(rep, 409, NULL, "History retention is off (--history-days 0): "
                       "nothing is deleted");
        return;
    }
    bv_upkeep_kick(req->app);
    bv_reply_json(rep, 202, status_json(req->app));
}
