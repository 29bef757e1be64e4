/*
 * bv_s3_get_file (service/s3/s3get.c) and the bvs3 tool against a real single-node Ceph
 * RADOS Gateway (the rgw/start fixture or one of its own; skipped, 77, when none can be had):
 * an object of 7.5 MiB put with the client comes back byte for byte with 1 MiB parts, 3 in
 * flight (the progress adds up to its size), and in one part; a missing key is ENOENT and a
 * wrong secret EACCES "the remote refused the credentials"; `bvs3 get` writes the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rgw_env.h"
#include "s3/s3.h"
#include "s3/s3get.h"

#define OBJ_SIZE ((15u << 20) / 2)

static struct rgw_env G;
static char bucket[64];
static uint8_t *data;
static char tmp[64];

static struct bv_s3 *client(const char *secret)
{
    struct bv_s3_config cfg = {
        .endpoint = G.endpoint, .bucket = bucket, .access_key = G.access_key,
        .secret_key = secret ? secret : G.secret_key, .retries = 1,
    };
    struct bv_s3 *s3 = NULL;
    assert_int_equal(bv_s3_new(&cfg, &s3, NULL), 0);
    return s3;
}

static int setup(void **state)
{
    (void)state;
    int rc = rgw_env_start(&G);
    if (rc == 77)
        exit(77);
    snprintf(bucket, sizeof(bucket), "bv-get-%d", (int)getpid());
    snprintf(tmp, sizeof(tmp), "/tmp/bv-s3get-%d", (int)getpid());
    data = malloc(OBJ_SIZE);
    for (size_t i = 0; i < OBJ_SIZE; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    struct bv_s3 *s3 = client(NULL);
    bv_error *e = NULL;
    rc = bv_s3_check_bucket(s3, true, false, &e);
    if (rc == 0)
        rc = bv_s3_put(s3, "dir/obj", data, OBJ_SIZE, &e);
    if (rc)
        fprintf(stderr, "setup: %s\n", e ? e->msg : "?");
    bv_error_free(e);
    bv_s3_free(s3);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    unlink(tmp);
    free(data);
    rgw_env_stop(&G);
    return 0;
}

static void add(void *opaque, uint64_t bytes)
{
    atomic_fetch_add((_Atomic uint64_t *)opaque, bytes);
}

static void check_file(void)
{
    int fd = open(tmp, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, OBJ_SIZE);
    uint8_t *b = malloc(OBJ_SIZE);
    assert_int_equal(pread(fd, b, OBJ_SIZE, 0), OBJ_SIZE);
    assert_memory_equal(b, data, OBJ_SIZE);
    free(b);
    close(fd);
    unlink(tmp);
}

static void test_get_file(void **state)
{
    (void)state;
    struct bv_s3 *s3 = client(NULL);
    static const struct { size_t part; unsigned parallel; } cases[] = {
        { 1u << 20, 3 }, { 16u << 20, 0 },
    };
    for (size_t c = 0; c < 2; c++) {
        _Atomic uint64_t done = 0;
        struct bv_s3_get_opts o = { .part_size = cases[c].part, .parallel = cases[c].parallel,
                                    .progress = add, .opaque = &done };
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        uint64_t got = 0;
        assert_int_equal(bv_s3_get_file(s3, "dir/obj", fd, UINT64_MAX, &o, &got, NULL), 0);
        close(fd);
        assert_int_equal(got, OBJ_SIZE);
        assert_int_equal(atomic_load(&done), OBJ_SIZE);
        check_file();
    }
    bv_error *e = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(bv_s3_get_file(s3, "dir/none", fd, UINT64_MAX, NULL, NULL, &e), -ENOENT);
    bv_error_free(e);
    e = NULL;
    struct bv_s3_get_opts bad = { .part_size = 1000 };
    assert_int_equal(bv_s3_get_file(s3, "dir/obj", fd, OBJ_SIZE, &bad, NULL, NULL), -EINVAL);
    close(fd);
    bv_s3_free(s3);
    s3 = client("not-the-secret");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(bv_s3_get_file(s3, "dir/obj", fd, OBJ_SIZE, NULL, NULL, &e), -EACCES);
    assert_non_null(strstr(e->msg, "the remote refused the credentials"));
    bv_error_free(e);
    close(fd);
    bv_s3_free(s3);
}

static void test_bvs3(void **state)
{
    (void)state;
    const char *tool = getenv("BVS3");
    if (!tool || access(tool, X_OK) != 0) {
        fprintf(stderr, "test_bvs3: BVS3 not set: skipped\n");
        skip();
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "BV_S3_ACCESS_KEY='%s' BV_S3_SECRET_KEY='%s' '%s' get "
             "--part-size 2097152 --parallel 4 '%s' '%s' dir/obj '%s' >/dev/null",
             G.access_key, G.secret_key, tool, G.endpoint, bucket, tmp);
    assert_int_equal(system(cmd), 0);
    check_file();
    snprintf(cmd, sizeof(cmd), "BV_S3_ACCESS_KEY='%s' BV_S3_SECRET_KEY=wrong '%s' get '%s' "
             "'%s' dir/obj '%s' 2>/dev/null", G.access_key, tool, G.endpoint, bucket, tmp);
    assert_int_not_equal(system(cmd), 0);
    unlink(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_file),
        cmocka_unit_test(test_bvs3),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
