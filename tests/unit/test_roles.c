/*
 * Token roles in the route table (model/roles.h, router.h): the default a
 * route gets from its method, the service's table as the contract lists it
 * (no mutation is open to readers; the operator's calls are exactly the
 * job-starting and job-stopping ones), the role names, and the RFC 3339
 * times a token's expires_at accepts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/router.h"
#include "model/roles.h"
#include "runtime/tokens.h"

static void h(struct bv_request *q, struct bv_reply *r) { (void)q; (void)r; }

static void test_defaults(void **state)
{
    (void)state;
    const struct bv_route get = { "GET", "/x", h, 0 };
    const struct bv_route post = { "POST", "/x", h, 0 };
    const struct bv_route del = { "DELETE", "/x", h, 0 };
    const struct bv_route put = { "PUT", "/x", h, 0 };
    const struct bv_route guarded = { "GET", "/x", h, 0, .role = BV_ROLE_ADMIN };
    const struct bv_route opened = { "POST", "/x", h, 0, .role = BV_ROLE_OPERATOR };
    assert_int_equal(bv_route_role(&get), BV_ROLE_READER);
    assert_int_equal(bv_route_role(&post), BV_ROLE_ADMIN);
    assert_int_equal(bv_route_role(&del), BV_ROLE_ADMIN);
    assert_int_equal(bv_route_role(&put), BV_ROLE_ADMIN);
    assert_int_equal(bv_route_role(&guarded), BV_ROLE_ADMIN);
    assert_int_equal(bv_route_role(&opened), BV_ROLE_OPERATOR);
}

static const struct bv_route *find(const char *method, const char *pattern)
{
    for (size_t i = 0; i < bv_nroutes; i++)
        if (strcmp(bv_routes[i].method, method) == 0 && strcmp(bv_routes[i].pattern, pattern) == 0)
            return &bv_routes[i];
    fail_msg("no route %s %s", method, pattern);
    return NULL;
}

static void test_service_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < bv_nroutes; i++) {
        const struct bv_route *r = &bv_routes[i];
        enum bv_role role = bv_route_role(r);
        assert_true(role >= BV_ROLE_READER && role <= BV_ROLE_ADMIN);
        if (strcmp(r->method, "GET") != 0 && role < BV_ROLE_OPERATOR)
            fail_msg("%s %s is open to readers", r->method, r->pattern);
    }
    static const char *const operator_calls[][2] = {
        { "POST", "/api/v1/drives/{id}/backups" },
        { "POST", "/api/v1/backups/{bid}/restore" },
        { "POST", "/api/v1/jobs" },
        { "POST", "/api/v1/jobs/{jid}/cancel" },
        { "POST", "/api/v1/transactions" },
        { "POST", "/api/v1/policies/{name}/run" },
    };
    for (size_t i = 0; i < sizeof(operator_calls) / sizeof(operator_calls[0]); i++)
        assert_int_equal(bv_route_role(find(operator_calls[i][0], operator_calls[i][1])),
                         BV_ROLE_OPERATOR);
    static const char *const admin_calls[][2] = {
        { "POST", "/api/v1/drives" },
        { "DELETE", "/api/v1/drives/{id}" },
        { "DELETE", "/api/v1/backups/{bid}" },
        { "POST", "/api/v1/policies" },
        { "POST", "/api/v1/tokens" },
        { "GET", "/api/v1/tokens" },
        { "DELETE", "/api/v1/tokens/{name}" },
    };
    for (size_t i = 0; i < sizeof(admin_calls) / sizeof(admin_calls[0]); i++)
        assert_int_equal(bv_route_role(find(admin_calls[i][0], admin_calls[i][1])),
                         BV_ROLE_ADMIN);
    assert_int_equal(bv_route_role(find("GET", "/api/v1/storage")), BV_ROLE_READER);
    assert_int_equal(bv_route_role(find("GET", "/metrics")), BV_ROLE_READER);
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(bv_role_parse("reader"), BV_ROLE_READER);
    assert_int_equal(bv_role_parse("operator"), BV_ROLE_OPERATOR);
    assert_int_equal(bv_role_parse("admin"), BV_ROLE_ADMIN);
    assert_int_equal(bv_role_parse("root"), BV_ROLE_DEFAULT);
    assert_int_equal(bv_role_parse(NULL), BV_ROLE_DEFAULT);
    assert_string_equal(bv_role_name(BV_ROLE_OPERATOR), "operator");
    assert_int_equal(bv_role_from_index(0), BV_ROLE_READER);
}

static void test_times(void **state)
{
    (void)state;
    assert_int_equal(bv_tokens_parse_time("2030-01-31T12:00:00Z"), 1896091200000LL);
    assert_int_equal(bv_tokens_parse_time("2030-01-31T12:00:00.25Z"), 1896091200250LL);
    assert_int_equal(bv_tokens_parse_time("2030-01-31T14:00:00+02:00"), 1896091200000LL);
    assert_int_equal(bv_tokens_parse_time("2030-01-31T11:30:00-00:30"), 1896091200000LL);
    static const char *const bad[] = {
        "", "tomorrow", "2030-01-31", "2030-01-31T12:00:00", "2030-01-31T12:00:00Zjunk",
        "2030-01-31T12:00:00.Z", "2030-01-31T12:00:00+2:00", "2030-01-31 12:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(bv_tokens_parse_time(bad[i]), -1);
    assert_int_equal(bv_tokens_parse_time(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_service_table),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
