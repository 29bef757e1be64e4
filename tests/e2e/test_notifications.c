/*
 * Notifications (webhooks): the test runs its own receiver (libmicrohttpd on
 * a free port) that records every POST and answers 500 or 200 as told.
 *  - a blkdebug-failed backup → a signed job_failed (the HMAC is checked
 *    here with GnuTLS over "<timestamp>.<body>"); the receiver's first 500
 *    is retried: the delivery log shows attempts 2, delivered, status 200;
 *  - the backoff as the receiver sees it (1 s, then 2 s planned), and a
 *    delivery still pending when the daemon stops is delivered after the
 *    restart (same event id, same body);
 *  - a receiver that never answers: the delivery is failed after
 *    --notify-attempts attempts, with the error, and counted in /metrics;
 *  - corruption: a blkverify mismatch's report reaches the receiver;
 *  - a job running when the daemon is killed is a job_failed at the next start;
 *  - space_low: under a forced low free space (BV_TEST_FREE_BYTES) the
 *    threshold is told once, and a 507-refused backup once per episode;
 *  - protection_stale (--test-clock): a daily policy's drive whose backups
 *    fail is told once after three days, the one whose backups work never;
 *  - roles: every notification route, reads included, needs the admin token;
 *  - validation: bad url, unknown or repeated event, bad name, short secret,
 *    unknown field are 400 with the field named; the secret never comes back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "harness.h"

#define SECRET "whsec-0123456789"
#define WAIT_S 40
#define FAILING_BLKDEBUG "{\"inject_error\":[{\"event\":\"read_aio\",\"errno\":5}]}"

/* ---- the receiver ---- */

#define MAX_REQS 64
#define BODY_MAX 65536

struct req {
    char event[64], delivery[32], ts[32], sig[128];
    char *body;
    size_t len;
    int answered;                  /* the status the receiver gave */
    long long at_ms;               /* when it arrived (unix ms) */
};

static struct {
    struct MHD_Daemon *d;
    unsigned port;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct req reqs[MAX_REQS];
    int n;
    int fails_left;                /* answer 500 to this many more requests */
    int always_fail;               /* answer 500 to everything */
} R = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

struct conn {
    char *body;
    size_t len;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "2026-12-02T19:30:31.645Z" → unix ms. */
static long long parse_ms(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(p);
    assert_true(p[0] == '.' && strlen(p) == 5 && p[4] == 'Z');
    return (long long)timegm(&tm) * 1000 + atoi(p + 1);
}

static void copy_header(struct MHD_Connection *c, const char *name, char *out, size_t cap)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    snprintf(out, cap, "%s", v ? v : "");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_len, void **ctx)
{
    (void)cls; (void)url; (void)version;
    struct conn *k = *ctx;
    if (!k) {
        k = calloc(1, sizeof(*k));
        *ctx = k;
        return k ? MHD_YES : MHD_NO;
    }
    if (*upload_len) {
        if (k->len + *upload_len > BODY_MAX)
            return MHD_NO;
        char *b = realloc(k->body, k->len + *upload_len + 1);
        if (!b)
            return MHD_NO;
        memcpy(b + k->len, upload, *upload_len);
        k->body = b;
        k->len += *upload_len;
        k->body[k->len] = '\0';
        *upload_len = 0;
        return MHD_YES;
    }
    int status = 200;
    pthread_mutex_lock(&R.lock);
    if (R.always_fail || R.fails_left > 0) {
        status = 500;
        if (R.fails_left > 0)
            R.fails_left--;
    }
    if (strcmp(method, "POST") == 0 && R.n < MAX_REQS) {
        struct req *q = &R.reqs[R.n++];
        copy_header(c, "X-Blockvault-Event", q->event, sizeof(q->event));
        copy_header(c, "X-Blockvault-Delivery", q->delivery, sizeof(q->delivery));
        copy_header(c, "X-Blockvault-Timestamp", q->ts, sizeof(q->ts));
        copy_header(c, "X-Blockvault-Signature", q->sig, sizeof(q->sig));
        q->body = k->body ? k->body : strdup("");
        q->len = k->len;
        q->answered = status;
        q->at_ms = now_ms();
        k->body = NULL;
        pthread_cond_broadcast(&R.cond);
    }
    pthread_mutex_unlock(&R.lock);
    static const char text[] = "{}";
    struct MHD_Response *resp = MHD_create_response_from_buffer(2, (void *)text,
                                                                MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void on_done(void *cls, struct MHD_Connection *c, void **ctx,
                    enum MHD_RequestTerminationCode code)
{
    (void)cls; (void)c; (void)code;
    struct conn *k = *ctx;
    if (k) {
        free(k->body);
        free(k);
    }
    *ctx = NULL;
}

static int receiver_start(void)
{
    R.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                           on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                           MHD_OPTION_SOCK_ADDR, NULL, MHD_OPTION_END);
    if (!R.d)
        return -1;
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(R.d, MHD_DAEMON_INFO_BIND_PORT);
    R.port = i ? i->port : 0;
    return R.port ? 0 : -1;
}

static void receiver_stop(void)
{
    if (R.d)
        MHD_stop_daemon(R.d);
    for (int i = 0; i < R.n; i++)
        free(R.reqs[i].body);
}

/* Wait until the receiver has more than n requests; returns the count. */
static int wait_requests(int n, int timeout_s)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_s;
    pthread_mutex_lock(&R.lock);
    while (R.n <= n)
        if (pthread_cond_timedwait(&R.cond, &R.lock, &dl) != 0)
            break;
    int got = R.n;
    pthread_mutex_unlock(&R.lock);
    return got;
}

static void set_mode(int fails_left, int always_fail)
{
    pthread_mutex_lock(&R.lock);
    R.fails_left = fails_left;
    R.always_fail = always_fail;
    pthread_mutex_unlock(&R.lock);
}

/* ---- checks ---- */

/* The signature header is sha256=hex(HMAC-SHA256(secret, ts "." body)). */
static void assert_signed(const struct req *q, const char *secret)
{
    size_t tl = strlen(q->ts);
    assert_true(tl > 0);
    char *msg = malloc(tl + 1 + q->len);
    assert_non_null(msg);
    memcpy(msg, q->ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, q->body, q->len);
    unsigned char mac[32];
    assert_int_equal(gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, strlen(secret), msg,
                                      tl + 1 + q->len, mac), 0);
    free(msg);
    char want[80] = "sha256=";
    for (int i = 0; i < 32; i++)
        snprintf(want + 7 + 2 * i, 3, "%02x", mac[i]);
    assert_string_equal(q->sig, want);
    long long ts = atoll(q->ts);
    assert_true(llabs(ts - (long long)time(NULL)) < 120);
}

static struct bvh H;
static char hook_url[128];

static cJSON *deliveries_on(struct bvh *h, const char *name)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/notifications/%s/deliveries", name);
    return bvh_json(h, "GET", 200, path, NULL);
}

static cJSON *deliveries(const char *name)
{
    return deliveries_on(&H, name);
}

/* The newest delivery of name once it is in state with at least min_attempts
 * (polled), or fails. */
static cJSON *wait_delivery_on(struct bvh *h, const char *name, const char *state,
                               int min_attempts)
{
    for (int i = 0; i < WAIT_S * 10; i++) {
        cJSON *j = deliveries_on(h, name);
        cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "deliveries"), 0);
        if (d && strcmp(bvh_str(d, "state"), state) == 0 &&
            bvh_num(d, "attempts") >= min_attempts) {
            cJSON *c = cJSON_Duplicate(d, 1);
            cJSON_Delete(j);
            return c;
        }
        cJSON_Delete(j);
        usleep(100 * 1000);
    }
    fail_msg("no delivery of '%s' reached state %s with %d attempts", name, state,
             min_attempts);
    return NULL;
}

static cJSON *wait_delivery(const char *name, const char *state, int min_attempts)
{
    return wait_delivery_on(&H, name, state, min_attempts);
}

static void expect_400(const char *body, const char *words)
{
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "POST", "/api/v1/notifications", body, strlen(body), NULL,
                                 NULL, &r), 0);
    if (r.status != 400 || !r.body || !strstr(r.body, words))
        print_message("%s → %ld %s (wanted 400 with '%s')\n", body, r.status,
                      r.body ? r.body : "", words);
    bvh_assert_error(&r, 400, "GenericError");
    assert_non_null(strstr(r.body, words));
    bvh_resp_free(&r);
}

static int setup(void **state)
{
    (void)state;
    if (receiver_start() < 0)
        return -1;
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%u/hook", R.port);
    static const char *args[] = { "--notify-retry-ms", "1000", "--notify-attempts", "4", NULL };
    struct bvh_opts o = { .args = args };
    return bvh_start(&H, &o);
}

static int teardown(void **state)
{
    (void)state;
    bvh_stop(&H);
    receiver_stop();
    return 0;
}

/* ---- tests ---- */

static void test_validation(void **state)
{
    (void)state;
    expect_400("{\"name\":\"x\",\"url\":\"ftp://example.com/\",\"events\":[\"job_failed\"]}",
               "url: must start with http:// or https://");
    expect_400("{\"name\":\"x\",\"url\":\"http:///nohost\",\"events\":[\"job_failed\"]}", "url:");
    expect_400("{\"name\":\"x\",\"url\":\"http://a b/\",\"events\":[\"job_failed\"]}", "url:");
    expect_400("{\"name\":\"x\",\"url\":\"http://h/\",\"events\":[\"job_done\"]}",
               "events[0]: 'job_done' is not an event");
    expect_400("{\"name\":\"x\",\"url\":\"http://h/\",\"events\":[\"corruption\",\"corruption\"]}",
               "events[1]: 'corruption' is given twice");
    expect_400("{\"name\":\"x\",\"url\":\"http://h/\",\"events\":[]}", "events: give at least");
    expect_400("{\"name\":\"x\",\"url\":\"http://h/\",\"events\":[5]}", "events[0]: must be");
    expect_400("{\"name\":\"../x\",\"url\":\"http://h/\",\"events\":[\"space_low\"]}", "name:");
    expect_400("{\"name\":\"\",\"url\":\"http://h/\",\"events\":[\"space_low\"]}", "name:");
    expect_400("{\"name\":\"x\",\"url\":\"http://h/\",\"events\":[\"space_low\"],\"secret\":\"short\"}",
               "secret: 8 to 256 characters");
    expect_400("{\"name\":\"x\",\"url\":\"http://h/\",\"events\":[\"space_low\"],\"colour\":1}",
               "colour");
    expect_400("{\"url\":\"http://h/\",\"events\":[\"space_low\"]}", "name");
    /* nothing was made */
    cJSON *j = bvh_json(&H, "GET", 200, "/api/v1/notifications", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "notifications")), 0);
    cJSON_Delete(j);
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/notifications/none", NULL, 0, NULL, NULL,
                                 &r), 0);
    bvh_assert_error(&r, 404, "NotFound");
    bvh_resp_free(&r);
    assert_int_equal(bvh_request(&H, "DELETE", "/api/v1/notifications/none", NULL, 0, NULL, NULL,
                                 &r), 0);
    bvh_assert_error(&r, 404, "NotFound");
    bvh_resp_free(&r);
}

static void test_job_failed_signed_and_retried(void **state)
{
    (void)state;
    cJSON *j = bvh_json(&H, "POST", 201, "/api/v1/notifications",
                        "{\"name\":\"hook\",\"url\":\"%s\",\"events\":[\"job_failed\","
                        "\"corruption\"],\"secret\":\"" SECRET "\"}", hook_url);
    assert_string_equal(bvh_str(j, "name"), "hook");
    assert_true(bvh_bool(j, "has_secret"));
    assert_null(cJSON_GetObjectItem(j, "secret"));
    cJSON_Delete(j);
    /* a second one, to a port nobody listens on, for the failed state */
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/notifications",
                          "{\"name\":\"down\",\"url\":\"http://127.0.0.1:1/\","
                          "\"events\":[\"job_failed\"]}"));
    cJSON_Delete(bvh_json(&H, "POST", 409, "/api/v1/notifications",
                          "{\"name\":\"hook\",\"url\":\"%s\",\"events\":[\"job_failed\"]}",
                          hook_url));
    /* the secret is never shown */
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/notifications", NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, SECRET));
    assert_null(strstr(r.body, "\"secret\""));
    bvh_resp_free(&r);
    j = bvh_json(&H, "GET", 200, "/api/v1/notifications/hook", NULL);
    assert_string_equal(bvh_str(j, "url"), hook_url);
    const cJSON *ev = cJSON_GetObjectItem(j, "events");
    assert_int_equal(cJSON_GetArraySize(ev), 2);
    assert_string_equal(cJSON_GetArrayItem(ev, 0)->valuestring, "job_failed");
    assert_null(cJSON_GetObjectItem(j, "secret"));
    cJSON_Delete(j);

    /* a backup of a drive whose every read fails: the job concludes with an error */
    set_mode(1, 0);
    int before = wait_requests(1000, 0);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":\"1M\",\"blkdebug\":"
                          FAILING_BLKDEBUG "}"));
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/drives/d0/io",
                          "{\"commands\":[\"write -P 0xab 0 64k\"]}"));
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/d0/backups", "{\"kind\":\"full\"}"));
    assert_true(wait_requests(before + 1, WAIT_S) >= before + 2);

    pthread_mutex_lock(&R.lock);
    struct req *a = &R.reqs[before], *b = &R.reqs[before + 1];
    assert_int_equal(a->answered, 500);
    assert_int_equal(b->answered, 200);
    assert_string_equal(a->event, "job_failed");
    assert_string_equal(a->delivery, b->delivery);
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->body, b->body, a->len);          /* every attempt sends the same */
    assert_signed(a, SECRET);
    assert_signed(b, SECRET);
    cJSON *p = cJSON_Parse(b->body);
    pthread_mutex_unlock(&R.lock);
    assert_non_null(p);
    assert_string_equal(bvh_str(p, "event"), "job_failed");
    assert_int_equal(strncmp(bvh_str(p, "id"), "ev-", 3), 0);
    assert_non_null(strchr(bvh_str(p, "created_at"), 'T'));
    const cJSON *data = cJSON_GetObjectItem(p, "data");
    assert_string_equal(bvh_str(data, "device"), "d0");
    assert_string_equal(bvh_str(data, "type"), "backup");
    assert_string_equal(bvh_str(data, "job_id"), "d0");
    assert_non_null(strstr(bvh_str(data, "error"), "Input/output error"));

    /* the log: two attempts, delivered by the second */
    cJSON *d = wait_delivery("hook", "delivered", 2);
    assert_int_equal((int)bvh_num(d, "attempts"), 2);
    assert_int_equal((int)bvh_num(d, "last_status"), 200);
    assert_string_equal(bvh_str(d, "event"), "job_failed");
    assert_string_equal(bvh_str(d, "event_id"), bvh_str(p, "id"));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(d, "delivered_at")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "next_attempt_at")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "last_error")));
    cJSON_Delete(d);
    cJSON_Delete(p);
}

static void test_pending_survives_restart(void **state)
{
    (void)state;
    set_mode(0, 1);
    int before = wait_requests(1000, 0);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/d0/backups", "{\"kind\":\"full\"}"));
    assert_true(wait_requests(before, WAIT_S) > before);
    pthread_mutex_lock(&R.lock);
    char first_body[4096];
    snprintf(first_body, sizeof(first_body), "%s", R.reqs[before].body);
    assert_int_equal(R.reqs[before].answered, 500);
    pthread_mutex_unlock(&R.lock);

    /* the backoff: the second attempt --notify-retry-ms (1 s) after the first, the
     * third planned twice that after the second */
    assert_true(wait_requests(before + 1, WAIT_S) > before + 1);
    pthread_mutex_lock(&R.lock);
    long long second_ms = R.reqs[before + 1].at_ms, gap = second_ms - R.reqs[before].at_ms;
    assert_string_equal(R.reqs[before + 1].body, first_body);
    pthread_mutex_unlock(&R.lock);
    if (gap < 900 || gap > 1900)
        fail_msg("the first retry came %lld ms after the first attempt (want about 1000)", gap);
    cJSON *d = wait_delivery("hook", "pending", 2);
    assert_int_equal((int)bvh_num(d, "attempts"), 2);
    assert_int_equal((int)bvh_num(d, "last_status"), 500);
    assert_string_equal(bvh_str(d, "last_error"), "HTTP 500");
    long long planned = parse_ms(bvh_str(d, "next_attempt_at")) - second_ms;
    if (planned < 1500 || planned > 2500)
        fail_msg("the third attempt is planned %lld ms after the second (want about 2000)",
                 planned);
    char event_id[64];
    snprintf(event_id, sizeof(event_id), "%s", bvh_str(d, "event_id"));
    cJSON_Delete(d);

    /* stop (the receiver still refuses everything), then let it accept, start again */
    kill(H.pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(H.pid, &st, 0), H.pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    H.pid = 0;
    set_mode(0, 0);
    int at_restart = wait_requests(1000, 0);
    assert_int_equal(bvh_restart(&H), 0);
    d = wait_delivery("hook", "delivered", 3);
    assert_int_equal((int)bvh_num(d, "attempts"), 3);
    assert_string_equal(bvh_str(d, "event_id"), event_id);
    assert_int_equal((int)bvh_num(d, "last_status"), 200);
    cJSON_Delete(d);
    assert_true(wait_requests(at_restart, 5) > at_restart);
    pthread_mutex_lock(&R.lock);
    struct req *q = &R.reqs[R.n - 1];
    assert_int_equal(q->answered, 200);
    assert_string_equal(q->body, first_body);
    assert_signed(q, SECRET);
    pthread_mutex_unlock(&R.lock);
}

static void test_failed_after_attempts(void **state)
{
    (void)state;
    /* "down" got both failures' job_failed; the older one has had time for 4
     * attempts (1 + 2 + 4 s of waits) */
    cJSON *d = NULL;
    for (int i = 0; i < WAIT_S * 10 && !d; i++) {
        cJSON *j = deliveries("down");
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "deliveries"))
            if (!d && strcmp(bvh_str(it, "state"), "failed") == 0)
                d = cJSON_Duplicate(it, 1);
        cJSON_Delete(j);
        if (!d)
            usleep(100 * 1000);
    }
    assert_non_null(d);
    assert_int_equal((int)bvh_num(d, "attempts"), 4);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "last_status")));
    assert_non_null(strstr(bvh_str(d, "last_error"), "onnect"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "next_attempt_at")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "delivered_at")));
    cJSON_Delete(d);

    cJSON *n = bvh_json(&H, "GET", 200, "/api/v1/notifications/down", NULL);
    assert_true(bvh_num(cJSON_GetObjectItem(n, "deliveries"), "failed") >= 1);
    cJSON_Delete(n);
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", "/metrics", NULL, 0, NULL, NULL, &r), 0);
    const char *m = strstr(r.body, "blockvault_notification_deliveries{state=\"failed\"} ");
    assert_non_null(m);
    assert_true(atoi(m + strlen("blockvault_notification_deliveries{state=\"failed\"} ")) >= 1);
    m = strstr(r.body, "blockvault_notification_deliveries{state=\"delivered\"} ");
    assert_non_null(m);
    assert_int_equal(atoi(m + strlen("blockvault_notification_deliveries{state=\"delivered\"} ")),
                     4);            /* hook: two failed backups, a corruption, an interrupted job */
    bvh_resp_free(&r);

    /* deleting a notification takes its log and its secret file */
    char secret_file[400];
    snprintf(secret_file, sizeof(secret_file), "%s/notifications/hook.secret", H.dir);
    struct stat st;
    assert_int_equal(stat(secret_file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/notifications/hook", NULL));
    assert_int_equal(stat(secret_file, &st), -1);
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/notifications/hook/deliveries", NULL, 0,
                                 NULL, NULL, &r), 0);
    bvh_assert_error(&r, 404, "NotFound");
    bvh_resp_free(&r);
}

/* A blkverify mismatch files a corruption report: "hook" (job_failed and
 * corruption) is told, with the report's id. */
static void test_corruption(void **state)
{
    (void)state;
    set_mode(0, 0);
    int before = wait_requests(1000, 0);
    bvh_blkverify_mismatch_drive(&H, "bv0", "bvt.qcow2", "bvref.raw");
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/drives/bv0/data?offset=0&length=512", NULL,
                                 0, NULL, NULL, &r), 0);
    assert_true(r.status >= 400);
    const cJSON *e = cJSON_GetObjectItem(r.json, "error");
    char rid[64];
    snprintf(rid, sizeof(rid), "%s", bvh_str(e, "report_id"));
    bvh_resp_free(&r);
    assert_true(wait_requests(before, WAIT_S) > before);
    pthread_mutex_lock(&R.lock);
    struct req *q = &R.reqs[before];
    assert_string_equal(q->event, "corruption");
    assert_signed(q, SECRET);
    cJSON *p = cJSON_Parse(q->body);
    pthread_mutex_unlock(&R.lock);
    assert_string_equal(bvh_str(p, "event"), "corruption");
    const cJSON *data = cJSON_GetObjectItem(p, "data");
    assert_string_equal(bvh_str(data, "report_id"), rid);
    assert_string_equal(bvh_str(data, "drive"), "bv0");
    assert_int_equal((long long)bvh_num(data, "first_mismatch_offset"), 0);
    cJSON_Delete(p);
    cJSON *d = wait_delivery("hook", "delivered", 1);
    assert_string_equal(bvh_str(d, "event"), "corruption");
    cJSON_Delete(d);
}

/* A job running when the service dies is failed at the next start-up
 * ("interrupted by restart"), and that is a job_failed too. */
static void test_interrupted_job(void **state)
{
    (void)state;
    set_mode(0, 0);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"slow\",\"format\":\"qcow2\",\"size\":\"1M\"}"));
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/drives/slow/io",
                          "{\"commands\":[\"write -P 0x5a 0 1M\"]}"));
    cJSON *j = bvh_json(&H, "POST", 201, "/api/v1/jobs",
                        "{\"type\":\"backup\",\"device\":\"slow\",\"sync\":\"full\","
                        "\"target\":\"slow.full.qcow2\",\"speed\":4096}");
    cJSON_Delete(j);
    j = bvh_json(&H, "GET", 200, "/api/v1/jobs/slow", NULL);
    assert_string_equal(bvh_str(j, "status"), "running");
    cJSON_Delete(j);
    int before = wait_requests(1000, 0);
    bvh_kill9(&H);
    assert_int_equal(bvh_restart(&H), 0);
    assert_true(wait_requests(before, WAIT_S) > before);
    pthread_mutex_lock(&R.lock);
    struct req *q = &R.reqs[before];
    assert_string_equal(q->event, "job_failed");
    cJSON *p = cJSON_Parse(q->body);
    pthread_mutex_unlock(&R.lock);
    const cJSON *data = cJSON_GetObjectItem(p, "data");
    assert_string_equal(bvh_str(data, "job_id"), "slow");
    assert_string_equal(bvh_str(data, "device"), "slow");
    assert_string_equal(bvh_str(data, "type"), "backup");
    assert_string_equal(bvh_str(data, "error"), "interrupted by restart");
    cJSON_Delete(p);
    cJSON *d = wait_delivery("hook", "delivered", 1);
    cJSON_Delete(d);
}

/* The end of the policy run the clock move at `now` starts (POLICY_RUN other than "started"). */
static void policy_tick(struct bvh *h, long long now, long long *after)
{
    cJSON_Delete(bvh_json(h, "POST", 200, "/api/v1/test/clock", "{\"now\":%lld}", now));
    for (int i = 0; i < WAIT_S; i++) {
        char path[160];
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld&name=POLICY_RUN&wait=1", *after);
        cJSON *j = bvh_json(h, "GET", 200, path, NULL);
        bool ended = false;
        const cJSON *ev;
        cJSON_ArrayForEach(ev, cJSON_GetObjectItem(j, "events")) {
            *after = (long long)bvh_num(ev, "seq");
            if (strcmp(bvh_str(cJSON_GetObjectItem(ev, "data"), "status"), "started") != 0)
                ended = true;
        }
        cJSON_Delete(j);
        if (ended)
            return;
    }
    fail_msg("no policy run ended after the clock moved to %lld", now);
}

static int count_event(const char *event, int from)
{
    int n = 0;
    pthread_mutex_lock(&R.lock);
    for (int i = from; i < R.n; i++)
        if (strcmp(R.reqs[i].event, event) == 0)
            n++;
    pthread_mutex_unlock(&R.lock);
    return n;
}

/* A daily policy over a drive whose backups fail and one whose backups work:
 * three days on (the catch-up run fails for "bad") only "bad" is stale, told
 * once; the next day's run (still failing) is the same episode. */
static void test_protection_stale(void **state)
{
    (void)state;
    const long long t0 = 1900000000;
    struct bvh P = { 0 };
    static const char *args[] = { "--test-clock=1900000000", "--notify-retry-ms", "100", NULL };
    struct bvh_opts o = { .args = args };
    assert_int_equal(bvh_start(&P, &o), 0);
    set_mode(0, 0);
    int before = wait_requests(1000, 0);
    cJSON_Delete(bvh_json(&P, "POST", 201, "/api/v1/notifications",
                          "{\"name\":\"stale\",\"url\":\"%s\",\"events\":[\"protection_stale\"]}",
                          hook_url));
    cJSON_Delete(bvh_json(&P, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"bad\",\"format\":\"qcow2\",\"size\":\"1M\",\"blkdebug\":"
                          FAILING_BLKDEBUG "}"));
    cJSON_Delete(bvh_json(&P, "POST", 200, "/api/v1/drives/bad/io",
                          "{\"commands\":[\"write -P 0xab 0 64k\"]}"));
    cJSON_Delete(bvh_json(&P, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"good\",\"format\":\"qcow2\",\"size\":\"1M\"}"));
    cJSON_Delete(bvh_json(&P, "POST", 201, "/api/v1/policies",
                          "{\"name\":\"daily\",\"drives\":[\"bad\",\"good\"],"
                          "\"schedule\":\"0 3 * * *\",\"retention\":{\"keep_last\":5}}"));
    cJSON *j = bvh_json(&P, "GET", 200, "/api/v1/events?after=latest", NULL);
    long long after = (long long)bvh_num(j, "next");
    cJSON_Delete(j);

    policy_tick(&P, t0 + 3 * 86400, &after);
    assert_true(wait_requests(before, WAIT_S) > before);
    pthread_mutex_lock(&R.lock);
    struct req *q = &R.reqs[before];
    assert_string_equal(q->event, "protection_stale");
    cJSON *p = cJSON_Parse(q->body);
    pthread_mutex_unlock(&R.lock);
    const cJSON *data = cJSON_GetObjectItem(p, "data");
    assert_string_equal(bvh_str(data, "policy"), "daily");
    assert_string_equal(bvh_str(data, "drive"), "bad");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(data, "newest_backup_at")));
    assert_int_equal((long long)bvh_num(data, "interval_s"), 86400);
    assert_true(bvh_num(data, "age_s") > 2 * 86400);
    cJSON_Delete(p);

    /* a day later the run fails again: same episode, nothing new ("good" never stale) */
    policy_tick(&P, t0 + 4 * 86400, &after);
    policy_tick(&P, t0 + 5 * 86400, &after);   /* the scheduler has checked after run 2 */
    cJSON *d = wait_delivery_on(&P, "stale", "delivered", 1);
    cJSON_Delete(d);
    j = bvh_json(&P, "GET", 200, "/api/v1/notifications/stale", NULL);
    const cJSON *c = cJSON_GetObjectItem(j, "deliveries");
    assert_int_equal((int)(bvh_num(c, "pending") + bvh_num(c, "delivered") + bvh_num(c, "failed")),
                     1);
    cJSON_Delete(j);
    assert_int_equal(count_event("protection_stale", before), 1);
    bvh_stop(&P);
}

/* Notifications are changed by admin only: a reader and an operator get 403
 * on POST and DELETE, and read them (200, as every GET: the contract's
 * reader role), never seeing a secret; the admin token 200/201/204. */
static void test_roles(void **state)
{
    (void)state;
    char tokfile[] = "/tmp/bv-notify-token-XXXXXX";
    int fd = mkstemp(tokfile);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "adm1n-notify\n", 13), 13);
    close(fd);
    struct bvh T = { .token = "adm1n-notify" };
    static const char *args[] = { "--token-file", NULL, NULL };
    args[1] = tokfile;
    struct bvh_opts o = { .args = args };
    assert_int_equal(bvh_start(&T, &o), 0);
    cJSON_Delete(bvh_json(&T, "POST", 201, "/api/v1/notifications",
                          "{\"name\":\"n1\",\"url\":\"%s\",\"events\":[\"corruption\"]}", hook_url));
    char secrets[2][128];
    const char *roles[2] = { "reader", "operator" };
    for (int i = 0; i < 2; i++) {
        cJSON *j = bvh_json(&T, "POST", 201, "/api/v1/tokens",
                            "{\"name\":\"t%d\",\"role\":\"%s\"}", i, roles[i]);
        snprintf(secrets[i], sizeof(secrets[i]), "%s", bvh_str(j, "secret"));
        cJSON_Delete(j);
    }
    static const char *const reads[] = {
        "/api/v1/notifications", "/api/v1/notifications/n1",
        "/api/v1/notifications/n1/deliveries",
    };
    static const char *const calls[][3] = {
        { "DELETE", "/api/v1/notifications/n1", NULL },
        { "POST", "/api/v1/notifications",
          "{\"name\":\"n2\",\"url\":\"http://h/\",\"events\":[\"corruption\"]}" },
    };
    for (int i = 0; i < 2; i++) {
        struct bvh as = T;
        as.token = secrets[i];
        for (size_t k = 0; k < sizeof(reads) / sizeof(reads[0]); k++) {
            cJSON *j = bvh_json(&as, "GET", 200, reads[k], NULL);
            char *text = cJSON_PrintUnformatted(j);
            assert_null(strstr(text, "\"secret\""));
            free(text);
            cJSON_Delete(j);
        }
        for (size_t k = 0; k < sizeof(calls) / sizeof(calls[0]); k++) {
            struct bvh_resp r;
            const char *b = calls[k][2];
            assert_int_equal(bvh_request(&as, calls[k][0], calls[k][1], b, b ? strlen(b) : 0,
                                         NULL, NULL, &r), 0);
            bvh_assert_error(&r, 403, "Forbidden");
            bvh_resp_free(&r);
        }
    }
    cJSON_Delete(bvh_json(&T, "GET", 200, "/api/v1/notifications/n1/deliveries", NULL));
    cJSON_Delete(bvh_json(&T, "DELETE", 204, "/api/v1/notifications/n1", NULL));
    bvh_stop(&T);
    unlink(tokfile);
}

/* A daemon that sees 1000 free bytes: space_low at the threshold (once),
 * and a 507-refused backup (once per episode). */
static void test_space_low(void **state)
{
    (void)state;
    struct bvh S = { 0 };
    static const char *args[] = { "--notify-retry-ms", "100", NULL };
    struct bvh_opts o = { .args = args };
    setenv("BV_TEST_FREE_BYTES", "1000", 1);
    int rc = bvh_start(&S, &o);
    unsetenv("BV_TEST_FREE_BYTES");
    assert_int_equal(rc, 0);
    set_mode(0, 0);
    int before = wait_requests(1000, 0);
    cJSON_Delete(bvh_json(&S, "POST", 201, "/api/v1/notifications",
                          "{\"name\":\"space\",\"url\":\"%s\",\"events\":[\"space_low\"]}",
                          hook_url));
    assert_true(wait_requests(before, WAIT_S) > before);
    pthread_mutex_lock(&R.lock);
    struct req *q = &R.reqs[before];
    assert_string_equal(q->event, "space_low");
    assert_string_equal(q->sig, "");                       /* no secret: no signature */
    cJSON *p = cJSON_Parse(q->body);
    pthread_mutex_unlock(&R.lock);
    const cJSON *data = cJSON_GetObjectItem(p, "data");
    assert_string_equal(bvh_str(data, "cause"), "threshold");
    assert_int_equal((long long)bvh_num(data, "free"), 1000);
    assert_int_equal((int)bvh_num(data, "threshold_percent"), 10);
    assert_true(bvh_num(data, "total") > 1000);
    cJSON_Delete(p);

    cJSON_Delete(bvh_json(&S, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"s0\",\"format\":\"qcow2\",\"size\":\"1M\"}"));
    for (int i = 0; i < 2; i++) {
        struct bvh_resp r;
        const char *body = "{\"kind\":\"full\"}";
        assert_int_equal(bvh_request(&S, "POST", "/api/v1/drives/s0/backups", body,
                                     strlen(body), NULL, NULL, &r), 0);
        assert_int_equal(r.status, 507);
        bvh_resp_free(&r);
        if (i == 0)
            assert_true(wait_requests(before + 1, WAIT_S) > before + 1);
    }
    pthread_mutex_lock(&R.lock);
    q = &R.reqs[before + 1];
    assert_string_equal(q->event, "space_low");
    p = cJSON_Parse(q->body);
    pthread_mutex_unlock(&R.lock);
    data = cJSON_GetObjectItem(p, "data");
    assert_string_equal(bvh_str(data, "cause"), "refused");
    assert_int_equal((long long)bvh_num(data, "free"), 1000);
    assert_true(bvh_num(data, "need") > 1000);
    cJSON_Delete(p);
    /* the second refusal is the same episode: the log holds two, both delivered */
    cJSON *j = bvh_json(&S, "GET", 200, "/api/v1/notifications/space/deliveries", NULL);
    const cJSON *arr = cJSON_GetObjectItem(j, "deliveries");
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    cJSON_Delete(j);
    bvh_stop(&S);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_job_failed_signed_and_retried),
        cmocka_unit_test(test_pending_survives_restart),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_interrupted_job),
        cmocka_unit_test(test_failed_after_attempts),
        cmocka_unit_test(test_space_low),
        cmocka_unit_test(test_protection_stale),
        cmocka_unit_test(test_roles),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
