/*
 * GET /api/v1/events?after=SEQ&wait=SECONDS&name=NAME&limit=N
 * Long-poll over the catalog's event log: if nothing newer than `after`
 * exists, wait (up to `wait` ≤ 60 s) on app->events_cond, then list.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "app.h"
#include "bvdb/events.h"
#include "json/json.h"

#define EVENTS_MAX_LIMIT 1000
#define EVENTS_MAX_WAIT  60.0

struct list_ctx {
    cJSON *arr;
    int64_t last;
};

static int add_event(const struct bvdb_event *ev, void *opaque)
{
    struct list_ctx *lc = opaque;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "seq", (double)ev->seq);
    cJSON_AddStringToObject(e, "event", ev->name);
    cJSON_AddStringToObject(e, "timestamp", ev->timestamp);
    cJSON *data = cJSON_Parse(ev->data);
    cJSON_AddItemToObject(e, "data", data ? data : cJSON_CreateObject());
    cJSON_AddItemToArray(lc->arr, e);
    lc->last = ev->seq;
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < 0)
        return -1;
    *out = v;
    return 0;
}

static void wait_for_event(struct bv_app *app, int64_t after, double wait_s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    double whole = floor(wait_s);
    deadline.tv_sec += (time_t)whole;
    deadline.tv_nsec += (long)((wait_s - whole) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&app->events_lock);
    while (app->events_head <= after && !atomic_load(&app->stopping)) {
        if (pthread_cond_timedwait(&app->events_cond, &app->events_lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&app->events_lock);
}

void api_events_list(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_app *app = req->app;
    const char *after_s = bv_req_query(req, "after");
    const char *wait_s = bv_req_query(req, "wait");
    const char *limit_s = bv_req_query(req, "limit");
    const char *name = bv_req_query(req, "name");
    int64_t after = 0, limit = EVENTS_MAX_LIMIT;
    double wait = 0;

    if (after_s && strcmp(after_s, "latest") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddArrayToObject(o, "events");
        cJSON_AddNumberToObject(o, "next", (double)bvdb_event_head(app->db));
        bv_reply_json(rep, 200, o);
        return;
    }
    if (after_s && parse_i64(after_s, &after) < 0) {
        bv_reply_error(rep, 400, NULL, "'after' must be a sequence number or 'latest'");
        return;
    }
    if (limit_s && (parse_i64(limit_s, &limit) < 0 || limit < 1 || limit > EVENTS_MAX_LIMIT)) {
        bv_reply_error(rep, 400, NULL, "'limit' must be between 1 and %d", EVENTS_MAX_LIMIT);
        return;
    }
    if (wait_s) {
        char *end;
        wait = strtod(wait_s, &end);
        if (*end || end == wait_s || !(wait >= 0 && wait <= EVENTS_MAX_WAIT)) {
            bv_reply_error(rep, 400, NULL, "'wait' must be between 0 and 60 seconds");
            return;
        }
    }
    struct list_ctx lc = { .arr = cJSON_CreateArray(), .last = after };
    int n = bvdb_event_list(app->db, after, name, (int)limit, add_event, &lc);
    if (n == 0 && wait > 0) {
        /* with a name filter, keep waiting past other events until the deadline */
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int64_t seen = after;
        for (;;) {
            wait_for_event(app, seen, wait);
            n = bvdb_event_list(app->db, after, name, (int)limit, add_event, &lc);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double spent = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
            pthread_mutex_lock(&app->events_lock);
            seen = app->events_head;
            pthread_mutex_unlock(&app->events_lock);
            if (n != 0 || spent >= wait || atomic_load(&app->stopping))
                break;
            wait -= spent;
            clock_gettime(CLOCK_MONOTONIC, &t0);
        }
    }
    if (n < 0) {
        cJSON_Delete(lc.arr);
        bv_reply_error(rep, 500, NULL, "cannot read the event log");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "events", lc.arr);
    cJSON_AddNumberToObject(o, "next", (double)lc.last);
    bv_reply_json(rep, 200, o);
}
