/*
 * The service's typed edges: catalog filters text → typed options
 * (model/filters.c, the one decoder both a request and a restart use), the
 * one errno → HTTP status mapping (api_status), the drive id rule and the
 * drive format names.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/common.h"
#include "model/filters.h"
#include "model/reports.h"
#include "runtime/drives.h"

static void test_decode_none(void **state)
{
    (void)state;
    struct bv_drive_filters f;
    const char *texts[] = { NULL, "", "{}" };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(bv_filters_decode(texts[i], &f, NULL), 0);
        assert_false(f.has_blkdebug);
        assert_false(f.has_blkverify);
        bv_filters_clear(&f);
    }
}

static void test_decode_blkdebug(void **state)
{
    (void)state;
    struct bv_drive_filters f;
    bv_error *e = NULL;
    assert_int_equal(bv_filters_decode(
        "{\"blkdebug\":{\"set_state\":[{\"event\":\"write_aio\",\"new_state\":2}],"
        "\"inject_error\":[{\"event\":\"read_aio\",\"state\":2,\"errno\":28,\"sector\":3,"
        "\"once\":true}]}}", &f, &e), 0);
    assert_null(e);
    assert_true(f.has_blkdebug);
    assert_int_equal(f.blkdebug.n_set_state, 1);
    assert_int_equal(f.blkdebug.n_inject_error, 1);
    assert_int_equal(f.blkdebug.inject_error[0].error, 28);
    assert_int_equal(f.blkdebug.inject_error[0].offset, 3 * 512);
    assert_true(f.blkdebug.inject_error[0].once);
    bv_filters_clear(&f);
}

static void expect_refused(const char *text, const char *want)
{
    struct bv_drive_filters f;
    bv_error *e = NULL;
    assert_int_equal(bv_filters_decode(text, &f, &e), -EINVAL);
    assert_non_null(e);
    assert_int_equal(e->err, EINVAL);
    if (want)
        assert_string_equal(e->msg, want);
    else
        assert_memory_equal(e->msg, "blkverify: ", 11);
    assert_false(f.has_blkdebug);
    assert_null(f.test_file);
    bv_error_free(e);
}

static void test_decode_refused(void **state)
{
    (void)state;
    expect_refused("{\"blkdebug\":{\"inject_error\":[{\"event\":\"nope\"}]}}",
                   "blkdebug.inject_error[0]: unknown blkdebug event 'nope'");
    expect_refused("{\"blkdebug\":{\"inject_error\":[{\"event\":\"read_aio\",\"offset\":0,"
                   "\"sector\":1}]}}",
                   "blkdebug.inject_error[0]: give 'offset' or 'sector', not both");
    expect_refused("{\"blkdebug\":[]}", "'blkdebug' must be an object");
    expect_refused("[1]", "filters must be a JSON object");
    expect_refused("{\"blkverify\":{\"test\":{\"file\":\"t\",\"format\":\"vmdk\"},"
                   "\"raw\":{\"file\":\"r\"}}}", NULL);
}

static void test_decode_blkverify(void **state)
{
    (void)state;
    struct bv_drive_filters f;
    assert_int_equal(bv_filters_decode("{\"blkverify\":{\"test\":{\"file\":\"t.qcow2\","
                                       "\"format\":\"qcow2\"},\"raw\":{\"file\":\"r.raw\"}}}",
                                       &f, NULL), 0);
    assert_true(f.has_blkverify);
    assert_string_equal(f.test_file, "t.qcow2");
    assert_int_equal(f.test_format, BV_FMT_QCOW2);
    assert_string_equal(f.raw_file, "r.raw");
    bv_filters_clear(&f);
    assert_int_equal(bv_filters_decode("{\"blkverify\":{\"test\":{\"file\":\"t\"},"
                                       "\"raw\":{\"file\":\"r\"}}}", &f, NULL), 0);
    assert_int_equal(f.test_format, BV_FMT_NONE);
    bv_filters_clear(&f);
}

static void test_status_mapping(void **state)
{
    (void)state;
    static const struct { int err; int status; const char *cls; } rows[] = {
        { ENODEV, 404, "DeviceNotFound" }, { EINVAL, 400, NULL }, { ENOENT, 400, NULL },
        { ENOTSUP, 400, NULL }, { EEXIST, 409, NULL }, { EBUSY, 409, NULL },
        { EFBIG, 413, NULL }, { EIO, 500, NULL }, { ENOMEM, 500, NULL },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *cls = "x";
        assert_int_equal(api_status(-rows[i].err, NULL, &cls), rows[i].status);
        if (rows[i].cls)
            assert_string_equal(cls, rows[i].cls);
        else
            assert_null(cls);
        bv_error e = { .err = rows[i].err };
        assert_int_equal(api_status(-EIO, &e, &cls), rows[i].status);   /* e->err wins */
    }
}

static void test_drive_ids_and_names(void **state)
{
    (void)state;
    bv_error *e = NULL;
    assert_int_equal(bv_drive_id_check("d0.a-b_c", NULL), 0);
    assert_int_equal(bv_drive_id_check("1bad", &e), -EINVAL);
    assert_string_equal(e->msg, "Invalid drive id '1bad': use a letter, then letters, digits, "
                        "'-', '.' or '_' (at most 128)");
    bv_error_free(e);
    assert_int_equal(bv_drive_id_check("", NULL), -EINVAL);
    assert_int_equal(bv_drive_id_check("a/b", NULL), -EINVAL);
    char long_id[BV_DRIVE_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_int_equal(bv_drive_id_check(long_id, NULL), -EINVAL);
    long_id[BV_DRIVE_ID_MAX] = '\0';
    assert_int_equal(bv_drive_id_check(long_id, NULL), 0);
    assert_string_equal(bv_drive_format_names[BV_DRIVE_RAW], bv_format_name(BV_FMT_RAW));
    assert_string_equal(bv_drive_format_names[BV_DRIVE_QCOW2], bv_format_name(BV_FMT_QCOW2));
    assert_string_equal(bv_drive_format_names[BV_DRIVE_BLKVERIFY], "blkverify");
    assert_null(bv_drive_format_names[BV_DRIVE_BLKVERIFY + 1]);
    assert_int_equal(bv_format_parse("qcow2"), BV_FMT_QCOW2);
    assert_int_equal(bv_format_parse("blkverify"), BV_FMT_NONE);
}

static void test_report_texts(void **state)
{
    (void)state;
    struct bv_blkverify_report r = { 0 };
    char *s = bv_model_corruption_event("r-1", "v0", 4096);
    assert_string_equal(s, "{\"report_id\":\"r-1\",\"drive\":\"v0\",\"first_mismatch_offset\":4096}");
    free(s);
    s = bv_model_report_extents(&r);
    assert_string_equal(s, "[]");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_none),
        cmocka_unit_test(test_decode_blkdebug),
        cmocka_unit_test(test_decode_refused),
        cmocka_unit_test(test_decode_blkverify),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_drive_ids_and_names),
        cmocka_unit_test(test_report_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
