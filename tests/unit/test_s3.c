/*
 * The S3 client (service/s3) against a real single-node Ceph RADOS Gateway (started once for
 * the file by tests/support/ceph-rgw.sh, or the one named by BV_S3_ENDPOINT…; skipped, 77,
 * when none can be had): bucket check and create, wrong keys, PUT/HEAD/GET/ranged GET/DELETE,
 * a multipart upload of 5 parts (3 in flight) read back byte for byte across part boundaries,
 * listing with a prefix and keys that need escaping, an unreachable endpoint after retries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rgw_env.h"
#include "s3/s3.h"

static struct rgw_env G;
static char bucket[64];

static struct bv_s3 *client(const char *bkt, const char *secret, int retries)
{
    struct bv_s3_config cfg = {
        .endpoint = G.endpoint, .bucket = bkt, .access_key = G.access_key,
        .secret_key = secret ? secret : G.secret_key, .part_size = 5u << 20, .parallel = 3,
        .retries = retries,
    };
    struct bv_s3 *s3 = NULL;
    bv_error *err = NULL;
    int ret = bv_s3_new(&cfg, &s3, &err);
    if (ret)
        fprintf(stderr, "bv_s3_new: %s\n", err->msg);
    assert_int_equal(ret, 0);
    return s3;
}

static int setup(void **state)
{
    (void)state;
    int rc = rgw_env_start(&G);
    if (rc == 77)
        exit(77);
    snprintf(bucket, sizeof(bucket), "bv-unit-%d", (int)getpid());
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    rgw_env_stop(&G);
    return 0;
}

static void test_bucket_and_credentials(void **state)
{
    (void)state;
    bv_error *err = NULL;
    struct bv_s3 *bad = client(bucket, "not-the-secret", 0);
    assert_int_equal(bv_s3_check_bucket(bad, true, false, &err), -EACCES);
    assert_non_null(strstr(err->msg, "the remote refused the credentials"));
    bv_error_free(err);
    err = NULL;
    bv_s3_free(bad);

    struct bv_s3 *s3 = client(bucket, NULL, 0);
    assert_int_equal(bv_s3_check_bucket(s3, false, false, &err), -ENOENT);
    assert_non_null(strstr(err->msg, "does not exist"));
    bv_error_free(err);
    err = NULL;
    assert_int_equal(bv_s3_check_bucket(s3, true, false, &err), 0);
    assert_int_equal(bv_s3_check_bucket(s3, false, false, &err), 0);
    bv_s3_free(s3);

    struct bv_s3_config cfg = {.endpoint = "ftp://x", .bucket = "b", .access_key = "a",
                               .secret_key = "s"};
    struct bv_s3 *none = NULL;
    assert_int_equal(bv_s3_new(&cfg, &none, &err), -EINVAL);
    assert_null(none);
    bv_error_free(err);
}

static void test_objects(void **state)
{
    (void)state;
    bv_error *err = NULL;
    struct bv_s3 *s3 = client(bucket, NULL, 2);
    const char text[] = "hello, blockvault & S3 <remote>";
    assert_int_equal(bv_s3_put(s3, "dir/a b&c.txt", text, strlen(text), &err), 0);
    uint64_t size = 0;
    assert_int_equal(bv_s3_head(s3, "dir/a b&c.txt", &size, &err), 0);
    assert_int_equal(size, strlen(text));
    char part[5] = "";
    assert_int_equal(bv_s3_get_range(s3, "dir/a b&c.txt", 7, 4, part, &err), 0);
    assert_memory_equal(part, "bloc", 4);
    char *all = NULL;
    size_t len = 0;
    assert_int_equal(bv_s3_get(s3, "dir/a b&c.txt", 1024, &all, &len, &err), 0);
    assert_int_equal(len, strlen(text));
    assert_string_equal(all, text);
    free(all);
    assert_int_equal(bv_s3_get(s3, "dir/a b&c.txt", 8, &all, &len, &err), -EFBIG);
    bv_error_free(err);
    err = NULL;
    /* a range past the end is refused by the remote (416) */
    assert_true(bv_s3_get_range(s3, "dir/a b&c.txt", 100, 4, part, &err) < 0);
    bv_error_free(err);
    err = NULL;
    assert_int_equal(bv_s3_head(s3, "dir/missing", &size, NULL), -ENOENT);
    assert_int_equal(bv_s3_delete(s3, "dir/a b&c.txt", &err), 0);
    assert_int_equal(bv_s3_head(s3, "dir/a b&c.txt", &size, NULL), -ENOENT);
    bv_s3_free(s3);
}

static void count_bytes(void *opaque, uint64_t bytes)
{
    __atomic_fetch_add((uint64_t *)opaque, bytes, __ATOMIC_RELAXED);
}

static void test_multipart(void **state)
{
    (void)state;
    bv_error *err = NULL;
    struct bv_s3 *s3 = client(bucket, NULL, 2);
    size_t n = (23u << 20) + 12345;   /* 5 parts of 5 MiB, the last short */
    unsigned char *data = malloc(n);
    assert_non_null(data);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        data[i] = (unsigned char)x;
    }
    char path[] = "/tmp/bv-s3-mp.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    uint64_t done = 0;
    int ret = bv_s3_put_file(s3, "links/big.qcow2", fd, n, count_bytes, &done, &err);
    if (ret)
        fprintf(stderr, "put_file: %s\n", err->msg);
    assert_int_equal(ret, 0);
    assert_int_equal(done, n);      /* every part reported once */
    uint64_t size = 0;
    assert_int_equal(bv_s3_head(s3, "links/big.qcow2", &size, &err), 0);
    assert_int_equal(size, n);
    unsigned char *back = malloc(n);
    assert_non_null(back);
    size_t chunk = 3u << 20;   /* not a multiple of the part size: ranges cross parts */
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        assert_int_equal(bv_s3_get_range(s3, "links/big.qcow2", off, len, back + off, &err), 0);
    }
    assert_memory_equal(back, data, n);
    free(back);
    free(data);
    close(fd);
    bv_s3_free(s3);
}

struct seen { int count; uint64_t bytes; bool amp; };

static int on_key(void *opaque, const char *key, uint64_t size)
{
    struct seen *s = opaque;
    s->count++;
    s->bytes += size;
    if (!strcmp(key, "list/x&y <z>"))
        s->amp = true;
    return 0;
}

static int stop_at_one(void *opaque, const char *key, uint64_t size)
{
    (void)key;
    (void)size;
    (*(int *)opaque)++;
    return 7;
}

static void test_list(void **state)
{
    (void)state;
    bv_error *err = NULL;
    struct bv_s3 *s3 = client(bucket, NULL, 2);
    assert_int_equal(bv_s3_put(s3, "list/1", "a", 1, &err), 0);
    assert_int_equal(bv_s3_put(s3, "list/2", "bb", 2, &err), 0);
    assert_int_equal(bv_s3_put(s3, "list/x&y <z>", "ccc", 3, &err), 0);
    assert_int_equal(bv_s3_put(s3, "other/3", "dddd", 4, &err), 0);
    struct seen s = {0};
    assert_int_equal(bv_s3_list(s3, "list/", on_key, &s, &err), 0);
    assert_int_equal(s.count, 3);
    assert_int_equal(s.bytes, 6);
    assert_true(s.amp);
    int calls = 0;
    assert_int_equal(bv_s3_list(s3, "list/", stop_at_one, &calls, &err), 7);
    assert_int_equal(calls, 1);
    bv_s3_free(s3);
}

static void test_unreachable(void **state)
{
    (void)state;
    /* a port nobody listens on: refused, retried twice with backoff, then a sentence */
    struct bv_s3_config cfg = {.endpoint = "http://127.0.0.1:1", .bucket = "b",
                               .access_key = "a", .secret_key = "s", .retries = 2};
    struct bv_s3 *s3 = NULL;
    bv_error *err = NULL;
    assert_int_equal(bv_s3_new(&cfg, &s3, &err), 0);
    assert_int_equal(bv_s3_check_bucket(s3, false, false, &err), -EHOSTUNREACH);
    assert_non_null(strstr(err->msg, "cannot reach the remote at http://127.0.0.1:1"));
    bv_error_free(err);
    bv_s3_free(s3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_and_credentials),
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_multipart),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
