/*
 * Chain-managed backups end to end: the links the service names and
 * records, relative backing names (a chain copied as a folder still opens
 * in qemu-img), each point reading as the drive did, the digest, a full
 * taken instead of an incremental with its reason (no chain yet; the chain
 * bitmap inconsistent after a crash), one backup per drive at a time, and
 * qemu-img check clean on every link.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define SIZE (8u << 20)

static struct bvh H;
static uint8_t model[SIZE];

static void io(const char *cmd, int pat, unsigned long long off, unsigned len)
{
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/drives/d0/io",
                          "{\"commands\":[\"%s -P %d %llu %u\"]}", cmd, pat, off, len));
    memset(model + off, pat, len);
}

/* Start a chain backup and wait for it; returns its JSON (caller frees). */
static cJSON *backup(const char *kind)
{
    cJSON *head = bvh_json(&H, "GET", 200, "/api/v1/events?after=latest", NULL);
    long long after = (long long)bvh_num(head, "next");
    cJSON_Delete(head);
    cJSON *r = bvh_json(&H, "POST", 201, "/api/v1/drives/d0/backups", "{\"kind\":\"%s\"}", kind);
    char id[32];
    snprintf(id, sizeof(id), "%s", bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    cJSON_Delete(r);
    for (int i = 0; i < 100; i++) {
        char path[160];
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld&name=JOB_STATUS_CHANGE&wait=5",
                 after);
        cJSON *ev = bvh_json(&H, "GET", 200, path, NULL);
        after = (long long)bvh_num(ev, "next");
        cJSON_Delete(ev);
        snprintf(path, sizeof(path), "/api/v1/backups/%s", id);
        cJSON *b = bvh_json(&H, "GET", 200, path, NULL);
        if (strcmp(bvh_str(b, "status"), "running") != 0)
            return b;
        cJSON_Delete(b);
    }
    fail_msg("backup %s did not end", id);
    return NULL;
}

static void check_point(const char *id, const uint8_t *want)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=0&length=%u", id, SIZE);
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, SIZE);
    assert_memory_equal(r.body, want, SIZE);
    bvh_resp_free(&r);
}

static void test_chain(void **state)
{
    (void)state;
    if (!bvh_have("qemu-img"))
        skip();
    static uint8_t p1[SIZE], p2[SIZE];
    assert_int_equal(bvh_start(&H, NULL), 0);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":%u}", SIZE));
    memset(model, 0, SIZE);
    io("write", 0x11, 0, 1 << 20);

    /* an incremental without a chain is a full, and says why */
    cJSON *b1 = backup("incremental");
    assert_string_equal(bvh_str(b1, "status"), "complete");
    assert_string_equal(bvh_str(b1, "kind"), "full");
    assert_non_null(strstr(bvh_str(b1, "reason"), "no complete backup"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(b1, "parent")));
    assert_int_equal((long long)bvh_num(b1, "data_bytes"), 1 << 20);
    memcpy(p1, model, SIZE);

    io("write", 0x22, 3u << 20, 65536);
    io("write", 0x33, 0, 512);
    cJSON *b2 = backup("incremental");
    assert_string_equal(bvh_str(b2, "kind"), "incremental");
    assert_string_equal(bvh_str(b2, "parent"), bvh_str(b1, "id"));
    assert_string_equal(bvh_str(b2, "chain"), bvh_str(b1, "chain"));
    assert_int_equal((long long)bvh_num(b2, "data_bytes"), 2 * 65536);
    assert_null(cJSON_GetObjectItem(b2, "reason"));
    memcpy(p2, model, SIZE);
    /* the checksum is a digest of the point: a point differs, so does it */
    assert_string_not_equal(bvh_str(b1, "checksum"), bvh_str(b2, "checksum"));
    assert_int_equal(strlen(bvh_str(b2, "checksum")), 32);

    /* a second backup while one runs: 409 (the drive is held by a slow job) */
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/jobs",
                          "{\"type\":\"backup\",\"device\":\"d0\",\"sync\":\"full\","
                          "\"target\":\"slow.qcow2\",\"speed\":65536}"));
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "POST", "/api/v1/drives/d0/backups",
                                 "{\"kind\":\"incremental\"}", 22, "application/json", NULL, &r),
                     0);
    assert_int_equal(r.status, 409);
    bvh_resp_free(&r);
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/jobs/d0/cancel", NULL));

    /* each point reads as the drive did */
    check_point(bvh_str(b1, "id"), p1);
    check_point(bvh_str(b2, "id"), p2);

    /* links: relative backing names, clean checks, and the folder moves */
    char chain_dir[512];
    snprintf(chain_dir, sizeof(chain_dir), "%s/chains/d0/%s", H.images, bvh_str(b1, "chain"));
    assert_int_equal(bvh_sh("cd '%s' && qemu-img info --output=json %s.qcow2 | "
                            "grep -q '\"backing-filename\": \"%s.qcow2\"'", chain_dir,
                            bvh_str(b2, "id"), bvh_str(b1, "id")), 0);
    assert_int_equal(bvh_sh("cd '%s' && for f in *.qcow2; do qemu-img check -q $f || exit 1; done",
                            chain_dir), 0);
    assert_int_equal(bvh_sh("rm -rf '%s.moved' && cp -r '%s' '%s.moved' && cd '%s.moved' && "
                            "qemu-img compare -q %s.qcow2 '%s/%s.qcow2'", H.dir, chain_dir, H.dir,
                            H.dir, bvh_str(b2, "id"), chain_dir, bvh_str(b2, "id")), 0);
    bvh_sh("rm -rf '%s.moved'", H.dir);

    /* a crash: the chain's persistent bitmap comes back inconsistent, and
     * the next incremental is taken as a full that says so */
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/drives/d0/io",
                          "{\"commands\":[\"flush\"]}"));   /* the drive's data survives */
    bvh_kill9(&H);
    H.keep_dir = false;
    assert_int_equal(bvh_restart(&H), 0);
    cJSON *b3 = backup("incremental");
    assert_string_equal(bvh_str(b3, "kind"), "full");
    assert_string_not_equal(bvh_str(b3, "chain"), bvh_str(b1, "chain"));
    assert_non_null(strstr(bvh_str(b3, "reason"), "inconsistent"));
    check_point(bvh_str(b3, "id"), model);
    /* the old chain stays readable */
    check_point(bvh_str(b2, "id"), p2);
    cJSON_Delete(b1);
    cJSON_Delete(b2);
    cJSON_Delete(b3);
    bvh_stop(&H);
}

int main(void)
{
    if (!getenv("BV_DAEMON")) {
        fprintf(stderr, "BV_DAEMON not set; skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_chain) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
