/*
 * The "remote" protocol driver and layer resolver (bv/remote.h): a three-link qcow2 chain
 * whose layers are served from memory buffers through the read callback reads exactly as
 * the files do — all layers remote (with the files deleted), mixed local and remote, with
 * a cache of a few blocks (eviction, readahead, multi-block reads), from several threads
 * at once — a qcow2 check of a remote layer is clean, a failing callback fails the read with
 * its message and a later read succeeds, and a remote layer refuses a read-write open.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bv/image.h"
#include "bv/path.h"
#include "bv/remote.h"

#define VSIZE   (8u << 20)
#define NLAYERS 3

static char dir[128];
static struct bv_root *root;
static const char *const names[NLAYERS] = { "c/a.qcow2", "c/b.qcow2", "c/c.qcow2" };
static uint8_t *files[NLAYERS];          /* the layers' bytes */
static size_t file_len[NLAYERS];
static uint8_t *ref;                     /* what the chain reads as (from the files) */

/* ---- the memory objects ---- */

struct mem_obj {
    int layer;
    atomic_uint calls;
    atomic_int fail;                     /* >0: fail this many calls */
    atomic_int released;
};
static struct mem_obj objs[NLAYERS];
static unsigned remote_mask;             /* bit i: layer i is remote */
static const char *fail_name;            /* resolve fails for this layer */

static int mem_pread(void *opaque, void *buf, size_t len, uint64_t off, bv_error **errp)
{
    struct mem_obj *o = opaque;
    atomic_fetch_add(&o->calls, 1);
    assert_true(off + len <= file_len[o->layer]);
    if (atomic_load(&o->fail) > 0) {
        atomic_fetch_sub(&o->fail, 1);
        return bv_error_setf(errp, EIO, "the bucket is on fire");
    }
    memcpy(buf, files[o->layer] + off, len);
    return 0;
}

static void mem_release(void *opaque)
{
    atomic_fetch_add(&((struct mem_obj *)opaque)->released, 1);
}

static int resolve(void *opaque, const char *name, struct bv_remote_object *obj,
                   bv_error **errp)
{
    (void)opaque;
    if (fail_name && strcmp(name, fail_name) == 0)
        return bv_error_setf(errp, EACCES, "no such key for '%s'", name);
    for (int i = 0; i < NLAYERS; i++) {
        if (strcmp(name, names[i]) != 0)
            continue;
        if (!(remote_mask & (1u << i)))
            return 1;
        *obj = (struct bv_remote_object){ .length = file_len[i], .pread = mem_pread,
                                          .release = mem_release, .opaque = &objs[i] };
        return 0;
    }
    return 1;
}

/* ---- setup: the chain on disk, its bytes and its reference read ---- */

static void write_pattern(bv_node *n, uint64_t off, uint64_t len, unsigned seed)
{
    uint8_t *b = malloc(len);
    for (uint64_t i = 0; i < len; i++)
        b[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 9)) ^ seed);
    assert_int_equal(bv_node_pwrite(n, b, len, off, 0, NULL), 0);
    free(b);
}

static void make_layer(int i, const char *backing)
{
    struct bv_create_opts co = { .path = names[i], .root = root, .format = BV_FMT_QCOW2,
                                 .size = VSIZE, .backing = backing,
                                 .backing_format = backing ? BV_FMT_QCOW2 : BV_FMT_NONE };
    assert_int_equal(bv_image_create(&co, NULL), 0);
    struct bv_open_opts o = { .path = names[i], .root = root, .format = BV_FMT_QCOW2 };
    bv_node *n = NULL;
    assert_int_equal(bv_node_open(&o, &n, NULL), 0);
    srand(100 + i);
    uint64_t lo = i == 0 ? 0 : (2u << 20);             /* [0, 2 MiB): the full's alone */
    for (int k = 0; k < 24; k++) {
        uint64_t off = lo + ((uint64_t)rand() % ((VSIZE - lo) / 512)) * 512;
        uint64_t len = 512 + ((uint64_t)rand() % 300) * 512;
        if (off + len > VSIZE)
            len = VSIZE - off;
        write_pattern(n, off, len, (unsigned)(i * 50 + k));
    }
    if (i == 0)
        write_pattern(n, 0, 3u << 20, 9);          /* a long sequential run */
    if (i == 2)
        assert_int_equal(bv_node_write_zeroes(n, 64 << 10, 5u << 20, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void load_file(int i)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    file_len[i] = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    files[i] = malloc(file_len[i]);
    assert_int_equal(fread(files[i], 1, file_len[i], f), file_len[i]);
    fclose(f);
}

static void put_files(bool present)
{
    char p[256];
    for (int i = 0; i < NLAYERS; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        if (!present) {
            unlink(p);
            continue;
        }
        FILE *f = fopen(p, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(files[i], 1, file_len[i], f), file_len[i]);
        fclose(f);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/bv-remote-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char p[256];
    snprintf(p, sizeof(p), "%s/c", dir);
    mkdir(p, 0700);
    assert_int_equal(bv_root_open(dir, &root, NULL), 0);
    make_layer(0, NULL);
    make_layer(1, "a.qcow2");
    make_layer(2, "b.qcow2");
    for (int i = 0; i < NLAYERS; i++) {
        load_file(i);
        objs[i].layer = i;
    }
    struct bv_open_opts o = { .path = names[2], .root = root, .format = BV_FMT_QCOW2,
                              .read_only = true };
    bv_node *n = NULL;
    assert_int_equal(bv_node_open(&o, &n, NULL), 0);
    ref = malloc(VSIZE);
    assert_int_equal(bv_node_pread(n, ref, VSIZE, 0, NULL), 0);
    bv_node_close(n, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    put_files(false);
    for (int i = 0; i < NLAYERS; i++)
        free(files[i]);
    free(ref);
    bv_root_close(root);
    char p[256];
    snprintf(p, sizeof(p), "%s/c", dir);
    rmdir(p);
    rmdir(dir);
    return 0;
}

/* ---- helpers ---- */

static struct bv_remote_cache *small_cache(void)
{
    struct bv_remote_cache_opts co = { .block_size = 16 << 10, .max_bytes = 128 << 10,
                                       .readahead = 4, .fetchers = 3 };
    struct bv_remote_cache *c = NULL;
    assert_int_equal(bv_remote_cache_new(&co, &c, NULL), 0);
    return c;
}

static bv_node *open_chain(unsigned mask, struct bv_remote_cache *c, bool read_only,
                           int *rc, bv_error **errp)
{
    remote_mask = mask;
    for (int i = 0; i < NLAYERS; i++) {
        atomic_store(&objs[i].calls, 0);
        atomic_store(&objs[i].released, 0);
    }
    struct bv_layer_resolver lr = { .resolve = resolve, .cache = c };
    struct bv_open_opts o = { .path = names[2], .root = root, .format = BV_FMT_QCOW2,
                              .read_only = read_only, .layers = &lr };
    bv_node *n = NULL;
    *rc = bv_node_open(&o, &n, errp);
    return n;
}

static void read_all_and_compare(bv_node *n, uint64_t chunk)
{
    uint8_t *buf = malloc(chunk);
    for (uint64_t off = 0; off < VSIZE; off += chunk) {
        uint64_t len = VSIZE - off < chunk ? VSIZE - off : chunk;
        assert_int_equal(bv_node_pread(n, buf, len, off, NULL), 0);
        assert_memory_equal(buf, ref + off, len);
    }
    free(buf);
}

/* ---- tests ---- */

static void test_all_remote_files_gone(void **state)
{
    (void)state;
    put_files(false);
    struct bv_remote_cache *c = small_cache();
    int r;
    bv_node *n = open_chain(7, c, true, &r, NULL);
    assert_int_equal(r, 0);
    bv_remote_cache_unref(c);                 /* the nodes hold it now */
    read_all_and_compare(n, 256 << 10);       /* multi-block reads */
    read_all_and_compare(n, 4096 + 512);      /* sequential: readahead */
    srand(7);
    uint8_t *buf = malloc(1 << 20);
    for (int k = 0; k < 300; k++) {           /* random, past the cache size */
        uint64_t off = (uint64_t)rand() % VSIZE;
        uint64_t len = 1 + (uint64_t)rand() % (1 << 20);
        if (off + len > VSIZE)
            len = VSIZE - off;
        assert_int_equal(bv_node_pread(n, buf, len, off, NULL), 0);
        assert_memory_equal(buf, ref + off, len);
    }
    free(buf);
    for (int i = 0; i < NLAYERS; i++)
        assert_true(atomic_load(&objs[i].calls) > 0);
    struct bv_remote_cache_stats st;
    bv_remote_cache_get_stats(c, &st);      /* still alive: the nodes' references */
    assert_true(st.prefetched > 0);
    assert_true(st.hits > 0 && st.misses > 0);
    assert_true(st.peak_bytes <= (128 << 10) + 2 * (16 << 10));
    assert_true(st.bytes_fetched > VSIZE / 4);
    assert_string_equal(bv_node_filename(bv_node_backing(n)), names[1]);
    assert_int_equal(bv_node_close(n, NULL), 0);
    for (int i = 0; i < NLAYERS; i++)
        assert_int_equal(atomic_load(&objs[i].released), 1);
    put_files(true);
}

static void test_mixed(void **state)
{
    (void)state;
    static const unsigned masks[] = { 1, 2, 4, 5, 6 };
    for (size_t m = 0; m < sizeof(masks) / sizeof(masks[0]); m++) {
        struct bv_remote_cache *c = small_cache();
        int r;
        bv_node *n = open_chain(masks[m], c, true, &r, NULL);
        assert_int_equal(r, 0);
        read_all_and_compare(n, 192 << 10);
        for (int i = 0; i < NLAYERS; i++)
            assert_int_equal(atomic_load(&objs[i].calls) > 0, (masks[m] >> i) & 1);
        bv_node_close(n, NULL);
        bv_remote_cache_unref(c);
    }
}

struct reader {
    bv_node *n;
    unsigned seed;
    int bad;
};

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    uint8_t *buf = malloc(300 << 10);
    unsigned s = rd->seed;
    for (int k = 0; k < 200; k++) {
        s = s * 1103515245u + 12345u;
        uint64_t off = (uint64_t)(s >> 4) % VSIZE;
        uint64_t len = 1 + (uint64_t)(s >> 3) % (300 << 10);
        if (k % 3 == 0) {                      /* some sequential runs */
            off = ((uint64_t)k * (64 << 10)) % VSIZE;
            len = 64 << 10;
        }
        if (off + len > VSIZE)
            len = VSIZE - off;
        if (bv_node_pread(rd->n, buf, len, off, NULL) != 0 || memcmp(buf, ref + off, len))
            rd->bad++;
    }
    free(buf);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct bv_remote_cache *c = small_cache();
    int r;
    bv_node *n = open_chain(7, c, true, &r, NULL);
    assert_int_equal(r, 0);
    pthread_t t[4];
    struct reader rd[4];
    for (int i = 0; i < 4; i++) {
        rd[i] = (struct reader){ n, 17u * (unsigned)i + 1, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, reader_main, &rd[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(rd[i].bad, 0);
    }
    struct bv_remote_cache_stats st;
    bv_remote_cache_get_stats(c, &st);
    assert_true(st.peak_bytes <= (128 << 10) + 6 * (16 << 10));
    bv_node_close(n, NULL);
    bv_remote_cache_unref(c);
}

static void test_check_and_compare(void **state)
{
    (void)state;
    struct bv_remote_cache *c = small_cache();
    struct bv_layer_resolver lr = { .resolve = resolve, .cache = c };
    remote_mask = 7;
    for (int i = 0; i < NLAYERS; i++) {
        struct bv_open_opts o = { .path = names[i], .root = root, .format = BV_FMT_QCOW2,
                                  .read_only = true, .no_backing = true, .layers = &lr };
        bv_node *n = NULL;
        assert_int_equal(bv_node_open(&o, &n, NULL), 0);
        struct bv_check_result cr;
        memset(&cr, 0, sizeof(cr));
        assert_int_equal(bv_image_check(n, false, &cr, NULL), 0);
        assert_int_equal(cr.corruptions, 0);
        assert_int_equal(cr.check_errors, 0);
        assert_int_equal(cr.leaks, 0);
        bv_check_result_free(&cr);
        struct bv_image_info info;
        assert_int_equal(bv_node_info(n, &info, NULL), 0);
        assert_int_equal(info.virtual_size, VSIZE);
        assert_int_equal(info.actual_size, file_len[i]);
        bv_node_close(n, NULL);
    }
    int r;
    bv_node *remote = open_chain(7, c, true, &r, NULL);
    assert_int_equal(r, 0);
    struct bv_open_opts o = { .path = names[2], .root = root, .format = BV_FMT_QCOW2,
                              .read_only = true };
    bv_node *local = NULL;
    assert_int_equal(bv_node_open(&o, &local, NULL), 0);
    bool same = false;
    uint64_t first = 0;
    assert_int_equal(bv_image_compare(local, remote, true, &same, &first, NULL), 0);
    assert_true(same);
    bv_node_close(local, NULL);
    bv_node_close(remote, NULL);
    bv_remote_cache_unref(c);
}

static void test_errors(void **state)
{
    (void)state;
    struct bv_remote_cache *c = small_cache();
    bv_error *e = NULL;
    int r;
    bv_node *n = open_chain(7, c, false, &r, &e);       /* read-write: refused */
    assert_int_equal(r, -EROFS);
    assert_null(n);
    assert_non_null(strstr(e->msg, "read-only"));
    bv_error_free(e);
    e = NULL;
    assert_int_equal(atomic_load(&objs[2].released), 1);
    n = open_chain(7, c, true, &r, NULL);
    assert_int_equal(r, 0);
    uint8_t buf[4096];
    atomic_store(&objs[0].fail, 1000);                  /* the full's object fails */
    r = bv_node_pread(n, buf, sizeof(buf), 512u << 10, &e); /* data only the full holds */
    assert_int_equal(r, -EIO);
    assert_non_null(e);
    assert_non_null(strstr(e->msg, "the bucket is on fire"));
    bv_error_free(e);
    e = NULL;
    atomic_store(&objs[0].fail, 0);
    assert_int_equal(bv_node_pread(n, buf, sizeof(buf), 512u << 10, NULL), 0);
    assert_memory_equal(buf, ref + (512u << 10), sizeof(buf));
    bv_node_close(n, NULL);
    /* the middle layer's resolve fails: the open fails, the top's object is released */
    fail_name = names[1];
    n = open_chain(7, c, true, &r, &e);
    fail_name = NULL;
    assert_int_equal(r, -EACCES);
    assert_null(n);
    assert_non_null(strstr(e->msg, "no such key"));
    bv_error_free(e);
    e = NULL;
    assert_int_equal(atomic_load(&objs[2].released), 1);
    assert_int_equal(atomic_load(&objs[1].released), 0);
    bv_remote_cache_unref(c);
    struct bv_remote_cache_opts bad = { .block_size = 3000 };
    assert_int_equal(bv_remote_cache_new(&bad, &c, NULL), -EINVAL);
    struct bv_layer_resolver nocache = { .resolve = resolve };
    struct bv_open_opts o = { .path = names[2], .root = root, .read_only = true,
                              .layers = &nocache };
    assert_int_equal(bv_node_open(&o, &n, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_remote_files_gone),
        cmocka_unit_test(test_mixed),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_check_and_compare),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
