/*
 * test_events_stream: GET /api/v1/events/stream (text/event-stream) read
 * with libcurl as a browser's fetch() reader would: each event as
 * "id: SEQ / event: NAME / data: <the object GET /events returns>", the
 * start point (head by default, `after`, `after=latest`, Last-Event-ID
 * winning over `after`), a ": keep-alive" comment after 15 s of silence on
 * a connection that the 10 s idle limit must not close, the bearer token,
 * strict parameters, and a clean end of the stream on SIGTERM.
 *
 * Events come from blkverify mismatches (the only events that data
 * operations raise today): every failed read of drive v0 files a report
 * and emits CORRUPTION_DETECTED with the offset of its first difference.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "harness.h"

#define TOKEN "stream-s3cret"

static struct bvh H;
static char token_file[300];

/* ---- a stream reader on its own thread ---- */

struct reader {
    pthread_t thread;
    char url[512];
    char last_id_header[96];       /* "Last-Event-ID: N" or empty */
    pthread_mutex_t lock;          /* guards everything below */
    pthread_cond_t cond;           /* signalled on every byte and at the end */
    char *buf;
    size_t len;
    long status;
    char ctype[128];
    bool done;
    CURLcode result;
    double done_at;                /* now_s() when the transfer ended */
};

/* One SSE message: fields of a block, or a comment block. */
struct msg {
    long long id;                  /* -1: none */
    char event[64];
    cJSON *data;                   /* parsed "data:" (caller frees) */
    bool comment;                  /* a ": …" line block (keep-alive) */
    char comment_text[64];
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static size_t on_body(char *p, size_t sz, size_t n, void *opaque)
{
    struct reader *rd = opaque;
    size_t add = sz * n;
    pthread_mutex_lock(&rd->lock);
    char *b = realloc(rd->buf, rd->len + add + 1);
    if (b) {
        memcpy(b + rd->len, p, add);
        rd->buf = b;
        rd->len += add;
        rd->buf[rd->len] = '\0';
    }
    pthread_cond_broadcast(&rd->cond);
    pthread_mutex_unlock(&rd->lock);
    return b ? add : 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *opaque)
{
    struct reader *rd = opaque;
    size_t len = sz * n;
    static const char ct[] = "content-type:";
    if (len > sizeof(ct) && strncasecmp(p, ct, sizeof(ct) - 1) == 0) {
        pthread_mutex_lock(&rd->lock);
        const char *v = p + sizeof(ct) - 1;
        while (*v == ' ')
            v++;
        size_t vl = (size_t)(p + len - v);
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        snprintf(rd->ctype, sizeof(rd->ctype), "%.*s", (int)vl, v);
        pthread_cond_broadcast(&rd->cond);
        pthread_mutex_unlock(&rd->lock);
    }
    return len;
}

static void *reader_main(void *opaque)
{
    struct reader *rd = opaque;
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    char auth[128];
    if (H.token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", H.token);
        hl = curl_slist_append(hl, auth);
    }
    if (rd->last_id_header[0])
        hl = curl_slist_append(hl, rd->last_id_header);
    curl_easy_setopt(c, CURLOPT_URL, rd->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, rd);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, rd);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    long st = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    pthread_mutex_lock(&rd->lock);
    rd->status = st;
    rd->result = cc;
    rd->done = true;
    rd->done_at = now_s();
    pthread_cond_broadcast(&rd->cond);
    pthread_mutex_unlock(&rd->lock);
    return NULL;
}

/* Opens a stream on query (may be "") with an optional Last-Event-ID. */
static struct reader *reader_open(const char *query, const char *last_id)
{
    struct reader *rd = calloc(1, sizeof(*rd));
    assert_non_null(rd);
    snprintf(rd->url, sizeof(rd->url), "%s/api/v1/events/stream%s", H.base, query);
    if (last_id)
        snprintf(rd->last_id_header, sizeof(rd->last_id_header), "Last-Event-ID: %s", last_id);
    pthread_mutex_init(&rd->lock, NULL);
    pthread_cond_init(&rd->cond, NULL);
    assert_int_equal(pthread_create(&rd->thread, NULL, reader_main, rd), 0);
    return rd;
}

static void reader_close(struct reader *rd)
{
    /* the transfer ends by itself (the tests end it by SIGTERM or by an
     * error status); a reader still open is cut when the daemon stops */
    pthread_join(rd->thread, NULL);
    pthread_mutex_destroy(&rd->lock);
    pthread_cond_destroy(&rd->cond);
    free(rd->buf);
    free(rd);
}

static void abs_deadline(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += (time_t)seconds;
    ts->tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Number of complete blocks ("\n\n"-terminated) in the body so far. */
static int blocks_locked(const struct reader *rd)
{
    int n = 0;
    for (const char *p = rd->buf; p && (p = strstr(p, "\n\n")); p += 2)
        n++;
    return n;
}

/* Waits (≤ seconds) until the body holds at least n blocks; returns the count. */
static int reader_wait_blocks(struct reader *rd, int n, double seconds)
{
    struct timespec dl;
    abs_deadline(&dl, seconds);
    pthread_mutex_lock(&rd->lock);
    int have;
    while ((have = blocks_locked(rd)) < n && !rd->done)
        if (pthread_cond_timedwait(&rd->cond, &rd->lock, &dl) != 0)
            break;
    have = blocks_locked(rd);
    pthread_mutex_unlock(&rd->lock);
    return have;
}

/* Waits (≤ seconds) for the transfer to end; true if it did. */
static bool reader_wait_done(struct reader *rd, double seconds)
{
    struct timespec dl;
    abs_deadline(&dl, seconds);
    pthread_mutex_lock(&rd->lock);
    while (!rd->done)
        if (pthread_cond_timedwait(&rd->cond, &rd->lock, &dl) != 0)
            break;
    bool d = rd->done;
    pthread_mutex_unlock(&rd->lock);
    return d;
}

/* Parses block i (0-based) of the body into m; false if there is none. */
static bool reader_block(struct reader *rd, int i, struct msg *m)
{
    memset(m, 0, sizeof(*m));
    m->id = -1;
    pthread_mutex_lock(&rd->lock);
    const char *p = rd->buf;
    for (int k = 0; p && k < i; k++) {
        p = strstr(p, "\n\n");
        if (p)
            p += 2;
    }
    const char *end = p ? strstr(p, "\n\n") : NULL;
    char *blk = end ? strndup(p, (size_t)(end - p)) : NULL;
    pthread_mutex_unlock(&rd->lock);
    if (!blk)
        return false;
    char *save = NULL;
    for (char *line = strtok_r(blk, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == ':') {
            m->comment = true;
            snprintf(m->comment_text, sizeof(m->comment_text), "%s", line);
        } else if (strncmp(line, "id: ", 4) == 0) {
            m->id = strtoll(line + 4, NULL, 10);
        } else if (strncmp(line, "event: ", 7) == 0) {
            snprintf(m->event, sizeof(m->event), "%s", line + 7);
        } else if (strncmp(line, "data: ", 6) == 0) {
            assert_null(m->data);          /* one data line per event */
            m->data = cJSON_Parse(line + 6);
            assert_non_null(m->data);
        } else {
            fail_msg("unexpected SSE line '%s'", line);
        }
    }
    free(blk);
    return true;
}

/* ---- events to stream: blkverify mismatches ---- */

/* One failing read at off (a multiple of 64 KiB below 1 MiB): one event
 * whose first_mismatch_offset is off.  Returns its seq (from GET /events). */
static long long provoke(unsigned off_k)
{
    cJSON *head = bvh_json(&H, "GET", 200, "/api/v1/events?after=latest", NULL);
    long long after = (long long)bvh_num(head, "next");
    cJSON_Delete(head);
    cJSON *j = bvh_json(&H, "POST", 200, "/api/v1/drives/v0/io",
                        "{\"commands\":[\"read %uk 4k\"]}", off_k);
    const cJSON *res = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
    assert_false(bvh_bool(res, "ok"));
    cJSON_Delete(j);
    char q[128];
    snprintf(q, sizeof(q), "/api/v1/events?after=%lld", after);
    cJSON *ev = bvh_json(&H, "GET", 200, q, NULL);
    const cJSON *arr = cJSON_GetObjectItem(ev, "events");
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    long long seq = (long long)bvh_num(cJSON_GetArrayItem(arr, 0), "seq");
    cJSON_Delete(ev);
    return seq;
}

/* Block i of rd is exactly event seq as GET /events returns it. */
static void assert_block_is_event(struct reader *rd, int i, long long seq)
{
    struct msg m;
    assert_true(reader_block(rd, i, &m));
    assert_false(m.comment);
    assert_int_equal(m.id, seq);
    assert_string_equal(m.event, "CORRUPTION_DETECTED");
    char q[128];
    snprintf(q, sizeof(q), "/api/v1/events?after=%lld&limit=1", seq - 1);
    cJSON *ev = bvh_json(&H, "GET", 200, q, NULL);
    const cJSON *want = cJSON_GetArrayItem(cJSON_GetObjectItem(ev, "events"), 0);
    assert_non_null(want);
    if (!cJSON_Compare(want, m.data, true)) {
        char *a = cJSON_PrintUnformatted(want), *b = cJSON_PrintUnformatted(m.data);
        fail_msg("stream data %s != GET /events %s", b, a);
    }
    assert_int_equal(bvh_num(m.data, "seq"), seq);
    assert_string_equal(bvh_str(m.data, "event"), "CORRUPTION_DETECTED");
    const cJSON *d = cJSON_GetObjectItem(m.data, "data");
    assert_string_equal(bvh_str(d, "drive"), "v0");
    assert_true(strncmp(bvh_str(d, "report_id"), "r-", 2) == 0);
    cJSON_Delete(ev);
    cJSON_Delete(m.data);
}

static int setup(void **state)
{
    (void)state;
    char tmp[] = "/tmp/bv-sse-tok-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0)
        return -1;
    if (write(fd, TOKEN "\n", sizeof(TOKEN)) != (ssize_t)sizeof(TOKEN))
        return -1;
    close(fd);
    snprintf(token_file, sizeof(token_file), "%s", tmp);
    struct bvh_opts o = { .token_file = token_file };
    H.token = TOKEN;
    if (bvh_start(&H, &o) < 0)
        return -1;
    /* v0: a blkverify drive whose raw side is 0xcd and test side zeros */
    bvh_blkverify_mismatch_drive(&H, "v0", "test.qcow2", "ref.raw");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bvh_stop(&H);
    unlink(token_file);
    return 0;
}

/* No token: 401 before any streaming; bad values and unknown parameters: 400. */
static void test_refusals(void **state)
{
    (void)state;
    static const struct { const char *query, *last_id; long status; const char *cls; } cases[] = {
        { "", NULL, 401, "AuthenticationError" },            /* sent without the token */
        { "?after=x", NULL, 400, "GenericError" },
        { "?after=-1", NULL, 400, "GenericError" },
        { "?after=1&wait=1", NULL, 400, "GenericError" },
        { "", "nope", 400, "GenericError" },
        { "?after=0", "12x", 400, "GenericError" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[128], hdr[96];
        snprintf(path, sizeof(path), "/api/v1/events/stream%s", cases[i].query);
        const char *hl[] = { hdr, NULL };
        snprintf(hdr, sizeof(hdr), "Last-Event-ID: %s", cases[i].last_id ? cases[i].last_id : "");
        if (i == 0)
            H.token = NULL;
        struct bvh_resp r;
        assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL,
                                     cases[i].last_id ? hl : NULL, &r), 0);
        H.token = TOKEN;
        bvh_assert_error(&r, cases[i].status, cases[i].cls);
        bvh_resp_free(&r);
    }
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "POST", "/api/v1/events/stream", "{}", 2, NULL, NULL, &r), 0);
    bvh_assert_error(&r, 405, "GenericError");
    bvh_resp_free(&r);
}

/* Default start (head), `after=latest`, `after=N`, Last-Event-ID, and
 * Last-Event-ID over `after`; each message is the long poll's object. */
static void test_start_points_and_messages(void **state)
{
    (void)state;
    long long s0 = provoke(0);                 /* before any stream: history */
    struct reader *head = reader_open("", NULL);
    struct reader *latest = reader_open("?after=latest", NULL);
    /* both are connected (headers in) before the next event */
    for (struct reader *rd = head; rd; rd = rd == head ? latest : NULL) {
        struct timespec dl;
        abs_deadline(&dl, 10);
        pthread_mutex_lock(&rd->lock);
        while (!rd->ctype[0] && !rd->done)
            if (pthread_cond_timedwait(&rd->cond, &rd->lock, &dl) != 0)
                break;
        assert_string_equal(rd->ctype, "text/event-stream");
        pthread_mutex_unlock(&rd->lock);
    }
    assert_int_equal(reader_wait_blocks(head, 1, 0.5), 0);    /* s0 is not replayed */
    long long s1 = provoke(64);
    long long s2 = provoke(128);
    assert_int_equal(s1, s0 + 1);
    assert_int_equal(s2, s0 + 2);
    assert_int_equal(reader_wait_blocks(head, 2, 10), 2);
    assert_int_equal(reader_wait_blocks(latest, 2, 10), 2);
    assert_block_is_event(head, 0, s1);
    assert_block_is_event(head, 1, s2);
    assert_block_is_event(latest, 0, s1);
    assert_block_is_event(latest, 1, s2);
    struct msg m;
    assert_true(reader_block(head, 0, &m));
    assert_int_equal(bvh_num(cJSON_GetObjectItem(m.data, "data"), "first_mismatch_offset"), 65536);
    cJSON_Delete(m.data);

    /* history from a point */
    char q[64], id[32];
    snprintf(q, sizeof(q), "?after=%lld", s0 - 1);
    struct reader *from = reader_open(q, NULL);
    assert_int_equal(reader_wait_blocks(from, 3, 10), 3);
    assert_block_is_event(from, 0, s0);
    assert_block_is_event(from, 1, s1);
    assert_block_is_event(from, 2, s2);
    /* a resume: after the last id seen */
    snprintf(id, sizeof(id), "%lld", s1);
    struct reader *resume = reader_open("", id);
    assert_int_equal(reader_wait_blocks(resume, 1, 10), 1);
    assert_block_is_event(resume, 0, s2);
    /* Last-Event-ID wins over `after` (a reconnect keeps its first URL) */
    snprintf(q, sizeof(q), "?after=%lld", s0 - 1);
    struct reader *both = reader_open(q, id);
    assert_int_equal(reader_wait_blocks(both, 1, 10), 1);
    assert_block_is_event(both, 0, s2);
    assert_int_equal(reader_wait_blocks(both, 2, 0.3), 1);    /* nothing older follows */

    /* one more event reaches every open stream, in order */
    long long s3 = provoke(192);
    struct reader *all[] = { head, latest, from, resume, both };
    const int before[] = { 2, 2, 3, 1, 1 };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(reader_wait_blocks(all[i], before[i] + 1, 10), before[i] + 1);
        assert_block_is_event(all[i], before[i], s3);
    }
    /* the daemon's stop ends them all (checked in detail below); here the
     * readers are left open and joined at the end of the file's tests */
    for (size_t i = 0; i < 5; i++) {
        pthread_mutex_lock(&all[i]->lock);
        assert_false(all[i]->done);
        assert_int_equal(all[i]->status, 0);              /* not finished yet */
        pthread_mutex_unlock(&all[i]->lock);
    }
    /* stop and restart the daemon: every stream ends cleanly */
    H.keep_dir = true;
    double t0 = now_s();
    assert_int_equal(bvh_stop(&H), 0);
    for (size_t i = 0; i < 5; i++) {
        assert_true(reader_wait_done(all[i], 5));
        assert_int_equal(all[i]->result, CURLE_OK);        /* a complete chunked body */
        assert_int_equal(all[i]->status, 200);
        assert_true(all[i]->done_at - t0 < 5);
        reader_close(all[i]);
    }
    char dir[256];
    snprintf(dir, sizeof(dir), "%s", H.dir);
    struct bvh_opts o = { .token_file = token_file, .data_dir = dir };
    assert_int_equal(bvh_start(&H, &o), 0);
    H.keep_dir = false;
    /* events survive the restart: a resume across it */
    snprintf(id, sizeof(id), "%lld", s2);
    struct reader *again = reader_open("", id);
    assert_int_equal(reader_wait_blocks(again, 1, 10), 1);
    assert_block_is_event(again, 0, s3);
    long long s4 = provoke(256);
    assert_int_equal(s4, s3 + 1);
    assert_int_equal(reader_wait_blocks(again, 2, 10), 2);
    assert_block_is_event(again, 1, s4);
    H.keep_dir = true;
    assert_int_equal(bvh_stop(&H), 0);
    assert_true(reader_wait_done(again, 5));
    assert_int_equal(again->result, CURLE_OK);
    reader_close(again);
    assert_int_equal(bvh_start(&H, &o), 0);    /* the next test stops this one */
    H.keep_dir = false;
}

/* 15 s of silence: a keep-alive comment, and the 10 s idle limit does not
 * close the stream; then SIGTERM ends it within a bound. */
static void test_keepalive_and_shutdown(void **state)
{
    (void)state;
    double t0 = now_s();
    struct reader *rd = reader_open("?after=latest", NULL);
    int n = reader_wait_blocks(rd, 1, 25);
    double t1 = now_s();
    assert_int_equal(n, 1);
    struct msg m;
    assert_true(reader_block(rd, 0, &m));
    assert_true(m.comment);
    assert_string_equal(m.comment_text, ": keep-alive");
    assert_int_equal(m.id, -1);
    assert_null(m.data);
    assert_true(t1 - t0 >= 14.0);              /* after the silence, not before */
    assert_true(t1 - t0 < 20.0);
    pthread_mutex_lock(&rd->lock);
    assert_false(rd->done);                    /* still open past the idle limit */
    pthread_mutex_unlock(&rd->lock);
    /* an event after a keep-alive still arrives */
    long long s = provoke(320);
    assert_int_equal(reader_wait_blocks(rd, 2, 10), 2);
    assert_block_is_event(rd, 1, s);

    double t2 = now_s();
    H.keep_dir = false;
    assert_int_equal(bvh_stop(&H), 0);         /* exits 0, within the harness's 10 s */
    assert_true(reader_wait_done(rd, 5));
    assert_int_equal(rd->result, CURLE_OK);
    assert_true(rd->done_at - t2 < 5);
    reader_close(rd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_start_points_and_messages),
        cmocka_unit_test(test_keepalive_and_shutdown),
    };
    return cmocka_run_group_tests_name("events_stream", tests, setup, teardown);
}
