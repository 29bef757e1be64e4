/*
 * Drive lifecycle (contract: "Operations", Drives with backups):
 *  - DELETE /drives/{id} of a drive with chains is a 409 without a choice;
 *    ?keep_backups=true detaches it: "format":"detached" in GET /drives and
 *    GET /drives/{id}, its backups listed, readable byte for byte, checksum
 *    verifiable and restorable; everything that needs the image is a 409;
 *    the id stays taken; all of it survives a restart; then
 *    ?delete_backups=true removes it with its chains;
 *  - ?delete_backups=true on an attached drive removes the link files,
 *    the rows and the chain bitmap (the image stays unless delete_file);
 *  - growing a drive keeps its chain going: the next incremental carries
 *    the new size, reads and restores byte for byte as the grown drive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define KiB 1024
#define MiB (1024 * 1024)

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

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void pause_ms(int ms)
{
    struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

/* The call's status; with want_desc, the error's desc must contain it. */
static void expect(const char *method, const char *path, const char *body, long status,
                   const char *want_desc)
{
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, method, path, body, body ? strlen(body) : 0, NULL, NULL,
                                 &r), 0);
    if (r.status != status || (want_desc && (!r.body || !strstr(r.body, want_desc))))
        print_message("%s %s: %ld %s\n", method, path, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, status);
    if (want_desc)
        assert_non_null(strstr(r.body, want_desc));
    bvh_resp_free(&r);
}

static void io(const char *drive, const char *cmds)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON *r = bvh_json(&H, "POST", 200, path, "{\"commands\":[%s]}", cmds);
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(r, "results"))
        assert_true(bvh_bool(e, "ok"));
    cJSON_Delete(r);
}

/* Polls GET /jobs/{id} until it ends; asserts no error. */
static void wait_job(const char *id)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    double end = now_s() + 120;
    for (;;) {
        cJSON *j = bvh_json(&H, "GET", 200, path, NULL);
        const char *st = bvh_str(j, "status");
        bool done = strcmp(st, "null") == 0 || strcmp(st, "concluded") == 0;
        if (done) {
            const cJSON *err = cJSON_GetObjectItem(j, "error");
            if (!cJSON_IsNull(err))
                print_message("job %s: %s\n", id, cJSON_Print(j));
            assert_true(cJSON_IsNull(err));
        }
        cJSON_Delete(j);
        if (done)
            return;
        assert_true(now_s() < end);
        pause_ms(30);
    }
}

/* A chain backup of drive; returns the backup object (caller frees) once complete, of kind
 * made. */
static cJSON *backup_as(const char *drive, const char *kind, const char *made)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", drive);
    cJSON *j = bvh_json(&H, "POST", 201, path, "{\"kind\":\"%s\"}", kind);
    char bid[32];
    snprintf(bid, sizeof(bid), "%s", bvh_str(cJSON_GetObjectItem(j, "backup"), "id"));
    wait_job(bvh_str(cJSON_GetObjectItem(j, "job"), "id"));
    cJSON_Delete(j);
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    cJSON *b = bvh_json(&H, "GET", 200, path, NULL);
    assert_string_equal(bvh_str(b, "status"), "complete");
    assert_string_equal(bvh_str(b, "kind"), made);
    return b;
}

static cJSON *backup(const char *drive, const char *kind)
{
    return backup_as(drive, kind, kind);
}

static void read_bytes(const char *path, unsigned char *buf, size_t len)
{
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r), 0);
    if (r.status != 200)
        print_message("GET %s: %ld %s\n", path, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, len);
    memcpy(buf, r.body, len);
    bvh_resp_free(&r);
}

/* GET /backups/{bid}/data at [off, +len) is all `byte`. */
static void expect_backup_bytes(const char *bid, unsigned off, unsigned len, unsigned char byte)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=%u&length=%u", bid, off, len);
    unsigned char *buf = malloc(len);
    read_bytes(path, buf, len);
    unsigned bad = len;
    for (unsigned i = 0; i < len && bad == len; i++)
        if (buf[i] != byte)
            bad = i;
    if (bad < len)
        print_message("%s: byte %u is 0x%02x, want 0x%02x\n", path, off + bad, buf[bad], byte);
    free(buf);
    assert_int_equal(bad, len);
}

/* A checksum verify of a backup (what "backup" or "drive"): its report is clean. */
static void verify_clean_of(const char *what, const char *id)
{
    cJSON *j = bvh_json(&H, "POST", 201, "/api/v1/jobs",
                        "{\"type\":\"verify\",\"mode\":\"checksum\",\"%s\":\"%s\"}", what, id);
    wait_job(bvh_str(j, "id"));
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/reports/%s", bvh_str(j, "report_id"));
    cJSON *rep = bvh_json(&H, "GET", 200, path, NULL);
    assert_string_equal(bvh_str(rep, "status"), "clean");
    cJSON_Delete(rep);
    cJSON_Delete(j);
}

static void verify_clean(const char *bid)
{
    verify_clean_of("backup", bid);
}

/* Restore bid into a new file; then that file and `other` compare identical. */
static void restore_identical(const char *bid, const char *file, const char *other)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", bid);
    cJSON *j = bvh_json(&H, "POST", 201, path, "{\"file\":\"%s\",\"format\":\"qcow2\"}", file);
    wait_job(bvh_str(j, "id"));
    cJSON_Delete(j);
    cJSON *c = bvh_json(&H, "POST", 200, "/api/v1/images/compare",
                        "{\"a\":{\"file\":\"%s\"},\"b\":{\"file\":\"%s\"},\"strict\":true}",
                        file, other);
    if (!bvh_bool(c, "identical"))
        print_message("compare %s %s: %s\n", file, other, cJSON_Print(c));
    assert_true(bvh_bool(c, "identical"));
    cJSON_Delete(c);
}

static bool exists(const char *rel)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", H.images, rel);
    struct stat st;
    return stat(path, &st) == 0;
}

static const cJSON *listed(cJSON *list, const char *id)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(list, "drives"))
        if (strcmp(bvh_str(d, "id"), id) == 0)
            return d;
    return NULL;
}

static void expect_detached(const char *id, double size)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s", id);
    cJSON *d = bvh_json(&H, "GET", 200, path, NULL);
    assert_string_equal(bvh_str(d, "format"), "detached");
    assert_true(bvh_num(d, "size") == size);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "file")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(d, "bitmaps")), 0);
    cJSON_Delete(d);
    cJSON *all = bvh_json(&H, "GET", 200, "/api/v1/drives", NULL);
    const cJSON *l = listed(all, id);
    assert_non_null(l);
    assert_string_equal(bvh_str(l, "format"), "detached");
    cJSON_Delete(all);
}

/* GET /drives/{id}/backups: backups across its chains. */
static int backups_listed(const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", id);
    cJSON *j = bvh_json(&H, "GET", 200, path, NULL);
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "chains"))
        n += cJSON_GetArraySize(cJSON_GetObjectItem(c, "backups"));
    cJSON_Delete(j);
    return n;
}

static void test_keep_backups_detaches(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"k0\",\"format\":\"qcow2\",\"size\":4194304}"));
    io("k0", "\"write -P 0xaa 0 64k\"");
    cJSON *b1 = backup("k0", "full");
    io("k0", "\"write -P 0xbb 1M 64k\"");
    cJSON *b2 = backup("k0", "incremental");
    char id1[32], id2[32];
    snprintf(id1, sizeof(id1), "%s", bvh_str(b1, "id"));
    snprintf(id2, sizeof(id2), "%s", bvh_str(b2, "id"));
    cJSON_Delete(b1);
    cJSON_Delete(b2);

    expect("DELETE", "/api/v1/drives/k0", NULL, 409, "keep_backups");
    expect("DELETE", "/api/v1/drives/k0?keep_backups=true&delete_backups=true", NULL, 400, NULL);
    expect("DELETE", "/api/v1/drives/k0?keep_backups=yes", NULL, 400, NULL);
    expect("GET", "/api/v1/drives/k0", NULL, 200, "qcow2");        /* nothing changed */
    expect("DELETE", "/api/v1/drives/k0?keep_backups=true", NULL, 204, NULL);

    expect_detached("k0", 4194304);
    assert_int_equal(backups_listed("k0"), 2);
    assert_true(exists("k0.qcow2"));                    /* the image is kept (no delete_file) */
    expect_backup_bytes(id2, 0, 64 * KiB, 0xaa);
    expect_backup_bytes(id2, MiB, 64 * KiB, 0xbb);
    expect_backup_bytes(id1, MiB, 64 * KiB, 0x00);

    /* everything that needs the image: 409 naming the state */
    expect("GET", "/api/v1/drives/k0/data?offset=0&length=512", NULL, 409, "detached");
    expect("PUT", "/api/v1/drives/k0/data?offset=0", "x", 409, "detached");
    expect("POST", "/api/v1/drives/k0/io", "{\"commands\":[\"read 0 512\"]}", 409, "detached");
    expect("GET", "/api/v1/drives/k0/bitmaps", NULL, 409, "detached");
    expect("POST", "/api/v1/drives/k0/bitmaps", "{\"name\":\"x\"}", 409, "detached");
    expect("POST", "/api/v1/drives/k0/resize", "{\"size\":8388608}", 409, "detached");
    expect("POST", "/api/v1/drives/k0/backups", "{\"kind\":\"incremental\"}", 409, "detached");
    expect("POST", "/api/v1/drives", "{\"id\":\"k0\",\"format\":\"raw\",\"size\":65536}", 409,
           "detached");
    char rpath[128];
    snprintf(rpath, sizeof(rpath), "/api/v1/backups/%s/restore", id2);
    expect("POST", rpath, "{\"drive\":\"k0\"}", 409, "detached");      /* the id is taken */
    expect("DELETE", "/api/v1/drives/k0", NULL, 409, "delete_backups");
    expect("DELETE", "/api/v1/drives/k0?keep_backups=true", NULL, 204, NULL);   /* already */

    verify_clean(id2);
    verify_clean(id1);
    verify_clean_of("drive", "k0");                     /* every backup of the detached drive */
    restore_identical(id2, "k0-restored.qcow2", "k0.qcow2");

    /* a restart keeps it detached, its backups readable */
    assert_int_equal(bvh_restart(&H), 0);
    expect_detached("k0", 4194304);
    assert_int_equal(backups_listed("k0"), 2);
    expect_backup_bytes(id2, MiB, 64 * KiB, 0xbb);
    expect("GET", "/api/v1/drives/k0/data?offset=0&length=512", NULL, 409, "detached");

    /* the closed chain's newest link can go (nothing extends it any more) */
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", id2);
    cJSON *p = bvh_json(&H, "DELETE", 201, path, NULL);
    wait_job(bvh_str(p, "id"));
    cJSON_Delete(p);
    assert_int_equal(backups_listed("k0"), 1);

    /* finally gone with its chains; the id is free again */
    expect("DELETE", "/api/v1/drives/k0?delete_backups=true", NULL, 204, NULL);
    expect("GET", "/api/v1/drives/k0", NULL, 404, NULL);
    snprintf(path, sizeof(path), "/api/v1/backups/%s", id1);
    expect("GET", path, NULL, 404, NULL);
    assert_false(exists("chains/k0"));
    cJSON *all = bvh_json(&H, "GET", 200, "/api/v1/drives", NULL);
    assert_null(listed(all, "k0"));
    cJSON_Delete(all);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"k0\",\"format\":\"qcow2\",\"existing\":true}"));
    assert_int_equal(backups_listed("k0"), 0);
    expect("DELETE", "/api/v1/drives/k0?delete_file=true", NULL, 204, NULL);  /* no backups */
    assert_false(exists("k0.qcow2"));
}

static void test_delete_backups(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"p0\",\"format\":\"qcow2\",\"size\":2097152}"));
    io("p0", "\"write -P 0x5a 0 128k\"");
    cJSON *b1 = backup("p0", "full");
    io("p0", "\"write -P 0x6b 64k 64k\"");
    cJSON *b2 = backup("p0", "incremental");
    char f1[600], f2[600], id1[32];
    snprintf(f1, sizeof(f1), "%s", bvh_str(b1, "file"));
    snprintf(f2, sizeof(f2), "%s", bvh_str(b2, "file"));
    snprintf(id1, sizeof(id1), "%s", bvh_str(b1, "id"));
    cJSON_Delete(b1);
    cJSON_Delete(b2);
    assert_true(exists(f1) && exists(f2));
    cJSON *bm = bvh_json(&H, "GET", 200, "/api/v1/drives/p0/bitmaps", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(bm, "bitmaps")), 1);  /* the chain's */
    cJSON_Delete(bm);

    expect("DELETE", "/api/v1/drives/p0", NULL, 409, "delete_backups");
    expect("DELETE", "/api/v1/drives/p0?delete_backups=true", NULL, 204, NULL);
    expect("GET", "/api/v1/drives/p0", NULL, 404, NULL);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", id1);
    expect("GET", path, NULL, 404, NULL);
    assert_false(exists(f1));
    assert_false(exists(f2));
    assert_false(exists("chains/p0"));
    assert_true(exists("p0.qcow2"));                    /* the image stays without delete_file */

    /* reopened, it has no chain bitmap and no backups */
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"p0\",\"format\":\"qcow2\",\"existing\":true}"));
    bm = bvh_json(&H, "GET", 200, "/api/v1/drives/p0/bitmaps", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(bm, "bitmaps")), 0);
    cJSON_Delete(bm);
    assert_int_equal(backups_listed("p0"), 0);
    cJSON *b3 = backup_as("p0", "incremental", "full");  /* no chain left: taken as a full */
    cJSON_Delete(b3);
    expect("DELETE", "/api/v1/drives/p0?delete_backups=true&delete_file=true", NULL, 204, NULL);
    assert_false(exists("p0.qcow2"));
    assert_false(exists("chains/p0"));
}

static void test_grow_keeps_chain(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"g0\",\"format\":\"qcow2\",\"size\":1048576}"));
    io("g0", "\"write -P 0x11 0 64k\", \"write -P 0x12 960k 64k\"");
    cJSON *b1 = backup("g0", "full");
    assert_true(bvh_num(b1, "virtual_size") == 1048576);
    char id1[32];
    snprintf(id1, sizeof(id1), "%s", bvh_str(b1, "id"));
    cJSON_Delete(b1);

    cJSON *d = bvh_json(&H, "POST", 200, "/api/v1/drives/g0/resize", "{\"size\":2097152}");
    assert_true(bvh_num(d, "size") == 2097152);
    cJSON_Delete(d);
    io("g0", "\"write -P 0x22 1536k 64k\", \"write -P 0x23 1020k 8k\", \"write -P 0x33 0 4k\"");
    cJSON *b2 = backup("g0", "incremental");            /* the chain goes on */
    assert_true(bvh_num(b2, "virtual_size") == 2097152);
    assert_null(cJSON_GetObjectItem(b2, "reason"));
    assert_string_equal(bvh_str(b2, "parent"), id1);
    char id2[32];
    snprintf(id2, sizeof(id2), "%s", bvh_str(b2, "id"));
    cJSON_Delete(b2);

    /* the point reads as the grown drive, byte for byte */
    unsigned char *a = malloc(2 * MiB), *b = malloc(2 * MiB);
    read_bytes("/api/v1/drives/g0/data?offset=0&length=2097152", a, 2 * MiB);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=0&length=2097152", id2);
    read_bytes(path, b, 2 * MiB);
    assert_memory_equal(a, b, 2 * MiB);
    free(a);
    free(b);
    expect_backup_bytes(id2, 1536 * KiB, 64 * KiB, 0x22);
    expect_backup_bytes(id2, 1020 * KiB, 8 * KiB, 0x23);  /* across the old end */
    expect_backup_bytes(id2, 1028 * KiB, 508 * KiB, 0x00);
    expect_backup_bytes(id2, 0, 4 * KiB, 0x33);
    expect_backup_bytes(id2, 4 * KiB, 60 * KiB, 0x11);
    expect_backup_bytes(id1, 0, 64 * KiB, 0x11);         /* the older point as it was */
    expect_backup_bytes(id1, 960 * KiB, 64 * KiB, 0x12);

    verify_clean(id2);
    restore_identical(id2, "g0-restored.qcow2", "g0.qcow2");

    /* and on: one more incremental after the growth */
    io("g0", "\"write -P 0x44 2000k 48k\"");
    cJSON *b3 = backup("g0", "incremental");
    assert_string_equal(bvh_str(b3, "parent"), id2);
    char id3[32];
    snprintf(id3, sizeof(id3), "%s", bvh_str(b3, "id"));
    cJSON_Delete(b3);
    expect_backup_bytes(id3, 2000 * KiB, 48 * KiB, 0x44);
    verify_clean(id3);
    restore_identical(id3, "g0-restored3.qcow2", "g0.qcow2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_backups_detaches),
        cmocka_unit_test(test_delete_backups),
        cmocka_unit_test(test_grow_keeps_chain),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
