/*
 * Drives, bitmaps, blkdebug and blkverify through the REST API, with the
 * numbers of QEMU iotest 124 and the blkverify document.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

/* The seed's default pattern and its two write sets (qemu-semantics §3.3). */
#define SEED_PATTERN "[\"write -P 0x41 0 512\",\"write -P 0xd5 1M 32k\",\"write -P 0xdc 32M 124k\"]"
#define P1 "[\"write -P 0xab 0 512\",\"write -P 0xfe 16M 256k\",\"write -P 0x64 32736k 64k\",\"flush\"]"
#define P2 "[\"write -P 0x9a 0 512\",\"write -P 0x55 8M 352k\",\"write -P 0x78 15872k 1M\",\"flush\"]"

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

static void io_ok(const char *drive, const char *cmds)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON *j = bvh_json(&H, "POST", 200, path, "{\"commands\":%s}", cmds);
    const cJSON *res = cJSON_GetObjectItem(j, "results");
    cJSON *cmdarr = cJSON_Parse(cmds);
    assert_int_equal(cJSON_GetArraySize(res), cJSON_GetArraySize(cmdarr));
    const cJSON *it;
    cJSON_ArrayForEach(it, res) {
        if (!bvh_bool(it, "ok"))
            fail_msg("io command '%s' failed: %s", bvh_str(it, "command"), bvh_str(it, "error"));
    }
    cJSON_Delete(cmdarr);
    cJSON_Delete(j);
}

/* Runs one command, returns its result object (caller frees the returned root). */
static cJSON *io_one(const char *drive, const char *cmd, const cJSON **result)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON *j = bvh_json(&H, "POST", 200, path, "{\"commands\":[\"%s\"]}", cmd);
    *result = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
    assert_non_null(*result);
    return j;
}

static double bitmap_count(const char *drive, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps/%s", drive, name);
    cJSON *j = bvh_json(&H, "GET", 200, path, NULL);
    double c = bvh_num(j, "count");
    cJSON_Delete(j);
    return c;
}

static void expect_error(const char *method, const char *path, const char *body, long status,
                         const char *cls, const char *desc_part)
{
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, method, path, body, body ? strlen(body) : 0, NULL, NULL, &r), 0);
    bvh_assert_error(&r, status, cls);
    const char *desc = cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "error"), "desc")->valuestring;
    if (desc_part && !strstr(desc, desc_part))
        fail_msg("%s %s: desc '%s' lacks '%s'", method, path, desc, desc_part);
    bvh_resp_free(&r);
}

static void new_drive(const char *id, const char *extra)
{
    cJSON *j = bvh_json(&H, "POST", 201, "/api/v1/drives",
                        "{\"id\":\"%s\",\"format\":\"qcow2\",\"size\":\"64M\"%s}", id, extra);
    assert_string_equal(bvh_str(j, "id"), id);
    assert_int_equal(bvh_num(j, "size"), 64 << 20);
    cJSON_Delete(j);
}

/* --- the contract's edge: bad JSON, unknown fields, paths --- */

static void test_bad_bodies(void **state)
{
    (void)state;
    expect_error("POST", "/api/v1/images", "{\"file\":", 400, "GenericError", "malformed JSON");
    expect_error("POST", "/api/v1/images", "{\"file\":\"a.qcow2\",\"format\":\"qcow2\",\"size\":1048576,"
                 "\"sise\":1}", 400, "GenericError", "Parameter 'sise' is unexpected");
    expect_error("POST", "/api/v1/drives", "{\"id\":\"d\",\"format\":\"vmdk\",\"size\":512}", 400,
                 "GenericError", "does not accept value 'vmdk'");
    expect_error("POST", "/api/v1/drives", "{\"id\":\"1bad\",\"format\":\"raw\",\"size\":512}", 400,
                 "GenericError", "Invalid drive id");
    /* nothing was created by the refused calls */
    assert_int_equal(access("a.qcow2", F_OK), -1);
    char p[512];
    snprintf(p, sizeof(p), "%s/a.qcow2", H.images);
    assert_int_equal(access(p, F_OK), -1);
}

static void test_body_too_large(void **state)
{
    (void)state;
    size_t n = (1u << 20) + 10;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "POST", "/api/v1/images", big, n, NULL, NULL, &r), 0);
    bvh_assert_error(&r, 413, "GenericError");
    bvh_resp_free(&r);
    free(big);
}

static void test_paths_confined(void **state)
{
    (void)state;
    expect_error("POST", "/api/v1/images", "{\"file\":\"../x.qcow2\",\"format\":\"qcow2\",\"size\":65536}",
                 400, "GenericError", NULL);
    expect_error("POST", "/api/v1/images", "{\"file\":\"/tmp/x.qcow2\",\"format\":\"qcow2\",\"size\":65536}",
                 400, "GenericError", NULL);
    /* a symlink inside the storage dir that leads out */
    char link[512];
    snprintf(link, sizeof(link), "%s/out", H.images);
    assert_int_equal(symlink("/tmp", link), 0);
    expect_error("POST", "/api/v1/images", "{\"file\":\"out/x.qcow2\",\"format\":\"qcow2\",\"size\":65536}",
                 400, "GenericError", NULL);
    assert_int_equal(access("/tmp/x.qcow2", F_OK), -1);
    expect_error("POST", "/api/v1/drives", "{\"id\":\"t\",\"format\":\"raw\",\"file\":\"../t.raw\",\"size\":512}",
                 400, "GenericError", NULL);
    expect_error("POST", "/api/v1/drives", "{\"id\":\"t\",\"format\":\"raw\",\"file\":\"out/passwd\",\"existing\":true}",
                 400, "GenericError", NULL);
    expect_error("GET", "/api/v1/images/..%2F..%2Fetc%2Fpasswd", NULL, 400, "GenericError", NULL);
    unlink(link);
}

static void test_images_roundtrip(void **state)
{
    (void)state;
    cJSON *j = bvh_json(&H, "POST", 201, "/api/v1/images",
                        "{\"file\":\"base.qcow2\",\"format\":\"qcow2\",\"size\":\"1M\",\"cluster_size\":4096}");
    assert_string_equal(bvh_str(j, "format"), "qcow2");
    assert_int_equal(bvh_num(j, "virtual_size"), 1 << 20);
    assert_int_equal(bvh_num(j, "cluster_size"), 4096);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "backing")));
    cJSON_Delete(j);
    j = bvh_json(&H, "POST", 201, "/api/v1/images", "{\"file\":\"top.qcow2\",\"format\":\"qcow2\","
                 "\"backing\":\"base.qcow2\",\"backing_format\":\"qcow2\"}");
    assert_int_equal(bvh_num(j, "virtual_size"), 1 << 20);       /* size from the backing file */
    assert_string_equal(bvh_str(j, "backing"), "base.qcow2");
    assert_string_equal(bvh_str(j, "backing_format"), "qcow2");
    cJSON_Delete(j);
    expect_error("POST", "/api/v1/images", "{\"file\":\"top.qcow2\",\"format\":\"qcow2\",\"size\":512}",
                 409, "GenericError", "already exists");
    expect_error("POST", "/api/v1/images", "{\"file\":\"x.qcow2\",\"format\":\"qcow2\",\"backing\":"
                 "\"base.qcow2\"}", 400, "GenericError", "Backing file specified without backing format");
    expect_error("POST", "/api/v1/images", "{\"file\":\"cs.qcow2\",\"format\":\"qcow2\",\"size\":512,"
                 "\"cluster_size\":8589934592}", 400, "GenericError",
                 "Cluster size must be a power of two between 512 and 2048k");
    j = bvh_json(&H, "POST", 200, "/api/v1/images/compare",
                 "{\"a\":{\"file\":\"base.qcow2\"},\"b\":{\"file\":\"top.qcow2\"}}");
    assert_true(bvh_bool(j, "identical"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "first_difference_offset")));
    cJSON_Delete(j);
    j = bvh_json(&H, "POST", 200, "/api/v1/images/check", "{\"file\":\"top.qcow2\"}");
    assert_int_equal(bvh_num(j, "errors"), 0);
    assert_int_equal(bvh_num(j, "leaks"), 0);
    cJSON_Delete(j);
    j = bvh_json(&H, "GET", 200, "/api/v1/images", NULL);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(j, "images")) >= 2);
    cJSON_Delete(j);
    j = bvh_json(&H, "POST", 200, "/api/v1/images/rebase", "{\"file\":\"top.qcow2\",\"backing\":\"\","
                 "\"backing_format\":\"qcow2\",\"unsafe\":true}");
    cJSON_Delete(j);
    j = bvh_json(&H, "DELETE", 204, "/api/v1/images/top.qcow2", NULL);
    cJSON_Delete(j);
    expect_error("GET", "/api/v1/images/top.qcow2", NULL, 404, "NotFound", NULL);
}

/* --- drives and the seed's bitmap numbers --- */

static void test_bitmap_counts_per_granularity(void **state)
{
    (void)state;
    static const struct { const char *gran; double p1, p2; } cases[] = {
        { "", 458752, 1507328 },                       /* default: 64 KiB */
        { ",\"granularity\":32768", 360448, 1441792 },
        { ",\"granularity\":131072", 655360, 1572864 },
    };
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "g%d", i);
        new_drive(id, "");
        io_ok(id, SEED_PATTERN);
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps", id);
        cJSON *b = bvh_json(&H, "POST", 201, path, "{\"name\":\"bitmap0\"%s}", cases[i].gran);
        assert_int_equal(bvh_num(b, "count"), 0);
        assert_string_equal(bvh_str(b, "status"), "active");
        assert_true(bvh_bool(b, "recording"));
        assert_false(bvh_bool(b, "busy"));
        assert_false(bvh_bool(b, "persistent"));
        cJSON_Delete(b);
        io_ok(id, P1);
        assert_int_equal(bitmap_count(id, "bitmap0"), cases[i].p1);
        snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps/bitmap0/clear", id);
        cJSON_Delete(bvh_json(&H, "POST", 200, path, NULL));
        assert_int_equal(bitmap_count(id, "bitmap0"), 0);
        io_ok(id, P2);
        assert_int_equal(bitmap_count(id, "bitmap0"), cases[i].p2);
    }
    /* the default granularity and the seed's status dictionary (test 4) */
    cJSON *b = bvh_json(&H, "GET", 200, "/api/v1/drives/g0/bitmaps/bitmap0", NULL);
    assert_int_equal(bvh_num(b, "granularity"), 65536);
    assert_int_equal(cJSON_GetArraySize(b), 7);
    cJSON_Delete(b);
}

static void test_data_path_and_extents(void **state)
{
    (void)state;
    new_drive("dp", "");
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/dp/bitmaps", "{\"name\":\"b\"}"));
    unsigned char buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    struct bvh_resp r;
    const char *ct = "application/octet-stream";
    assert_int_equal(bvh_request(&H, "PUT", "/api/v1/drives/dp/data?offset=1048576", buf,
                                 sizeof(buf), ct, NULL, &r), 0);
    assert_int_equal(r.status, 204);
    bvh_resp_free(&r);
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/drives/dp/data?offset=1048574&length=8",
                                 NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 8);
    const unsigned char want[8] = { 0, 0, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a };
    assert_memory_equal(r.body, want, 8);
    bvh_resp_free(&r);
    cJSON *j = bvh_json(&H, "GET", 200, "/api/v1/drives/dp/bitmaps/b/extents", NULL);
    const cJSON *x = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "extents"), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "extents")), 1);
    assert_int_equal(bvh_num(x, "offset"), 1048576);
    assert_int_equal(bvh_num(x, "length"), 65536);
    cJSON_Delete(j);
    /* a read pattern check that fails stops the list */
    const cJSON *res;
    j = io_one("dp", "read -P 0x11 1M 4k", &res);
    assert_false(bvh_bool(res, "ok"));
    cJSON_Delete(j);
    /* past the end */
    assert_int_equal(bvh_request(&H, "PUT", "/api/v1/drives/dp/data?offset=67108864", buf, 1, ct,
                                 NULL, &r), 0);
    bvh_assert_error(&r, 400, "GenericError");
    bvh_resp_free(&r);
    expect_error("GET", "/api/v1/drives/dp/data?offset=67108860&length=8", NULL, 400, "GenericError",
                 "past the end");
    j = io_one("dp", "write 64M 512", &res);
    assert_false(bvh_bool(res, "ok"));
    cJSON_Delete(j);
    j = io_one("dp", "frobnicate 0 1", &res);
    assert_false(bvh_bool(res, "ok"));
    cJSON_Delete(j);
}

static void test_bitmap_errors(void **state)
{
    (void)state;
    new_drive("be", "");
    expect_error("POST", "/api/v1/drives/be/bitmaps", "{\"name\":\"bitmap0\",\"granularity\":64000}",
                 400, "GenericError", "Granularity must be power of 2 and at least 512");
    expect_error("POST", "/api/v1/drives/be/bitmaps", "{\"name\":\"bitmap0\",\"granularity\":256}",
                 400, "GenericError", "Granularity must be power of 2 and at least 512");
    expect_error("POST", "/api/v1/drives/be/bitmaps", "{\"name\":\"bitmap0\",\"granularity\":4294967296}",
                 400, "GenericError", "expects uint32_t");
    expect_error("POST", "/api/v1/drives/be/bitmaps", "{\"name\":\"\"}", 400, "GenericError",
                 "Bitmap name cannot be empty");
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/be/bitmaps", "{\"name\":\"bitmap0\"}"));
    expect_error("POST", "/api/v1/drives/be/bitmaps", "{\"name\":\"bitmap0\"}", 409, "GenericError",
                 "Bitmap already exists: bitmap0");
    expect_error("GET", "/api/v1/drives/nope/bitmaps", NULL, 404, "DeviceNotFound", NULL);
    expect_error("GET", "/api/v1/drives/be/bitmaps/zz", NULL, 404, "DeviceNotFound",
                 "Dirty bitmap 'zz' not found");
    expect_error("POST", "/api/v1/drives/be/bitmaps/zz/clear", NULL, 404, "DeviceNotFound", NULL);
    /* enable/disable are idempotent */
    cJSON *b = bvh_json(&H, "POST", 200, "/api/v1/drives/be/bitmaps/bitmap0/disable", NULL);
    assert_string_equal(bvh_str(b, "status"), "disabled");
    assert_false(bvh_bool(b, "recording"));
    cJSON_Delete(b);
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/drives/be/bitmaps/bitmap0/disable", NULL));
    io_ok("be", "[\"write 0 512\"]");
    assert_int_equal(bitmap_count("be", "bitmap0"), 0);     /* disabled: not recorded */
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/drives/be/bitmaps/bitmap0/enable", NULL));
    io_ok("be", "[\"write 0 512\"]");
    assert_int_equal(bitmap_count("be", "bitmap0"), 65536);
    /* merge, newest-first listing */
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/be/bitmaps", "{\"name\":\"b2\",\"granularity\":512}"));
    io_ok("be", "[\"write 1M 512\"]");
    b = bvh_json(&H, "POST", 200, "/api/v1/drives/be/bitmaps/bitmap0/merge", "{\"sources\":[\"b2\"]}");
    assert_int_equal(bvh_num(b, "count"), 131072);
    cJSON_Delete(b);
    struct bvh_resp m;
    assert_int_equal(bvh_request(&H, "GET", "/metrics", NULL, 0, NULL, NULL, &m), 0);
    assert_int_equal(m.status, 200);
    assert_non_null(strstr(m.body, "blockvault_bitmap_dirty_bytes{drive=\"be\",bitmap=\"bitmap0\"} 131072\n"));
    bvh_resp_free(&m);
    b = bvh_json(&H, "GET", 200, "/api/v1/drives/be/bitmaps", NULL);
    assert_string_equal(bvh_str(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "bitmaps"), 0), "name"), "b2");
    cJSON_Delete(b);
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/be/bitmaps/b2", NULL));
    expect_error("DELETE", "/api/v1/drives/be/bitmaps/b2", NULL, 404, "DeviceNotFound", NULL);
    expect_error("POST", "/api/v1/drives/be/bitmaps", "{\"name\":\"p\",\"persistent\":true,\"x\":1}",
                 400, "GenericError", "unexpected");
}

static void test_resize_then_write_past_old_end(void **state)
{
    (void)state;
    new_drive("rs", "");
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/rs/bitmaps", "{\"name\":\"bitmap0\"}"));
    cJSON *d = bvh_json(&H, "POST", 200, "/api/v1/drives/rs/resize", "{\"size\":68157440}");
    assert_int_equal(bvh_num(d, "size"), 68157440);
    cJSON_Delete(d);
    io_ok("rs", "[\"write -P 0x12 64M 64k\",\"read -P 0x12 64M 64k\"]");
    assert_int_equal(bitmap_count("rs", "bitmap0"), 65536);
    expect_error("POST", "/api/v1/drives/rs/resize", "{\"size\":1048576}", 400, "GenericError", "shrink");
    expect_error("POST", "/api/v1/drives/rs/resize", "{\"size\":1000}", 400, "GenericError", NULL);
}

/* --- blkdebug: the seed's rule fires exactly once after a flush --- */

static void test_blkdebug_rule_fires_once(void **state)
{
    (void)state;
    cJSON *img = bvh_json(&H, "POST", 201, "/api/v1/images",
                          "{\"file\":\"dbg.qcow2\",\"format\":\"qcow2\",\"size\":\"64M\"}");
    cJSON_Delete(img);
    cJSON *d = bvh_json(&H, "POST", 201, "/api/v1/drives",
        "{\"id\":\"dbg\",\"format\":\"qcow2\",\"file\":\"dbg.qcow2\",\"existing\":true,"
        "\"blkdebug\":{\"set_state\":[{\"event\":\"flush_to_disk\",\"state\":1,\"new_state\":2}],"
        "\"inject_error\":[{\"event\":\"read_aio\",\"errno\":5,\"state\":2,\"once\":true,"
        "\"immediately\":false}]}}");
    const cJSON *filters = cJSON_GetObjectItem(d, "filters");
    assert_int_equal(cJSON_GetArraySize(filters), 1);
    assert_string_equal(bvh_str(cJSON_GetArrayItem(filters, 0), "driver"), "blkdebug");
    cJSON_Delete(d);
    io_ok("dbg", "[\"write -P 0x41 0 512\",\"read -P 0x41 0 512\",\"flush\"]");   /* state 1 → 2 */
    const cJSON *res;
    cJSON *j = io_one("dbg", "read -P 0x41 0 512", &res);
    assert_false(bvh_bool(res, "ok"));
    assert_non_null(strstr(bvh_str(res, "error"), "Input/output error"));
    cJSON_Delete(j);
    io_ok("dbg", "[\"read -P 0x41 0 512\",\"flush\",\"read -P 0x41 0 512\"]");  /* once: gone */
    expect_error("POST", "/api/v1/drives", "{\"id\":\"dbg2\",\"format\":\"qcow2\",\"file\":\"dbg.qcow2\","
                 "\"existing\":true,\"blkdebug\":{\"inject_error\":[{\"event\":\"nope\"}]}}", 400,
                 "GenericError", "nope");
}

/* A flush with no write since the last one must not advance the state. */
static void test_blkdebug_idle_flush(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/images",
                          "{\"file\":\"idle.qcow2\",\"format\":\"qcow2\",\"size\":\"1M\"}"));
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
        "{\"id\":\"idle\",\"format\":\"qcow2\",\"file\":\"idle.qcow2\",\"existing\":true,"
        "\"blkdebug\":{\"set_state\":[{\"event\":\"flush_to_disk\",\"state\":1,\"new_state\":2}],"
        "\"inject_error\":[{\"event\":\"read_aio\",\"state\":2,\"once\":true}]}}"));
    io_ok("idle", "[\"flush\",\"flush\"]");      /* nothing written: state stays 1 */
    io_ok("idle", "[\"write -P 0x1 0 4k\",\"read -P 0x1 0 4k\"]");
    const cJSON *res;
    io_ok("idle", "[\"flush\"]");
    cJSON *j = io_one("idle", "read -P 0x1 0 4k", &res);
    assert_false(bvh_bool(res, "ok"));
    cJSON_Delete(j);
}

/* --- blkverify: the document's example --- */

static void test_blkverify_mismatch_report(void **state)
{
    (void)state;
    cJSON *head = bvh_json(&H, "GET", 200, "/api/v1/events?after=latest", NULL);
    int after = (int)bvh_num(head, "next");
    cJSON_Delete(head);
    bvh_blkverify_mismatch_drive(&H, "v0", "test.qcow2", "ref.raw");
    const cJSON *res;
    cJSON *j = io_one("v0", "read 0 4k", &res);
    assert_false(bvh_bool(res, "ok"));
    assert_non_null(strstr(bvh_str(res, "error"), "contents mismatch in sector 0"));
    cJSON_Delete(j);

    j = bvh_json(&H, "GET", 200, "/api/v1/reports", NULL);
    const cJSON *rep = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "reports"), 0);
    assert_non_null(rep);
    assert_string_equal(bvh_str(rep, "kind"), "blkverify");
    assert_string_equal(bvh_str(rep, "status"), "corrupt");
    assert_string_equal(bvh_str(rep, "drive"), "v0");
    assert_int_equal(bvh_num(rep, "first_mismatch_sector"), 0);
    assert_int_equal(bvh_num(rep, "first_mismatch_offset"), 0);
    assert_int_equal(bvh_num(rep, "mismatched_bytes"), 4096);
    const cJSON *ext = cJSON_GetArrayItem(cJSON_GetObjectItem(rep, "extents"), 0);
    assert_int_equal(bvh_num(ext, "length"), 4096);
    const cJSON *smp = cJSON_GetArrayItem(cJSON_GetObjectItem(rep, "samples"), 0);
    assert_string_equal(bvh_str(smp, "test_hex"), "00000000000000000000000000000000");
    assert_string_equal(bvh_str(smp, "reference_hex"), "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    char rid[64];
    snprintf(rid, sizeof(rid), "/api/v1/reports/%s", bvh_str(rep, "id"));
    cJSON *one = bvh_json(&H, "GET", 200, rid, NULL);
    assert_string_equal(bvh_str(one, "id"), bvh_str(rep, "id"));
    cJSON_Delete(one);
    char q[96];
    snprintf(q, sizeof(q), "/api/v1/events?after=%d&name=CORRUPTION_DETECTED", after);
    cJSON *ev = bvh_json(&H, "GET", 200, q, NULL);
    const cJSON *e0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev, "events"), 0);
    assert_non_null(e0);
    const cJSON *data = cJSON_GetObjectItem(e0, "data");
    assert_string_equal(bvh_str(data, "report_id"), bvh_str(rep, "id"));
    assert_string_equal(bvh_str(data, "drive"), "v0");
    assert_int_equal(bvh_num(data, "first_mismatch_offset"), 0);
    cJSON_Delete(ev);
    cJSON_Delete(j);

    /* writes reach both sides; then the same read verifies */
    io_ok("v0", "[\"write -P 0x77 0 64k\",\"read -P 0x77 0 4k\"]");
    /* a difference at byte 4096+7 reports sector 8 */
    char path[512];
    snprintf(path, sizeof(path), "%s/ref.raw", H.images);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 4096 + 7, SEEK_SET);
    fputc(0x01, f);
    fclose(f);
    j = io_one("v0", "read 0 64k", &res);
    assert_false(bvh_bool(res, "ok"));
    assert_non_null(strstr(bvh_str(res, "error"), "contents mismatch in sector 8"));
    cJSON_Delete(j);
    io_ok("v0", "[\"read -P 0x77 0 4k\"]");         /* avoiding the bad byte works */
    cJSON_Delete(bvh_json(&H, "GET", 200, "/api/v1/health", NULL));
}

static void test_in_use_image_not_deleted(void **state)
{
    (void)state;
    new_drive("busy1", "");
    expect_error("DELETE", "/api/v1/images/busy1.qcow2", NULL, 409, "GenericError", "busy1");
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/busy1?delete_file=true", NULL));
    expect_error("GET", "/api/v1/drives/busy1", NULL, 404, "DeviceNotFound", NULL);
    expect_error("GET", "/api/v1/images/busy1.qcow2", NULL, 404, "NotFound", NULL);
    new_drive("keep1", "");
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/keep1", NULL));
    cJSON_Delete(bvh_json(&H, "GET", 200, "/api/v1/images/keep1.qcow2", NULL));
    expect_error("POST", "/api/v1/drives", "{\"id\":\"keep1\",\"format\":\"qcow2\",\"size\":512}", 409,
                 "GenericError", "already exists");
}

/* Backing names recorded as absolute paths are followed only inside the storage dir. */
static void test_absolute_backing_paths(void **state)
{
    (void)state;
    if (!bvh_have("qemu-img"))
        skip();
    char outside[] = "/tmp/bv-outside-XXXXXX";
    assert_non_null(mkdtemp(outside));
    assert_int_equal(bvh_sh("qemu-img create -q -f qcow2 %s/base.qcow2 1M", outside), 0);
    assert_int_equal(bvh_sh("qemu-img create -q -f qcow2 -b %s/base.qcow2 -F qcow2 %s/absout.qcow2",
                            outside, H.images), 0);
    char body[256];
    snprintf(body, sizeof(body), "{\"id\":\"ao\",\"format\":\"qcow2\",\"file\":\"absout.qcow2\","
             "\"existing\":true}");
    char want[128];
    snprintf(want, sizeof(want), "%s/base.qcow2", outside);
    expect_error("POST", "/api/v1/drives", body, 400, "GenericError", want);
    bvh_sh("rm -rf %s", outside);

    assert_int_equal(bvh_sh("qemu-img create -q -f qcow2 %s/inbase.qcow2 1M && "
                            "qemu-io -f qcow2 -c 'write -P 0x3c 0 4k' %s/inbase.qcow2 >/dev/null && "
                            "qemu-img create -q -f qcow2 -b %s/inbase.qcow2 -F qcow2 %s/absin.qcow2",
                            H.images, H.images, H.images, H.images), 0);
    cJSON *d = bvh_json(&H, "POST", 201, "/api/v1/drives", "{\"id\":\"ai\",\"format\":\"qcow2\","
                        "\"file\":\"absin.qcow2\",\"existing\":true}");
    assert_non_null(strstr(bvh_str(d, "backing"), "/inbase.qcow2"));
    cJSON_Delete(d);
    io_ok("ai", "[\"read -P 0x3c 0 4k\",\"write -P 0x4d 8k 4k\",\"flush\"]");
    /* the backing file is in use by the drive */
    expect_error("DELETE", "/api/v1/images/inbase.qcow2", NULL, 409, "GenericError", "'ai'");
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/ai", NULL));
    assert_int_equal(bvh_sh("qemu-img check -q %s/absin.qcow2", H.images), 0);
    assert_int_equal(bvh_sh("qemu-io -f qcow2 -c 'read -P 0x4d 8k 4k' -c 'read -P 0x3c 0 4k' "
                            "%s/absin.qcow2 >/dev/null", H.images), 0);
}

/* --- restarts --- */

static void test_restart_keeps_drives_and_persistent_bitmaps(void **state)
{
    (void)state;
    new_drive("pd", "");
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/pd/bitmaps",
                          "{\"name\":\"pb\",\"persistent\":true}"));
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/pd/bitmaps", "{\"name\":\"vol\"}"));
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives/pd/bitmaps",
                          "{\"name\":\"pdis\",\"persistent\":true,\"disabled\":true}"));
    io_ok("pd", P1);
    assert_int_equal(bitmap_count("pd", "pb"), 458752);
    H.keep_dir = true;
    assert_int_equal(bvh_restart(&H), 0);
    cJSON *b = bvh_json(&H, "GET", 200, "/api/v1/drives/pd/bitmaps/pb", NULL);
    assert_int_equal(bvh_num(b, "count"), 458752);
    assert_string_equal(bvh_str(b, "status"), "active");
    assert_true(bvh_bool(b, "persistent"));
    cJSON_Delete(b);
    b = bvh_json(&H, "GET", 200, "/api/v1/drives/pd/bitmaps/pdis", NULL);
    assert_string_equal(bvh_str(b, "status"), "disabled");
    cJSON_Delete(b);
    expect_error("GET", "/api/v1/drives/pd/bitmaps/vol", NULL, 404, "DeviceNotFound", NULL);
    io_ok("pd", "[\"read -P 0xfe 16M 256k\"]");      /* the drive's data is back too */
    /* blkdebug drives come back with their rules */
    cJSON *d = bvh_json(&H, "GET", 200, "/api/v1/drives/dbg", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(d, "filters")), 1);
    cJSON_Delete(d);

    /* kill -9: the persistent bitmap was in use, so it comes back inconsistent */
    io_ok("pd", P2);
    bvh_kill9(&H);
    assert_int_equal(bvh_restart(&H), 0);
    b = bvh_json(&H, "GET", 200, "/api/v1/drives/pd/bitmaps/pb", NULL);
    assert_string_equal(bvh_str(b, "status"), "inconsistent");
    assert_int_equal(bvh_num(b, "count"), 0);
    assert_false(bvh_bool(b, "recording"));
    cJSON_Delete(b);
    expect_error("POST", "/api/v1/drives/pd/bitmaps/pb/clear", NULL, 409, "GenericError",
                 "Bitmap 'pb' is inconsistent and cannot be used");
    expect_error("POST", "/api/v1/drives/pd/bitmaps/pb/enable", NULL, 409, "GenericError", "inconsistent");
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/pd/bitmaps/pb", NULL));
    H.keep_dir = false;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_bodies),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_paths_confined),
        cmocka_unit_test(test_images_roundtrip),
        cmocka_unit_test(test_bitmap_counts_per_granularity),
        cmocka_unit_test(test_data_path_and_extents),
        cmocka_unit_test(test_bitmap_errors),
        cmocka_unit_test(test_resize_then_write_past_old_end),
        cmocka_unit_test(test_blkdebug_rule_fires_once),
        cmocka_unit_test(test_blkdebug_idle_flush),
        cmocka_unit_test(test_blkverify_mismatch_report),
        cmocka_unit_test(test_in_use_image_not_deleted),
        cmocka_unit_test(test_absolute_backing_paths),
        cmocka_unit_test(test_restart_keeps_drives_and_persistent_bitmaps),
    };
    return cmocka_run_group_tests_name("drives", tests, setup, teardown);
}
