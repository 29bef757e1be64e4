/*
 * POST/GET /api/v1/notifications, GET/DELETE /api/v1/notifications/{name},
 * GET /api/v1/notifications/{name}/deliveries: see runtime/notify.h.  The
 * secret is never returned (only "has_secret").
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/common.h"
#include "api/notifications.h"
#include "app.h"
#include "bvdb/notifications.h"
#include "runtime/notify.h"

#define DELIVERIES_DEFAULT 100
#define DELIVERIES_MAX 1000

/* events[] of the body into names (borrowed); -1 after the 400. */
static int read_events(const cJSON *arr, const char **names, size_t *n, struct bv_reply *rep)
{
    *n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsString(it)) {
            bv_reply_error(rep, 400, NULL, "events[%zu]: must be a string", *n);
            return -1;
        }
        if (*n == BV_NOTIFY_NEVENTS) {
            bv_reply_error(rep, 400, NULL, "events: at most %d names, each once",
                           BV_NOTIFY_NEVENTS);
            return -1;
        }
        names[(*n)++] = it->valuestring;
    }
    return 0;
}

static cJSON *events_array(uint32_t set)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < BV_NOTIFY_NEVENTS; i++)
        if (set & (1u << i))
            cJSON_AddItemToArray(a, cJSON_CreateString(bv_notify_event_names[i]));
    return a;
}

/* {"name","url","events","has_secret","created_at","deliveries":{"pending","delivered","failed"}} */
static cJSON *notification_json(struct bv_app *app, const struct bvdb_notification *n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", n->name);
    cJSON_AddStringToObject(o, "url", n->url);
    cJSON_AddItemToObject(o, "events", events_array(n->events));
    cJSON_AddBoolToObject(o, "has_secret", n->has_secret);
    cJSON_AddStringToObject(o, "created_at", n->created_at ? n->created_at : "");
    int64_t c[3] = { 0, 0, 0 };
    bvdb_delivery_counts(app->db, n->name, c);
    cJSON *d = cJSON_AddObjectToObject(o, "deliveries");
    cJSON_AddNumberToObject(d, "pending", (double)c[0]);
    cJSON_AddNumberToObject(d, "delivered", (double)c[1]);
    cJSON_AddNumberToObject(d, "failed", (double)c[2]);
    return o;
}

struct one {
    struct bv_app *app;
    cJSON *json;
};

static void one_cb(const struct bvdb_notification *n, void *opaque)
{
    struct one *o = opaque;
    o->json = notification_json(o->app, n);
}

/* The notification as JSON with status, or a 404. */
static void reply_one(struct bv_request *req, struct bv_reply *rep, const char *name, int status)
{
    struct one o = { req->app, NULL };
    int r = bvdb_notification_get(req->app->db, name, one_cb, &o);
    if (r == -ENOENT)
        bv_reply_error(rep, 404, "NotFound", "Notification '%s' not found", name);
    else if (r < 0 || !o.json)
        bv_reply_error(rep, 500, "InternalError", "cannot read the notification from the catalog");
    if (r < 0 || !o.json) {
        cJSON_Delete(o.json);
        return;
    }
    bv_reply_json(rep, status, o.json);
}

void api_notifications_create(struct bv_request *req, struct bv_reply *rep)
{
    const char *name = NULL, *url = NULL, *secret = NULL;
    const cJSON *events = NULL;
    const struct bvj_field f[] = {
        { "name", BVJ_STRING, true, &name },
        { "url", BVJ_STRING, true, &url },
        { "events", BVJ_ARRAY, true, &events },
        { "secret", BVJ_STRING, false, &secret },
    };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    const char *names[BV_NOTIFY_NEVENTS];
    struct bv_notify_spec s = { .name = name, .url = url, .events = names, .secret = secret };
    if (read_events(events, names, &s.nevents, rep) == 0) {
        bv_error *e = NULL;
        int r = bv_notify_create(req->app, &s, &e);
        if (r < 0) {
            api_fail(rep, 0, r, e);
        } else {
            reply_one(req, rep, name, 201);
        }
    }
    cJSON_Delete(obj);
}

static int add_notification(const struct bvdb_notification *n, void *opaque)
{
    struct one *o = opaque;
    cJSON_AddItemToArray(o->json, notification_json(o->app, n));
    return 0;
}

void api_notifications_list(struct bv_request *req, struct bv_reply *rep)
{
    struct one o = { req->app, cJSON_CreateArray() };
    if (bvdb_notification_list(req->app->db, add_notification, &o) < 0) {
        cJSON_Delete(o.json);
        bv_reply_error(rep, 500, "InternalError", "cannot read notifications from the catalog");
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "notifications", o.json);
    bv_reply_json(rep, 200, r);
}

void api_notifications_get(struct bv_request *req, struct bv_reply *rep)
{
    reply_one(req, rep, req->params[0], 200);
}

void api_notifications_delete(struct bv_request *req, struct bv_reply *rep)
{
    bv_error *e = NULL;
    int r = bv_notify_delete(req->app, req->params[0], &e);
    if (r == -ENOENT) {
        bv_reply_error(rep, 404, "NotFound", "%s", e ? e->msg : "no such notification");
        bv_error_free(e);
    } else if (r < 0) {
        api_fail(rep, 0, r, e);
    } else {
        bv_reply_empty(rep, 204);
    }
}

static void add_opt_str(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static int add_delivery(const struct bvdb_delivery *d, void *opaque)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)d->id);
    cJSON_AddStringToObject(o, "event", d->event);
    cJSON_AddStringToObject(o, "event_id", d->event_id);
    cJSON_AddStringToObject(o, "created_at", d->created_at);
    cJSON_AddNumberToObject(o, "attempts", (double)d->attempts);
    cJSON_AddStringToObject(o, "state", d->state);
    if (d->last_status > 0)
        cJSON_AddNumberToObject(o, "last_status", (double)d->last_status);
    else
        cJSON_AddNullToObject(o, "last_status");
    add_opt_str(o, "last_error", d->last_error);
    add_opt_str(o, "delivered_at", d->delivered_at);
    add_opt_str(o, "next_attempt_at", d->next_attempt_at);
    cJSON_AddItemToArray(opaque, o);
    return 0;
}

static void notification_exists(const struct bvdb_notification *n, void *opaque)
{
    (void)n;
    (void)opaque;
}

void api_notifications_deliveries(struct bv_request *req, struct bv_reply *rep)
{
    const char *name = req->params[0], *ls = bv_req_query(req, "limit");
    long limit = DELIVERIES_DEFAULT;
    if (ls) {
        char *end;
        limit = strtol(ls, &end, 10);
        if (!*ls || *end || limit < 1 || limit > DELIVERIES_MAX) {
            bv_reply_error(rep, 400, NULL, "'limit' must be between 1 and %d", DELIVERIES_MAX);
            return;
        }
    }
    int r = bvdb_notification_get(req->app->db, name, notification_exists, NULL);
    if (r == -ENOENT) {
        bv_reply_error(rep, 404, "NotFound", "Notification '%s' not found", name);
        return;
    }
    cJSON *arr = cJSON_CreateArray();
    if (r < 0 || bvdb_delivery_list(req->app->db, name, (int)limit, add_delivery, arr) < 0) {
        cJSON_Delete(arr);
        bv_reply_error(rep, 500, "InternalError", "cannot read deliveries from the catalog");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "deliveries", arr);
    bv_reply_json(rep, 200, o);
}
