/* The daemon's base: health, error envelope, routing, auth, start-up rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static int setup(void **state)
{
    static struct bvh h;
    if (bvh_start(&h, NULL) < 0)
        return -1;
    *state = &h;
    return 0;
}

static int teardown(void **state)
{
    struct bvh *h = *state;
    assert_int_equal(bvh_stop(h), 0);     /* SIGTERM gives a clean exit 0 */
    return 0;
}

static void test_health(void **state)
{
    struct bvh *h = *state;
    cJSON *j = bvh_json(h, "GET", 200, "/api/v1/health", NULL);
    assert_string_equal(bvh_str(j, "status"), "ok");
    assert_true(strlen(bvh_str(j, "version")) > 0);
    assert_true(bvh_num(j, "uptime_s") >= 0);
    assert_int_equal(cJSON_GetArraySize(j), 3);
    cJSON_Delete(j);
}

static void test_unknown_route_is_404(void **state)
{
    struct bvh *h = *state;
    struct bvh_resp r;
    assert_int_equal(bvh_request(h, "GET", "/api/v1/no-such-thing", NULL, 0, NULL, NULL, &r), 0);
    bvh_assert_error(&r, 404, "NotFound");
    bvh_resp_free(&r);
    assert_int_equal(bvh_request(h, "DELETE", "/api/v1/health", NULL, 0, NULL, NULL, &r), 0);
    bvh_assert_error(&r, 405, "GenericError");
    bvh_resp_free(&r);
}

static void test_ui_is_served(void **state)
{
    struct bvh *h = *state;
    struct bvh_resp r;
    assert_int_equal(bvh_request(h, "GET", "/", NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "Blockvault"));
    bvh_resp_free(&r);
    assert_int_equal(bvh_request(h, "GET", "/../CMakeLists.txt", NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    bvh_resp_free(&r);
}

static void test_events_empty_and_latest(void **state)
{
    struct bvh *h = *state;
    cJSON *j = bvh_json(h, "GET", 200, "/api/v1/events?after=latest", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "events")), 0);
    double head = bvh_num(j, "next");
    cJSON_Delete(j);
    j = bvh_json(h, "GET", 200, "/api/v1/events?after=0&wait=0.2", NULL);
    assert_true(bvh_num(j, "next") >= 0 && bvh_num(j, "next") <= head);
    cJSON_Delete(j);
    struct bvh_resp r;
    assert_int_equal(bvh_request(h, "GET", "/api/v1/events?wait=61", NULL, 0, NULL, NULL, &r), 0);
    bvh_assert_error(&r, 400, "GenericError");
    bvh_resp_free(&r);
}

static void test_token_required_when_configured(void **state)
{
    (void)state;
    char tokfile[] = "/tmp/bv-token-XXXXXX";
    int fd = mkstemp(tokfile);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cret-token\n", 13), 13);
    close(fd);
    struct bvh h = { 0 };
    struct bvh_opts o = { .token_file = tokfile };
    assert_int_equal(bvh_start(&h, &o), 0);

    struct bvh_resp r;
    assert_int_equal(bvh_request(&h, "GET", "/api/v1/health", NULL, 0, NULL, NULL, &r), 0);
    bvh_assert_error(&r, 401, "AuthenticationError");
    bvh_resp_free(&r);
    const char *bad[] = { "Authorization: Bearer wrong", NULL };
    assert_int_equal(bvh_request(&h, "GET", "/api/v1/health", NULL, 0, NULL, bad, &r), 0);
    bvh_assert_error(&r, 401, "AuthenticationError");
    bvh_resp_free(&r);

    h.token = "s3cret-token";
    cJSON *j = bvh_json(&h, "GET", 200, "/api/v1/health", NULL);
    assert_string_equal(bvh_str(j, "status"), "ok");
    cJSON_Delete(j);
    assert_int_equal(bvh_stop(&h), 0);
    unlink(tokfile);
}

/* Listening beyond loopback without a token must refuse to start. */
static void test_non_loopback_needs_token(void **state)
{
    (void)state;
    char dir[] = "/tmp/bv-nl-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int rc = bvh_sh("env -u BLOCKVAULT_TOKEN '%s' serve --listen 0.0.0.0:0 --data '%s' "
                    ">'%s/out' 2>'%s/err'", getenv("BV_DAEMON"), dir, dir, dir);
    assert_int_equal(rc, 2);
    assert_int_equal(bvh_sh("grep -q 'refusing to listen on non-loopback address 0.0.0.0 "
                            "without a token' '%s/err'", dir), 0);
    assert_int_equal(bvh_sh("grep -q listening '%s/out'", dir), 1);
    bvh_sh("rm -rf '%s'", dir);
}

int main(void)
{
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_unknown_route_is_404),
        cmocka_unit_test(test_ui_is_served),
        cmocka_unit_test(test_events_empty_and_latest),
    };
    const struct CMUnitTest own[] = {
        cmocka_unit_test(test_token_required_when_configured),
        cmocka_unit_test(test_non_loopback_needs_token),
    };
    int fails = cmocka_run_group_tests_name("foundation", shared, setup, teardown);
    fails += cmocka_run_group_tests_name("startup", own, NULL, NULL);
    return fails ? 1 : 0;
}
