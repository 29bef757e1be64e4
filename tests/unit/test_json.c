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

/* What cJSON accepts but a C string or a JSON reply would change: NUL
 * (raw or escaped), invalid UTF-8, and a key given twice (first wins). */
static void test_strings(void **state)
{
    (void)state;
    static const struct { const char *body; size_t len; const char *msg; } cases[] = {
        { "{\"id\":\"x\\u0000.qcow2\"}", 0,
          "JSON strings must not contain NUL (\\u0000, at byte 8)" },
        { "{\"id\":\"x\\u0000\"}", 0, "JSON strings must not contain NUL" },
        { "{\"a\\u0000b\":1}", 0, "JSON strings must not contain NUL (\\u0000, at byte 3)" },
        { "{\"id\":\"x\0y\"}", 12, "request body contains a NUL byte at byte 8" },
        { "{\"id\":\"\xff\"}", 0, "request body is not valid UTF-8 (at byte 7)" },
        { "{\"id\":\"\xc0\xaf\"}", 0, "request body is not valid UTF-8 (at byte 7)" },
        { "{\"id\":\"\xed\xa0\x80\"}", 0, "request body is not valid UTF-8 (at byte 7)" },
        { "{\"id\":\"\xe2\x82\"}", 0, "request body is not valid UTF-8 (at byte 7)" },
        { "{\"id\":\"\xf4\x90\x80\x80\"}", 0, "request body is not valid UTF-8 (at byte 7)" },
        { "{\"id\":\"a\",\"id\":\"b\"}", 0, "duplicate key 'id' in a JSON object" },
        { "{\"id\":\"a\",\"o\":{\"k\":1,\"j\":2,\"k\":3}}", 0,
          "duplicate key 'k' in a JSON object" },
        { "{\"id\":\"a\",\"l\":[{\"z\":1,\"z\":1}]}", 0, "duplicate key 'z' in a JSON object" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].body);
        cJSON *o = bvj_parse_object(cases[i].body, len, err, sizeof(err));
        if (o || !strstr(err, cases[i].msg))
            fail_msg("case %zu: got '%s', want '%s'", i, o ? "(accepted)" : err, cases[i].msg);
    }
    /* valid multi-byte text, escapes that are not NUL and a literal backslash-u text pass */
    char err[256];
    const char *ok = "{\"id\":\"caf\xc3\xa9 \xf0\x9f\x92\xbe \\u0041 \\\\u0000\",\"o\":{\"id\":1}}";
    cJSON *o = bvj_parse_object(ok, strlen(ok), err, sizeof(err));
    if (!o)
        fail_msg("valid body refused: %s", err);
    assert_string_equal(cJSON_GetObjectItem(o, "id")->valuestring,
                        "caf\xc3\xa9 \xf0\x9f\x92\xbe A \\u0000");
    cJSON_Delete(o);
    assert_true(bvj_utf8_valid("\xe2\x82\xac", 3));
    assert_false(bvj_utf8_valid("\xe2\x82\xac", 2));
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
        cmocka_unit_test(test_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
