/* Strict JSON reading at the edge: unknown fields, types, ranges, sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "json/json.h"

static const char *const fmt_names[] = { "raw", "qcow2", NULL };

struct body {
    const char *id;
    int format;
    uint64_t size;
    uint64_t gran;
    bool persistent;
    bool have_gran;
};

static int read_body(const char *text, struct body *b, char *err, size_t errlen)
{
    cJSON *o = bvj_parse_object(text, strlen(text), err, errlen);
    if (!o)
        return -1;
    const struct bvj_field f[] = {
        { "id", BVJ_STRING, true, &b->id },
        { "format", BVJ_ENUM, false, &b->format, .names = fmt_names },
        { "size", BVJ_SIZE, false, &b->size, .min = 1 },
        { "granularity", BVJ_U64, false, &b->gran, &b->have_gran, 512, 1ULL << 31 },
        { "persistent", BVJ_BOOL, false, &b->persistent },
    };
    int r = bvj_read(o, f, BVJ_COUNT(f), err, errlen);
    b->id = NULL;      /* borrowed from o */
    cJSON_Delete(o);
    return r;
}

static void test_valid_body(void **state)
{
    (void)state;
    struct body b = { .format = -1 };
    char err[256];
    assert_int_equal(read_body("{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":\"64M\","
                               "\"granularity\":65536,\"persistent\":true}", &b, err, sizeof(err)), 0);
    assert_int_equal(b.format, 1);
    assert_int_equal(b.size, 64ULL << 20);
    assert_int_equal(b.gran, 65536);
    assert_true(b.have_gran);
    assert_true(b.persistent);
}

static void test_rejections(void **state)
{
    (void)state;
    static const struct { const char *body, *msg; } cases[] = {
        { "{\"id\":\"d0\",\"sise\":5}", "Parameter 'sise' is unexpected" },
        { "{\"format\":\"raw\"}", "Parameter 'id' is missing" },
        { "{\"id\":5}", "Invalid parameter type for 'id', expected: string" },
        { "{\"id\":\"a\",\"format\":\"vmdk\"}", "Parameter 'format' does not accept value 'vmdk'" },
        { "{\"id\":\"a\",\"granularity\":256}", "Parameter 'granularity' is out of range" },
        { "{\"id\":\"a\",\"granularity\":4294967296}", "Parameter 'granularity' is out of range" },
        { "{\"id\":\"a\",\"granularity\":1.5}", "expects a non-negative integer" },
        { "{\"id\":\"a\",\"size\":-1}", "expects a non-negative integer" },
        { "{\"id\":\"a\",\"size\":\"12Q\"}", "expects a size" },
        { "{\"id\":\"a\",\"persistent\":1}", "expected: boolean" },
        { "{\"id\":\"a\"", "malformed JSON" },
        { "[1,2]", "a JSON object is expected" },
        { "{\"id\":\"a\"} x", "trailing data" },
        { "", "request body is empty" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct body b = { 0 };
        char err[256] = "";
        assert_int_equal(read_body(cases[i].body, &b, err, sizeof(err)), -1);
        if (!strstr(err, cases[i].msg))
            fail_msg("body %s: got '%s', want '%s'", cases[i].body, err, cases[i].msg);
    }
}

static void test_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(bvj_parse_size("32736k", &v), 0);
    assert_int_equal(v, 32736ULL * 1024);
    assert_int_equal(bvj_parse_size("65M", &v), 0);
    assert_int_equal(v, 68157440);
    assert_int_equal(bvj_parse_size("2T", &v), 0);
    assert_int_equal(v, 2ULL << 40);
    assert_int_equal(bvj_parse_size("1G", &v), 0);
    assert_int_equal(v, 1ULL << 30);
    assert_int_equal(bvj_parse_size("100000", &v), 0);
    assert_int_equal(v, 100000);
    assert_int_equal(bvj_parse_size("99999999999T", &v), -1);     /* overflow */
    assert_int_equal(bvj_parse_size("-5", &v), -1);
    assert_int_equal(bvj_parse_size("5X", &v), -1);
    assert_int_equal(bvj_parse_size("", &v), -1);
    assert_int_equal(bvj_parse_size("k", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_body),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
