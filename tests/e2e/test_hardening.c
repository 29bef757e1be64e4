/*
 * test_hardening: the defects an attack on the REST API found (issue 9,
 * 3-8), each as a scenario that failed before its fix: io requests checked
 * whole before a byte moves, per-request caps and stopping when the client
 * goes, blank tokens refused, auth decided on the headers (before routing
 * and before any body), connection slots that hostile sockets cannot
 * exhaust, strict strings in bodies and URLs, and I/O statuses.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <poll.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define TOKEN "hard-s3cret"
#define HOSTILE 500

static struct bvh H;        /* no token */
static struct bvh T;        /* with TOKEN */
static char token_file[300];

static int setup(void **state)
{
    (void)state;
    if (bvh_start(&H, NULL) < 0)
        return -1;
    snprintf(token_file, sizeof(token_file), "%s/token", H.dir);
    FILE *f = fopen(token_file, "w");
    if (!f)
        return -1;
    fprintf(f, "  %s\n", TOKEN);
    fclose(f);
    struct bvh_opts o = { .token_file = token_file };
    T.token = TOKEN;
    return bvh_start(&T, &o);
}

static int teardown(void **state)
{
    (void)state;
    bvh_stop(&T);
    bvh_stop(&H);
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int connect_to(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Send text, read what comes back within 5 s; returns the status or -1. */
static int raw_status(unsigned port, const char *text, bool close_after_send)
{
    int fd = connect_to(port);
    if (fd < 0)
        return -1;
    char buf[1024];
    int status = -1;
    if (send(fd, text, strlen(text), MSG_NOSIGNAL) == (ssize_t)strlen(text)) {
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n > 12) {
            buf[n] = '\0';
            status = atoi(buf + 9);
        }
    }
    (void)close_after_send;
    close(fd);
    return status;
}

static cJSON *io(struct bvh *h, const char *drive, long status, const char *cmds)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    return bvh_json(h, "POST", status, path, "{\"commands\":%s}", cmds);
}

static void read_bytes(struct bvh *h, const char *drive, uint64_t off, size_t len,
                       unsigned char *out)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/data?offset=%llu&length=%zu", drive,
             (unsigned long long)off, len);
    struct bvh_resp r;
    assert_int_equal(bvh_request(h, "GET", path, NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, len);
    memcpy(out, r.body, len);
    bvh_resp_free(&r);
}

static bool all(const unsigned char *p, size_t n, unsigned char v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return false;
    return true;
}

/* 3: a write past the end used to overwrite the drive chunk by chunk and
 * then fail; now nothing is written and the error names the request. */
static void test_io_past_end_writes_nothing(void **state)
{
    (void)state;
    static const char *const formats[] = { "raw", "qcow2" };
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof(id), "pe%d", i);
        cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                              "{\"id\":\"%s\",\"format\":\"%s\",\"size\":\"64M\"}", id, formats[i]));
        cJSON_Delete(io(&H, id, 200, "[\"write -P 0x5a 0 64M\"]"));
        static const char *const bad[] = { "write -P 0x1 0 1G", "write -z 60M 8M",
                                           "discard 32M 33M" };
        static const char *const want[] = {
            "Input/output error: write offset=0 bytes=1073741824 is past the end of the image "
            "(67108864 bytes)",
            "Input/output error: write offset=62914560 bytes=8388608 is past the end of the "
            "image (67108864 bytes)",
            "Input/output error: discard offset=33554432 bytes=34603008 is past the end of the "
            "image (67108864 bytes)",
        };
        for (int k = 0; k < 3; k++) {
            char cmds[64];
            snprintf(cmds, sizeof(cmds), "[\"%s\"]", bad[k]);
            cJSON *j = io(&H, id, 200, cmds);
            const cJSON *res = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
            assert_false(bvh_bool(res, "ok"));
            assert_string_equal(bvh_str(res, "error"), want[k]);
            cJSON_Delete(j);
        }
        static unsigned char buf[1 << 20];
        for (uint64_t off = 0; off < (64u << 20); off += 8u << 20) {
            read_bytes(&H, id, off, sizeof(buf), buf);
            if (!all(buf, sizeof(buf), 0x5a))
                fail_msg("%s drive changed at %llu by a refused request", formats[i],
                         (unsigned long long)off);
        }
    }
}

/* 6: one request moves at most 4 GiB, checked before the first command. */
static void test_io_request_cap(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"cap\",\"format\":\"raw\",\"size\":\"1G\"}"));
    struct bvh_resp r;
    const char *body = "{\"commands\":[\"write -P 7 0 4k\",\"read 0 1G\",\"read 0 1G\","
                       "\"read 0 1G\",\"read 0 1G\",\"read 0 1G\"]}";
    assert_int_equal(bvh_request(&H, "POST", "/api/v1/drives/cap/io", body, strlen(body), NULL,
                                 NULL, &r), 0);
    bvh_assert_error(&r, 413, "GenericError");
    assert_string_equal(bvh_str(cJSON_GetObjectItem(r.json, "error"), "desc"),
                        "the commands of one request may move at most 4294967296 bytes "
                        "(command 5 passes it)");
    bvh_resp_free(&r);
    unsigned char b[16];
    read_bytes(&H, "cap", 0, sizeof(b), b);
    assert_true(all(b, sizeof(b), 0));           /* the first command did not run either */
}

static int byte_at(struct bvh *h, const char *drive, uint64_t off)
{
    unsigned char b;
    read_bytes(h, drive, off, 1, &b);
    return b;
}

/* 6: a client that disconnects stops its io request (between chunks). */
static void test_io_stops_on_disconnect(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"dc\",\"format\":\"raw\",\"size\":\"256M\"}"));
    char body[1024] = "{\"commands\":[";
    for (int i = 1; i <= 16; i++)
        snprintf(body + strlen(body), sizeof(body) - strlen(body), "%s\"write -P %d 0 256M\"",
                 i > 1 ? "," : "", i);
    strcat(body, "]}");
    char req[1400];
    snprintf(req, sizeof(req), "POST /api/v1/drives/dc/io HTTP/1.1\r\nHost: x\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    int fd = connect_to(H.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    double t0 = now_s();
    while (byte_at(&H, "dc", 0) == 0 && now_s() - t0 < 20)
        ;                                            /* wait until the first write started */
    close(fd);
    /* without the fix the 16 writes run to the end (4 GiB); with it they stop
     * within the chunk in flight */
    int seen = 0;
    for (double t1 = now_s(); now_s() - t1 < 3;) {
        int v = byte_at(&H, "dc", 0);
        seen = v > seen ? v : seen;
    }
    if (seen > 2)
        fail_msg("pattern %d written after the client went away", seen);
    assert_true(seen >= 1);
}

/* 4: a blank token from the environment refuses start-up, even on loopback. */
static void test_blank_token_refused(void **state)
{
    (void)state;
    const char *daemon = getenv("BV_DAEMON");
    assert_non_null(daemon);
    /* bounded: a daemon that accepts the blank token serves until killed (124) */
    assert_int_equal(bvh_sh("BLOCKVAULT_TOKEN='   ' timeout 20 %s serve --listen 0.0.0.0:0 "
                            "--data %s/blank >%s/blank.out 2>&1", daemon, H.dir, H.dir), 2);
    assert_int_equal(bvh_sh("grep -q 'BLOCKVAULT_TOKEN is set but empty or blank' %s/blank.out",
                            H.dir), 0);
    assert_int_equal(bvh_sh("BLOCKVAULT_TOKEN='' timeout 20 %s serve --listen 127.0.0.1:0 "
                            "--data %s/blank >/dev/null 2>&1", daemon, H.dir), 2);
}

/* 8 and 5: auth comes first -- unknown paths and wrong methods under /api
 * are 401 without the token; an empty bearer never passes. */
static void test_auth_before_routing(void **state)
{
    (void)state;
    static const struct { const char *method, *path; long with_token; } cases[] = {
        { "GET", "/api/v1/nosuch", 404 },
        { "DELETE", "/api/v1/health", 405 },
        { "GET", "/api/nosuch", 404 },
        { "GET", "/api/v1/health", 200 },
        { "GET", "/metrics", 200 },
    };
    const char *const empty_bearer[] = { "Authorization: Bearer ", NULL };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bvh_resp r;
        T.token = NULL;
        assert_int_equal(bvh_request(&T, cases[i].method, cases[i].path, NULL, 0, NULL, NULL, &r), 0);
        bvh_assert_error(&r, 401, "AuthenticationError");
        bvh_resp_free(&r);
        assert_int_equal(bvh_request(&T, cases[i].method, cases[i].path, NULL, 0, NULL,
                                     empty_bearer, &r), 0);
        bvh_assert_error(&r, 401, "AuthenticationError");
        bvh_resp_free(&r);
        T.token = TOKEN;
        assert_int_equal(bvh_request(&T, cases[i].method, cases[i].path, NULL, 0, NULL, NULL, &r), 0);
        assert_int_equal(r.status, cases[i].with_token);
        bvh_resp_free(&r);
    }
    /* the UI's static files stay public */
    struct bvh_resp r;
    T.token = NULL;
    assert_int_equal(bvh_request(&T, "GET", "/", NULL, 0, NULL, NULL, &r), 0);
    assert_int_not_equal(r.status, 401);
    bvh_resp_free(&r);
    T.token = TOKEN;
}

/* 5: a refused request is answered on its headers: its body is never
 * waited for nor buffered (before, the server read 60 MiB first). */
static void test_unauthenticated_body_not_read(void **state)
{
    (void)state;
    const char *hdr = "PUT /api/v1/drives/d0/data?offset=0 HTTP/1.1\r\nHost: x\r\n"
                      "Content-Type: application/octet-stream\r\nContent-Length: 62914560\r\n\r\n";
    assert_int_equal(raw_status(T.port, hdr, false), 401);
    const char *big = "POST /api/v1/drives HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                      "\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n";
    assert_int_equal(raw_status(T.port, big, false), 413);
}

/* 5: HOSTILE sockets that never finish their headers do not lock out
 * health checks nor an authenticated upload. */
static void test_hostile_sockets_leave_headroom(void **state)
{
    (void)state;
    T.token = TOKEN;               /* whatever an earlier failed test left */
    cJSON_Delete(bvh_json(&T, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"hs\",\"format\":\"raw\",\"size\":\"1M\"}"));
    static int fds[HOSTILE];
    int opened = 0;
    for (int i = 0; i < HOSTILE; i++) {
        fds[i] = connect_to(T.port);
        if (fds[i] >= 0) {
            send(fds[i], "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n", 38, MSG_NOSIGNAL);
            opened++;
        }
    }
    assert_int_equal(opened, HOSTILE);
    double t0 = now_s();
    struct bvh_resp r;
    assert_int_equal(bvh_request(&T, "GET", "/api/v1/health", NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    bvh_resp_free(&r);
    static char data[64 << 10];
    memset(data, 0x42, sizeof(data));
    assert_int_equal(bvh_request(&T, "PUT", "/api/v1/drives/hs/data?offset=0", data, sizeof(data),
                                 "application/octet-stream", NULL, &r), 0);
    assert_int_equal(r.status, 204);
    bvh_resp_free(&r);
    double took = now_s() - t0;
    print_message("health + 64 KiB PUT with %d hostile sockets open: %.3f s\n", HOSTILE, took);
    assert_true(took < 3.0);
    for (int i = 0; i < HOSTILE; i++)
        close(fds[i]);
}

/* A local IPv4 address that is not loopback, or false. */
static bool local_non_loopback(struct in_addr *out)
{
    struct ifaddrs *ifs, *i;
    bool found = false;
    if (getifaddrs(&ifs) < 0)
        return false;
    for (i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        *out = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        found = (ntohl(out->s_addr) >> 24) != 127;
    }
    freeifaddrs(ifs);
    return found;
}

/* 5: one non-loopback address holds at most 64 connections; the ones past
 * that are closed at accept, and loopback clients still get through. */
static void test_per_address_cap(void **state)
{
    (void)state;
    enum { EXTRA = 8, N = 64 + EXTRA };
    struct in_addr ip;
    if (!local_non_loopback(&ip)) {
        print_message("no non-loopback IPv4 address on this machine\n");
        skip();
    }
    struct bvh W = { .token = TOKEN };
    static const char *const tls[] = { "--tls-self-signed", NULL };
    struct bvh_opts o = { .token_file = token_file, .listen = "0.0.0.0:0", .args = tls };
    assert_int_equal(bvh_start(&W, &o), 0);
    struct pollfd p[N];
    for (int i = 0; i < N; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)W.port),
                                 .sin_addr = ip };
        assert_true(fd >= 0);
        /* silent: a TLS handshake that never starts holds the slot like headers that
         * never end */
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        p[i] = (struct pollfd){ .fd = fd, .events = POLLIN | POLLRDHUP };
    }
    /* loopback is not capped by that address's share */
    struct bvh_resp r;
    assert_int_equal(bvh_request(&W, "GET", "/api/v1/health", NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    bvh_resp_free(&r);
    int closed = 0;
    for (double t0 = now_s(); closed < EXTRA && now_s() - t0 < 5;) {
        closed = 0;
        assert_true(poll(p, N, 200) >= 0);
        for (int i = 0; i < N; i++)
            closed += (p[i].revents & (POLLIN | POLLRDHUP | POLLHUP)) != 0;
    }
    assert_int_equal(closed, EXTRA);
    assert_true(poll(p, N, 300) >= 0);       /* and no more than those */
    closed = 0;
    for (int i = 0; i < N; i++)
        closed += (p[i].revents & (POLLIN | POLLRDHUP | POLLHUP)) != 0;
    assert_int_equal(closed, EXTRA);
    for (int i = 0; i < N; i++)
        close(p[i].fd);
    bvh_stop(&W);
}

/* 7: strings that used to be truncated, echoed as invalid JSON or guessed,
 * and query parameters that used to be ignored. */
static void test_strings_refused(void **state)
{
    (void)state;
    static const struct { const char *method, *path, *body, *desc; } cases[] = {
        { "POST", "/api/v1/images", "{\"file\":\"x\\u0000.qcow2\",\"format\":\"qcow2\",\"size\":\"1M\"}",
          "JSON strings must not contain NUL (\\u0000, at byte 10)" },
        { "POST", "/api/v1/images", "{\"file\":\"x\xff.qcow2\",\"format\":\"qcow2\",\"size\":\"1M\"}",
          "request body is not valid UTF-8 (at byte 10)" },
        { "POST", "/api/v1/images", "{\"file\":\"a.qcow2\",\"file\":\"b.qcow2\",\"format\":\"qcow2\","
          "\"size\":\"1M\"}", "duplicate key 'file' in a JSON object" },
        { "GET", "/api/v1/images/x%00.qcow2", NULL, "the URL contains an encoded NUL byte (%00)" },
        { "GET", "/api/v1/images/x%ff.qcow2", NULL, "the URL path is not valid UTF-8" },
        { "GET", "/api/v1/events?name=%c3%28", NULL, "query parameter 'name' is not valid UTF-8" },
        { "PUT", "/api/v1/drives/pe0/data?offset=0&flush=maybe", "x",
          "query parameter 'flush' must be true or false, got 'maybe'" },
        /* queries are strict like bodies: names each route lists, once, with a value */
        { "GET", "/api/v1/events?after=0&afterr=1", NULL,
          "query parameter 'afterr' is unexpected (this call takes: after, wait, name, limit)" },
        { "GET", "/api/v1/health?verbose=1", NULL,
          "query parameter 'verbose' is unexpected (this call takes: none)" },
        { "PUT", "/api/v1/drives/pe0/data?offset=0&Flush=true", "y",
          "query parameter 'Flush' is unexpected (this call takes: offset, flush)" },
        { "DELETE", "/api/v1/drives/pe0?delete_file=false&delete_file=true", NULL,
          "query parameter 'delete_file' is given more than once" },
        { "PUT", "/api/v1/drives/pe0/data?offset=0&flush", "y",
          "query parameter 'flush' needs a value ('flush=...')" },
        { "GET", "/api/v1/drives/pe0/data?offset=0&&length=1", NULL,
          "the query contains a parameter without a name ('&&' or '&=')" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bvh_resp r;
        const char *b = cases[i].body;
        assert_int_equal(bvh_request(&H, cases[i].method, cases[i].path, b, b ? strlen(b) : 0,
                                     b && b[0] != '{' ? "application/octet-stream" : NULL, NULL,
                                     &r), 0);
        bvh_assert_error(&r, 400, "GenericError");
        const char *desc = bvh_str(cJSON_GetObjectItem(r.json, "error"), "desc");
        if (strcmp(desc, cases[i].desc) != 0)
            fail_msg("%s %s: got '%s', want '%s'", cases[i].method, cases[i].path, desc,
                     cases[i].desc);
        bvh_resp_free(&r);
    }
    /* the refused PUTs wrote nothing; the refused DELETE kept the drive */
    unsigned char first;
    read_bytes(&H, "pe0", 0, 1, &first);
    assert_int_not_equal(first, 'y');
    /* nothing was created under a truncated name */
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/images/x", NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    bvh_resp_free(&r);
    /* flush=true and flush=false still work */
    assert_int_equal(bvh_request(&H, "PUT", "/api/v1/drives/pe0/data?offset=0&flush=true", "x", 1,
                                 "application/octet-stream", NULL, &r), 0);
    assert_int_equal(r.status, 204);
    bvh_resp_free(&r);
}

/* 8: a blkverify mismatch on GET …/data is an I/O error (500 IOError, the
 * contract's row), not an internal fault, and names its report. */
static void test_blkverify_mismatch_status(void **state)
{
    (void)state;
    bvh_blkverify_mismatch_drive(&H, "bv", "bvtest.qcow2", "bvref.raw");
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/drives/bv/data?offset=0&length=512", NULL, 0,
                                 NULL, NULL, &r), 0);
    assert_int_equal(r.status, 500);
    const cJSON *e = cJSON_GetObjectItem(r.json, "error");
    assert_string_equal(bvh_str(e, "class"), "IOError");
    assert_string_equal(bvh_str(e, "desc"),
                        "blkverify: read offset=0 bytes=512 contents mismatch in sector 0");
    char rid[96];
    snprintf(rid, sizeof(rid), "/api/v1/reports/%s", bvh_str(e, "report_id"));
    bvh_resp_free(&r);
    cJSON *rep = bvh_json(&H, "GET", 200, rid, NULL);
    assert_string_equal(bvh_str(rep, "drive"), "bv");
    assert_string_equal(bvh_str(rep, "kind"), "blkverify");
    cJSON_Delete(rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_past_end_writes_nothing),
        cmocka_unit_test(test_io_request_cap),
        cmocka_unit_test(test_io_stops_on_disconnect),
        cmocka_unit_test(test_blank_token_refused),
        cmocka_unit_test(test_auth_before_routing),
        cmocka_unit_test(test_unauthenticated_body_not_read),
        cmocka_unit_test(test_hostile_sockets_leave_headroom),
        cmocka_unit_test(test_per_address_cap),
        cmocka_unit_test(test_strings_refused),
        cmocka_unit_test(test_blkverify_mismatch_status),
    };
    return cmocka_run_group_tests_name("hardening", tests, setup, teardown);
}
