/*
 * GET /api/v1/images/{file} lists a qcow2 image's internal snapshots, made
 * with `qemu-img snapshot -c`, as "snapshots":[{"id","name","vm_state_size",
 * "date","vm_clock_ns"}] and only when there are some.  The oracle for ids,
 * names and dates is `qemu-img info --output=json` on the same file.
 * Skips (77) without qemu-img.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "harness.h"

static struct bvh H;

static int setup(void **state)
{
    (void)state;
    return bvh_start(&H, NULL);
}

static int teardown(void **state)
{
    (void)state;
    bvh_stop(&H);
    return 0;
}

/* qemu-img info --output=json of an image in the storage directory (caller frees). */
static cJSON *qemu_info(const char *file)
{
    char out[600];
    snprintf(out, sizeof(out), "%s/.qinfo.json", H.dir);
    assert_int_equal(bvh_sh("qemu-img info --output=json %s/%s >%s", H.images, file, out), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static void expect_same_snapshot(const cJSON *ours, const cJSON *q)
{
    assert_string_equal(bvh_str(ours, "id"), bvh_str(q, "id"));
    assert_string_equal(bvh_str(ours, "name"), bvh_str(q, "name"));
    assert_true(bvh_num(ours, "vm_state_size") == bvh_num(q, "vm-state-size"));
    assert_true(bvh_num(ours, "vm_clock_ns") ==
                bvh_num(q, "vm-clock-sec") * 1e9 + bvh_num(q, "vm-clock-nsec"));
    char date[32];
    time_t t = (time_t)bvh_num(q, "date-sec");
    struct tm tm;
    assert_non_null(gmtime_r(&t, &tm));
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    assert_string_equal(bvh_str(ours, "date"), date);
    assert_int_equal(cJSON_GetArraySize(ours), 5);
}

static void test_snapshots_listed(void **state)
{
    (void)state;
    cJSON *o = bvh_json(&H, "POST", 201, "/api/v1/images",
                        "{\"file\":\"s.qcow2\",\"format\":\"qcow2\",\"size\":\"4M\"}");
    assert_null(cJSON_GetObjectItem(o, "snapshots"));           /* none: no member */
    cJSON_Delete(o);
    assert_int_equal(bvh_sh("cd %s && qemu-io -c 'write -P 7 0 64k' s.qcow2 >/dev/null && "
                            "qemu-img snapshot -c first s.qcow2 && "
                            "qemu-img snapshot -c 'a name \"quoted\" and long' s.qcow2 && "
                            "qemu-img snapshot -c third s.qcow2 && "
                            "qemu-img snapshot -d first s.qcow2", H.images), 0);

    o = bvh_json(&H, "GET", 200, "/api/v1/images/s.qcow2", NULL);
    cJSON *q = qemu_info("s.qcow2");
    const cJSON *ours = cJSON_GetObjectItem(o, "snapshots");
    const cJSON *theirs = cJSON_GetObjectItem(q, "snapshots");
    assert_true(cJSON_IsArray(ours));
    assert_int_equal(cJSON_GetArraySize(ours), 2);
    assert_int_equal(cJSON_GetArraySize(theirs), 2);
    assert_string_equal(bvh_str(cJSON_GetArrayItem(ours, 0), "id"), "2");
    assert_string_equal(bvh_str(cJSON_GetArrayItem(ours, 0), "name"),
                        "a name \"quoted\" and long");
    for (int i = 0; i < 2; i++)
        expect_same_snapshot(cJSON_GetArrayItem(ours, i), cJSON_GetArrayItem(theirs, i));
    cJSON_Delete(q);
    cJSON_Delete(o);

    /* the listing carries the same info objects */
    o = bvh_json(&H, "GET", 200, "/api/v1/images", NULL);
    const cJSON *it;
    int seen = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(o, "images")) {
        if (strcmp(bvh_str(it, "file"), "s.qcow2") == 0)
            seen += cJSON_GetArraySize(cJSON_GetObjectItem(it, "snapshots"));
    }
    assert_int_equal(seen, 2);
    cJSON_Delete(o);

    /* all deleted: the member goes away again */
    assert_int_equal(bvh_sh("cd %s && qemu-img snapshot -d 'a name \"quoted\" and long' s.qcow2 && "
                            "qemu-img snapshot -d third s.qcow2", H.images), 0);
    o = bvh_json(&H, "GET", 200, "/api/v1/images/s.qcow2", NULL);
    assert_null(cJSON_GetObjectItem(o, "snapshots"));
    cJSON_Delete(o);
}

/* A name that is not UTF-8 (an image file says what it likes) stays valid JSON. */
static void test_name_not_utf8(void **state)
{
    (void)state;
    assert_int_equal(bvh_sh("cd %s && qemu-img create -q -f qcow2 u.qcow2 1M && "
                            "qemu-img snapshot -c third u.qcow2 && python3 -c '"
                            "d = open(\"u.qcow2\", \"rb\").read(); i = d.rindex(b\"third\"); "
                            "f = open(\"u.qcow2\", \"r+b\"); f.seek(i + 2); f.write(bytes([0xff]))'",
                            H.images), 0);
    cJSON *o = bvh_json(&H, "GET", 200, "/api/v1/images/u.qcow2", NULL);
    assert_string_equal(bvh_str(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "snapshots"), 0),
                                "name"), "th?rd");
    cJSON_Delete(o);
}

int main(void)
{
    if (!bvh_have("qemu-img") || !bvh_have("qemu-io")) {
        printf("qemu-img/qemu-io not installed: skipping\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshots_listed),
        cmocka_unit_test(test_name_not_utf8),
    };
    return cmocka_run_group_tests_name("image_snapshots", tests, setup, teardown);
}
