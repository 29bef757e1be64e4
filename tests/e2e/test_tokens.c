/*
 * Scoped tokens: the configured token is admin; POST /tokens hands out a
 * secret once (GET /tokens never shows one); a reader gets 200 on GETs and
 * 403 on a POST; an operator can start a backup but not delete a drive; an
 * expired token (by the test clock) and a deleted one are 401; tokens survive
 * a restart; bad bodies are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "jobs_util.h"

#define ADMIN "adm1n-s3cret"
#define T0 1900000000LL

static struct bvh H;
static char tokfile[] = "/tmp/bv-tokens-XXXXXX";

static int setup(void **state)
{
    (void)state;
    int fd = mkstemp(tokfile);
    if (fd < 0 || write(fd, ADMIN "\n", sizeof(ADMIN)) != (ssize_t)sizeof(ADMIN))
        return -1;
    close(fd);
    /* the token file as an argument, so that bvh_restart passes it again */
    static const char *args[] = { "--test-clock=1900000000", "--token-file", NULL, NULL };
    args[2] = tokfile;
    H.token = ADMIN;
    struct bvh_opts o = { .args = args };
    return bvh_start(&H, &o);
}

static int teardown(void **state)
{
    (void)state;
    bvh_stop(&H);
    unlink(tokfile);
    return 0;
}

/* H with another bearer token (NULL: none). */
static struct bvh as(const char *token)
{
    struct bvh h = H;
    h.token = token;
    return h;
}

static void expect(const char *token, long status, const char *cls, const char *method,
                   const char *path, const char *body)
{
    struct bvh h = as(token);
    struct bvh_resp r;
    assert_int_equal(bvh_request(&h, method, path, body, body ? strlen(body) : 0, NULL, NULL,
                                 &r), 0);
    if (r.status != status)
        print_message("%s %s: %ld %s\n", method, path, r.status, r.body ? r.body : "");
    if (cls)
        bvh_assert_error(&r, status, cls);
    else
        assert_int_equal(r.status, status);
    bvh_resp_free(&r);
}

/* POST /tokens as admin; the secret into secret. */
static void make_token(const char *name, const char *role, const char *expires,
                       char secret[128])
{
    char extra[96] = "";
    if (expires)
        snprintf(extra, sizeof(extra), ",\"expires_at\":\"%s\"", expires);
    cJSON *j = bvh_json(&H, "POST", 201, "/api/v1/tokens", "{\"name\":\"%s\",\"role\":\"%s\"%s}",
                        name, role, extra);
    assert_string_equal(bvh_str(j, "name"), name);
    assert_string_equal(bvh_str(j, "role"), role);
    const char *s = bvh_str(j, "secret");
    assert_int_equal(strncmp(s, "bvt_", 4), 0);
    assert_int_equal(strlen(s), 68);
    snprintf(secret, 128, "%s", s);
    cJSON_Delete(j);
}

static void rfc3339(long long t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void test_roles(void **state)
{
    (void)state;
    char reader[128], oper[128], temp[128], later[32], past[32];
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":\"1M\"}"));
    make_token("dash", "reader", NULL, reader);
    make_token("ops", "operator", NULL, oper);
    rfc3339(T0 + 3600, later);
    make_token("temp", "reader", later, temp);

    /* the list: names and roles, no secret anywhere */
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/tokens", NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    const cJSON *list = cJSON_GetObjectItem(r.json, "tokens");
    assert_int_equal(cJSON_GetArraySize(list), 3);
    const cJSON *t;
    cJSON_ArrayForEach(t, list) {
        assert_null(cJSON_GetObjectItem(t, "secret"));
        assert_non_null(cJSON_GetObjectItem(t, "role"));
    }
    assert_string_equal(bvh_str(cJSON_GetArrayItem(list, 1), "role"), "operator");
    assert_string_equal(bvh_str(cJSON_GetArrayItem(list, 2), "expires_at"), later);
    assert_null(strstr(r.body, reader + 4));
    assert_null(strstr(r.body, oper + 4));
    assert_null(strstr(r.body, temp + 4));
    assert_null(strstr(r.body, "bvt_"));
    bvh_resp_free(&r);

    /* reader: GETs, events and metrics; nothing that changes anything */
    expect(reader, 200, NULL, "GET", "/api/v1/drives", NULL);
    expect(reader, 200, NULL, "GET", "/api/v1/drives/d0", NULL);
    expect(reader, 200, NULL, "GET", "/api/v1/events", NULL);
    expect(reader, 200, NULL, "GET", "/metrics", NULL);
    expect(reader, 403, "Forbidden", "POST", "/api/v1/drives",
           "{\"id\":\"d1\",\"format\":\"qcow2\",\"size\":\"1M\"}");
    expect(reader, 403, "Forbidden", "POST", "/api/v1/drives/d0/backups", "{\"kind\":\"full\"}");
    expect(reader, 403, "Forbidden", "GET", "/api/v1/tokens", NULL);
    expect(reader, 403, "Forbidden", "DELETE", "/api/v1/tokens/ops", NULL);
    expect(reader, 404, "NotFound", "GET", "/api/v1/nothing-here", NULL);
    expect(NULL, 401, "AuthenticationError", "GET", "/api/v1/nothing-here", NULL);
    expect("bvt_0000", 401, "AuthenticationError", "GET", "/api/v1/drives", NULL);

    /* operator: a backup yes, deleting a drive or making tokens no */
    struct ju_events ev;
    ju_events_init(&ev, &H, 0);
    struct bvh ho = as(oper);
    cJSON *j = bvh_json(&ho, "POST", 201, "/api/v1/drives/d0/backups", "{\"kind\":\"full\"}");
    const char *job = bvh_str(cJSON_GetObjectItem(j, "job"), "id");
    cJSON *done = ju_event_wait(&ev, "BLOCK_JOB_COMPLETED", "device", job, 60);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(done, "data"), "error"));
    cJSON_Delete(done);
    cJSON_Delete(j);
    ju_events_free(&ev);
    expect(oper, 403, "Forbidden", "DELETE", "/api/v1/drives/d0", NULL);
    expect(oper, 403, "Forbidden", "POST", "/api/v1/tokens",
           "{\"name\":\"x\",\"role\":\"admin\"}");
    expect(oper, 200, NULL, "GET", "/api/v1/drives/d0/backups", NULL);

    /* expiry by the service's clock */
    expect(temp, 200, NULL, "GET", "/api/v1/health", NULL);
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/test/clock", "{\"now\":%lld}", T0 + 7200));
    struct bvh ht = as(temp);
    assert_int_equal(bvh_request(&ht, "GET", "/api/v1/health", NULL, 0, NULL, NULL, &r), 0);
    bvh_assert_error(&r, 401, "AuthenticationError");
    assert_string_equal(bvh_str(cJSON_GetObjectItem(r.json, "error"), "desc"),
                        "the token has expired");
    bvh_resp_free(&r);

    /* refusals */
    rfc3339(T0, past);
    expect(ADMIN, 400, "GenericError", "POST", "/api/v1/tokens",
           "{\"name\":\"y\",\"role\":\"root\"}");
    char body[160];
    snprintf(body, sizeof(body), "{\"name\":\"y\",\"role\":\"reader\",\"expires_at\":\"%s\"}", past);
    expect(ADMIN, 400, "GenericError", "POST", "/api/v1/tokens", body);
    expect(ADMIN, 400, "GenericError", "POST", "/api/v1/tokens",
           "{\"name\":\"y\",\"role\":\"reader\",\"expires_at\":\"tomorrow\"}");
    expect(ADMIN, 400, "GenericError", "POST", "/api/v1/tokens",
           "{\"name\":\"a b\",\"role\":\"reader\"}");
    expect(ADMIN, 400, "GenericError", "POST", "/api/v1/tokens",
           "{\"name\":\"y\",\"role\":\"reader\",\"secret\":\"mine\"}");
    expect(ADMIN, 409, "GenericError", "POST", "/api/v1/tokens",
           "{\"name\":\"ops\",\"role\":\"reader\"}");

    /* kept across a restart; deleted is gone */
    assert_int_equal(bvh_restart(&H), 0);
    expect(oper, 200, NULL, "GET", "/api/v1/drives", NULL);
    expect(ADMIN, 204, NULL, "DELETE", "/api/v1/tokens/dash", NULL);
    expect(reader, 401, "AuthenticationError", "GET", "/api/v1/drives", NULL);
    expect(ADMIN, 404, "NotFound", "DELETE", "/api/v1/tokens/dash", NULL);
    /* an admin token made over the API is admin */
    char adm2[128];
    make_token("second-admin", "admin", NULL, adm2);
    expect(adm2, 204, NULL, "DELETE", "/api/v1/tokens/ops", NULL);
    expect(oper, 401, "AuthenticationError", "GET", "/api/v1/drives", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
