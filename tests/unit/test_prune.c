/*
 * bv_prune_merge (core/job/prune.c) on real qcow2 files, no daemon: the
 * merged image M (over P) of a child C over a link L over P must read as C
 * did, allocate only what L or C decided (what neither decides falls
 * through to P), and keep zero ranges as zero clusters without data.
 *
 *  - scripted layers: data, partial clusters, zero writes hiding P's and
 *    L's data, the disk's last cluster; L as the full (M without backing);
 *  - random layers (seeded): 300 writes and zero writes of 512 B .. 192 KiB
 *    on each of P, L and C, merged and compared, 8 seeds;
 *  - compressed output; refusals (no backing to merge, size mismatch).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bv/prune.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)
#define SIZE (4 * MIB + 64 * KIB)

static char dir[64];

static const char *path_of(const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static void create_image(const char *name, const char *backing)
{
    char path[128];
    struct bv_create_opts co = { .path = path_of(name, path, sizeof(path)),
                                 .format = BV_FMT_QCOW2, .size = SIZE, .backing = backing,
                                 .backing_format = backing ? BV_FMT_QCOW2 : BV_FMT_NONE };
    bv_error *err = NULL;
    if (bv_image_create(&co, &err) < 0)
        fail_msg("create %s: %s", name, err ? err->msg : "?");
}

static bv_node *open_image(const char *name, bool read_only)
{
    char path[128];
    struct bv_open_opts oo = { .path = path_of(name, path, sizeof(path)),
                               .format = BV_FMT_QCOW2, .read_only = read_only };
    bv_node *n = NULL;
    bv_error *err = NULL;
    if (bv_node_open(&oo, &n, &err) < 0)
        fail_msg("open %s: %s", name, err ? err->msg : "?");
    return n;
}

static void put(bv_node *n, uint64_t off, uint64_t len, int pattern)
{
    bv_error *err = NULL;
    int r;
    if (pattern < 0) {
        r = bv_node_write_zeroes(n, len, off, pattern == -2 ? BV_ZERO_MAY_UNMAP : 0, &err);
    } else {
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        memset(buf, pattern, len);
        r = bv_node_pwrite(n, buf, len, off, 0, &err);
        free(buf);
    }
    if (r < 0)
        fail_msg("write [%llu,+%llu): %s", (unsigned long long)off, (unsigned long long)len,
                 err ? err->msg : "?");
}

struct op {
    uint64_t off, len;
    int pattern;                 /* byte, -1 zeroes, -2 zeroes that may unmap */
};

static void layer(const char *name, const char *backing, const struct op *ops, size_t n)
{
    create_image(name, backing);
    bv_node *l = open_image(name, false);
    for (size_t i = 0; i < n; i++)
        put(l, ops[i].off, ops[i].len, ops[i].pattern);
    assert_int_equal(bv_node_close(l, NULL), 0);
}

/* Merge child (over its backing) into out (created over out_backing). */
static void merge(const char *child, const char *out, const char *out_backing, bool compress)
{
    create_image(out, out_backing);
    bv_node *top = open_image(child, true);
    bv_node *m = open_image(out, false);
    struct bv_prune_merge_opts o = { .top = top, .out = m, .compress = compress };
    bv_error *err = NULL;
    if (bv_prune_merge(&o, &err) < 0)
        fail_msg("merge: %s", err ? err->msg : "?");
    assert_int_equal(bv_node_close(m, NULL), 0);
    bv_node_close(top, NULL);
}

/* out reads as child; its own layer allocates exactly what child's top two
 * layers decide, and their zero ranges are zero without data. */
static void check_merged(const char *child, const char *out)
{
    bv_node *c = open_image(child, true), *m = open_image(out, true);
    bool same = false;
    uint64_t first = 0;
    assert_int_equal(bv_image_compare(c, m, true, &same, &first, NULL), 0);
    if (!same)
        fail_msg("%s differs from %s at %llu", out, child, (unsigned long long)first);
    bv_node *l = bv_node_backing(c);
    for (uint64_t off = 0; off < SIZE; off += 512) {
        struct bv_block_status a, b, d;
        assert_int_equal(bv_node_block_status(c, off, 512, &a, NULL), 0);
        assert_int_equal(bv_node_block_status(l, off, 512, &b, NULL), 0);
        assert_int_equal(bv_node_block_status(m, off, 512, &d, NULL), 0);
        bool decided = (a.flags | b.flags) & BV_BS_ALLOCATED;
        int z = a.flags & BV_BS_ALLOCATED ? a.flags : b.flags;
        /* without a backing file a zero range may as well stay unallocated */
        bool may_skip = decided && (z & BV_BS_ZERO) && !bv_node_backing(m);
        if (decided != !!(d.flags & BV_BS_ALLOCATED) && !may_skip)
            fail_msg("%s at %llu: allocated %d, the child's two layers %d", out,
                     (unsigned long long)off, !!(d.flags & BV_BS_ALLOCATED), decided);
        if (decided && (z & BV_BS_ZERO) && (d.flags & BV_BS_DATA))
            fail_msg("%s at %llu: a zero range became data", out, (unsigned long long)off);
    }
    bv_node_close(c, NULL);
    bv_node_close(m, NULL);
}

/* ---- tests ---------------------------------------------------------------- */

static const struct op p_ops[] = {
    { 0, 2 * MIB, 0x11 }, { 3 * MIB, 512 * KIB, 0x12 }, { SIZE - 64 * KIB, 64 * KIB, 0x13 },
};
static const struct op l_ops[] = {
    { 64 * KIB, 128 * KIB, 0x21 }, { 3 * MIB, 64 * KIB, -1 }, { 3 * MIB + 128 * KIB, 64 * KIB, -2 },
    { 2 * MIB + 4 * KIB, 4 * KIB, 0x22 }, { SIZE - 512, 512, 0x23 },
};
static const struct op c_ops[] = {
    { 64 * KIB + 4 * KIB, 4 * KIB, 0x31 }, { 3 * MIB, 4 * KIB, 0x32 }, { 0, 64 * KIB, -1 },
    { 1 * MIB, 1 * MIB, -2 }, { 2 * MIB + 64 * KIB, 64 * KIB, 0x33 },
};

static void test_scripted(void **state)
{
    (void)state;
    layer("p.qcow2", NULL, p_ops, 3);
    layer("l.qcow2", "p.qcow2", l_ops, 5);
    layer("c.qcow2", "l.qcow2", c_ops, 5);
    merge("c.qcow2", "m.qcow2", "p.qcow2", false);
    check_merged("c.qcow2", "m.qcow2");
}

/* L is the full: M stands alone. */
static void test_link_is_full(void **state)
{
    (void)state;
    layer("l0.qcow2", NULL, l_ops, 5);
    layer("c0.qcow2", "l0.qcow2", c_ops, 5);
    merge("c0.qcow2", "m0.qcow2", NULL, false);
    check_merged("c0.qcow2", "m0.qcow2");
}

static void test_compressed(void **state)
{
    (void)state;
    layer("pc.qcow2", NULL, p_ops, 3);
    layer("lc.qcow2", "pc.qcow2", l_ops, 5);
    layer("cc.qcow2", "lc.qcow2", c_ops, 5);
    merge("cc.qcow2", "mc.qcow2", "pc.qcow2", true);
    check_merged("cc.qcow2", "mc.qcow2");
    bv_node *m = open_image("mc.qcow2", true);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(m, 64 * KIB, 64 * KIB, &bs, NULL), 0);
    assert_true(bs.flags & BV_BS_COMPRESSED);
    struct bv_check_result res;
    memset(&res, 0, sizeof(res));
    assert_int_equal(bv_image_check(m, false, &res, NULL), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    bv_check_result_free(&res);
    bv_node_close(m, NULL);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void random_ops(struct op *ops, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t len = (rng_next(s) % 384 + 1) * 512;
        uint64_t off = rng_next(s) % (SIZE / 512) * 512;
        if (off + len > SIZE)
            len = SIZE - off;
        int kind = (int)(rng_next(s) % 8);
        ops[i] = (struct op){ off, len, kind == 0 ? -1 : kind == 1 ? -2 : (int)(rng_next(s) & 0xff) };
    }
}

static void test_random(void **state)
{
    (void)state;
    struct op ops[300];
    for (uint64_t seed = 1; seed <= 8; seed++) {
        uint64_t s = seed * 0x9e3779b97f4a7c15ull;
        char p[32], l[32], c[32], m[32];
        snprintf(p, sizeof(p), "rp%llu.qcow2", (unsigned long long)seed);
        snprintf(l, sizeof(l), "rl%llu.qcow2", (unsigned long long)seed);
        snprintf(c, sizeof(c), "rc%llu.qcow2", (unsigned long long)seed);
        snprintf(m, sizeof(m), "rm%llu.qcow2", (unsigned long long)seed);
        random_ops(ops, 300, &s);
        layer(p, NULL, ops, 300);
        random_ops(ops, 300, &s);
        layer(l, p, ops, 300);
        random_ops(ops, 300, &s);
        layer(c, l, ops, 300);
        merge(c, m, p, false);
        check_merged(c, m);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    create_image("alone.qcow2", NULL);
    create_image("out.qcow2", NULL);
    bv_node *a = open_image("alone.qcow2", true), *o = open_image("out.qcow2", false);
    struct bv_prune_merge_opts mo = { .top = a, .out = o };
    assert_int_equal(bv_prune_merge(&mo, NULL), -EINVAL);
    bv_node_close(a, NULL);
    bv_node_close(o, NULL);

    char path[128];
    struct bv_create_opts co = { .path = path_of("small.qcow2", path, sizeof(path)),
                                 .format = BV_FMT_QCOW2, .size = MIB };
    assert_int_equal(bv_image_create(&co, NULL), 0);
    layer("rl.qcow2", NULL, l_ops, 1);
    layer("rc.qcow2", "rl.qcow2", c_ops, 1);
    bv_node *c = open_image("rc.qcow2", true), *s = open_image("small.qcow2", false);
    mo = (struct bv_prune_merge_opts){ .top = c, .out = s };
    assert_int_equal(bv_prune_merge(&mo, NULL), -EINVAL);
    bv_node_close(c, NULL);
    bv_node_close(s, NULL);
}

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/bv-prune-XXXXXX", tmp ? tmp : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scripted),
        cmocka_unit_test(test_link_is_full),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests_name("prune", tests, setup, teardown);
}
