/*
 * The catalog's event log, two ways:
 *
 * GET /api/v1/events?after=SEQ&wait=SECONDS&name=NAME&limit=N
 *   Long-poll: if nothing newer than `after` exists, wait (up to `wait`
 *   ≤ 60 s) on app->events_cond, then list.
 *
 * GET /api/v1/events/stream[?after=SEQ]   (text/event-stream)
 *   Each event as "id: SEQ\nevent: NAME\ndata: {the object the long poll
 *   returns}\n\n", oldest first, from a start point: the Last-Event-ID
 *   header if sent (a reconnecting reader resumes after the last event it
 *   saw, even when its URL still carries the `after` it first used), else
 *   `after`, else (or `after=latest`) the current head.  The stream is read
 *   by libmicrohttpd's connection thread through stream_read(), which
 *   blocks on events_cond: it sends what the catalog holds after the last
 *   seq sent, or a ": keep-alive" comment after STREAM_KEEPALIVE_S of
 *   silence, and ends the response (a clean chunked end) once
 *   app->stopping is set.  Per connection it buffers at most one batch:
 *   STREAM_BATCH events or about STREAM_BATCH_BYTES, whichever comes first.
 *   It re-reads the catalog at least every STREAM_POLL_S even without a
 *   wake-up, so an event committed by a path that did not signal
 *   events_cond is late, never lost.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "api/api.h"
#include "app.h"
#include "bvdb/events.h"
#include "json/json.h"

#define EVENTS_MAX_LIMIT 1000
#define EVENTS_MAX_WAIT  60.0

#define STREAM_KEEPALIVE_S  15
#define STREAM_POLL_S       1
#define STREAM_BATCH        64
#define STREAM_BATCH_BYTES  (64u * 1024)
/* The connection's idle limit while it streams, instead of the server's
 * 10 s: the stream is legitimately quiet for up to STREAM_KEEPALIVE_S, and
 * libmicrohttpd checks the limit right after stream_read() returns, against
 * the last bytes that reached the socket.  A reader that stops reading is
 * still dropped once its writes have stalled this long. */
#define STREAM_IDLE_LIMIT_S (4 * STREAM_KEEPALIVE_S)

struct list_ctx {
    cJSON *arr;
    int64_t last;
};

/* The contract's event object: {seq, event, timestamp, data}. */
static cJSON *event_json(const struct bvdb_event *ev)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "seq", (double)ev->seq);
    cJSON_AddStringToObject(e, "event", ev->name);
    cJSON_AddStringToObject(e, "timestamp", ev->timestamp);
    cJSON *data = cJSON_Parse(ev->data);
    cJSON_AddItemToObject(e, "data", data ? data : cJSON_CreateObject());
    return e;
}

static int add_event(const struct bvdb_event *ev, void *opaque)
{
    struct list_ctx *lc = opaque;
    cJSON_AddItemToArray(lc->arr, event_json(ev));
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

/* ---- GET /api/v1/events/stream ---- */

/* One stream (the response's callback state, freed by libmicrohttpd
 * through stream_free when the connection ends).  Only the connection's
 * thread touches it. */
struct stream {
    struct bv_app *app;
    int64_t sent;                  /* last seq sent, or the start point */
    char *buf;                     /* one batch; bytes [off, len) not handed out yet */
    size_t len, off, cap;
    bool failed;                   /* out of memory while formatting */
    struct timespec last_out;      /* CLOCK_MONOTONIC when bytes were last handed out */
};

static int stream_put(struct stream *s, const char *p, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b)
            return -ENOMEM;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

/* Appends one event as an SSE message; stops the listing (non-zero) once
 * the batch holds STREAM_BATCH_BYTES or memory runs out. */
static int stream_event(const struct bvdb_event *ev, void *opaque)
{
    struct stream *s = opaque;
    cJSON *e = event_json(ev);
    char *text = cJSON_PrintUnformatted(e);
    cJSON_Delete(e);
    char id[32];
    snprintf(id, sizeof(id), "%" PRId64, ev->seq);
    size_t before = s->len;
    int r = text ? 0 : -ENOMEM;
    const char *parts[] = { "id: ", id, "\nevent: ", ev->name, "\ndata: ", text, "\n\n" };
    for (size_t i = 0; r == 0 && i < sizeof(parts) / sizeof(parts[0]); i++)
        r = stream_put(s, parts[i], strlen(parts[i]));
    free(text);
    if (r < 0) {
        s->len = before;
        s->failed = true;
        return 1;
    }
    s->sent = ev->seq;
    return s->len >= STREAM_BATCH_BYTES;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Fill the (empty) batch: events after s->sent, else a keep-alive comment
 * once the stream has been silent long enough, else wait for an event.
 * Returns 0 with s->len > 0, 1 when the service is stopping, or -errno. */
static int stream_fill(struct stream *s)
{
    for (;;) {
        if (atomic_load(&s->app->stopping))
            return 1;
        pthread_mutex_lock(&s->app->events_lock);
        int64_t head = s->app->events_head;
        pthread_mutex_unlock(&s->app->events_lock);
        int n = bvdb_event_list(s->app->db, s->sent, NULL, STREAM_BATCH, stream_event, s);
        if (s->len)
            return 0;
        if (n < 0 || s->failed)
            return n < 0 ? n : -ENOMEM;
        double idle = seconds_since(&s->last_out);
        if (idle >= STREAM_KEEPALIVE_S)
            return stream_put(s, ": keep-alive\n\n", 14);
        double wait = STREAM_KEEPALIVE_S - idle;
        /* head was read before the listing, so every seq up to it was
         * visible to it: wait for a newer one (or the poll interval) */
        wait_for_event(s->app, head > s->sent ? head : s->sent,
                       wait < STREAM_POLL_S ? wait : STREAM_POLL_S);
    }
}

/* libmicrohttpd's content reader: blocks in the connection's own thread. */
static long stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct stream *s = cls;
    (void)pos;
    if (s->off == s->len) {
        s->off = s->len = 0;
        int r = stream_fill(s);
        if (r != 0)
            return r > 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(out, s->buf + s->off, n);
    s->off += n;
    clock_gettime(CLOCK_MONOTONIC, &s->last_out);
    return (long)n;
}

/* Called by libmicrohttpd once the response is done (its end sent, or the
 * connection gone); shutdown waits for open_streams to reach 0. */
static void stream_free(void *cls)
{
    struct stream *s = cls;
    pthread_mutex_lock(&s->app->events_lock);
    s->app->open_streams--;
    pthread_cond_broadcast(&s->app->events_cond);
    pthread_mutex_unlock(&s->app->events_lock);
    free(s->buf);
    free(s);
}

/* The start point: Last-Event-ID (a resume) wins over `after`; both are
 * checked.  Returns 0 or sends the 400. */
static int stream_start(struct bv_request *req, struct bv_reply *rep, int64_t *start)
{
    const char *after_s = bv_req_query(req, "after");
    const char *last_id = bv_req_header(req, "Last-Event-ID");
    int64_t after = -1;
    if (after_s && strcmp(after_s, "latest") != 0 && parse_i64(after_s, &after) < 0) {
        bv_reply_error(rep, 400, NULL, "'after' must be a sequence number or 'latest'");
        return -1;
    }
    if (last_id && *last_id) {
        if (parse_i64(last_id, start) < 0) {
            bv_reply_error(rep, 400, NULL,
                           "'Last-Event-ID' must be the sequence number of an event");
            return -1;
        }
        return 0;
    }
    *start = after >= 0 ? after : bvdb_event_head(req->app->db);
    return 0;
}

void api_events_stream(struct bv_request *req, struct bv_reply *rep)
{
    int64_t start;
    if (stream_start(req, rep, &start) < 0)
        return;
    struct stream *s = calloc(1, sizeof(*s));
    if (!s) {
        bv_reply_error(rep, 500, NULL, "out of memory");
        return;
    }
    s->app = req->app;
    s->sent = start;
    MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned int)STREAM_IDLE_LIMIT_S);
    pthread_mutex_lock(&s->app->events_lock);
    s->app->open_streams++;
    pthread_mutex_unlock(&s->app->events_lock);
    clock_gettime(CLOCK_MONOTONIC, &s->last_out);
    rep->status = 200;
    rep->content_type = "text/event-stream";
    rep->stream = stream_read;
    rep->stream_free = stream_free;
    rep->stream_cls = s;
}
