/*
 * bv_image_compare_ex / bv_image_compare (core/image/compare.c): the
 * overlapped compare (two threads claiming whole items, block status
 * skipping zeros) against a byte-by-byte model of what each side reads as.
 * Cases: identical over many items, a difference at the very first and the
 * very last byte, data on one side inside a zero (or unallocated) region of
 * the other, across the end of a shorter backing file, the full report
 * (merged extents across item boundaries, the cap, byte counts, samples),
 * size mismatches strict and not, cancellation and progress.  Every model
 * check runs under several tunings (one thread, no direct reads, items of a
 * few sectors on a small ring, 1 MiB items).  Direct reads (bv_node_pread_host
 * at the host offsets block status gives): data in every layer of a backing
 * chain, compressed clusters read through the node, a blkdebug filter and a
 * blkverify node falling back to reads through the node.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bv/blkdebug.h"
#include "bv/blkverify.h"
#include "bv/image.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static char dir[128];

static const char *tp(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
    return buf[k];
}

static void random_fill(uint8_t *p, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static void create(const char *name, enum bv_format f, uint64_t size, const char *backing)
{
    bv_error *err = NULL;
    struct bv_create_opts o = { .path = tp(name), .format = f, .size = size,
                                .backing = backing,
                                .backing_format = backing ? BV_FMT_QCOW2 : BV_FMT_NONE };
    int r = bv_image_create(&o, &err);
    if (r)
        fprintf(stderr, "create %s: %s\n", name, err->msg);
    assert_int_equal(r, 0);
}

static bv_node *open_img(const char *name, bool ro)
{
    bv_node *n = NULL;
    bv_error *err = NULL;
    struct bv_open_opts o = { .path = tp(name), .read_only = ro };
    int r = bv_node_open(&o, &n, &err);
    if (r)
        fprintf(stderr, "open %s: %s\n", name, err->msg);
    assert_int_equal(r, 0);
    return n;
}

static void put(const char *name, const uint8_t *data, uint64_t len, uint64_t off)
{
    bv_node *n = open_img(name, false);
    assert_int_equal(bv_node_pwrite(n, data, len, off, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void zero(const char *name, uint64_t len, uint64_t off)
{
    bv_node *n = open_img(name, false);
    assert_int_equal(bv_node_write_zeroes(n, len, off, BV_ZERO_MAY_UNMAP, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

/* An image named name holding exactly shadow (size bytes). */
static void make(const char *name, enum bv_format f, const uint8_t *shadow, uint64_t size)
{
    create(name, f, size, NULL);
    put(name, shadow, size, 0);
}

/* ---- the model: what a full compare of two shadows must report ---- */

struct model {
    uint64_t first_byte, first_sector, mismatched, n_extents;
    struct bv_compare_extent ext[64];
};

static uint8_t at(const uint8_t *s, uint64_t n, uint64_t i)
{
    return i < n ? s[i] : 0;
}

static void model(const uint8_t *a, uint64_t na, const uint8_t *b, uint64_t nb,
                  struct model *m)
{
    uint64_t size = na > nb ? na : nb;
    memset(m, 0, sizeof(*m));
    m->first_byte = m->first_sector = UINT64_MAX;
    for (uint64_t sec = 0; sec < size; sec += 512) {
        uint64_t end = sec + 512 < size ? sec + 512 : size, diff = 0;
        for (uint64_t i = sec; i < end; i++) {
            if (at(a, na, i) == at(b, nb, i))
                continue;
            if (m->first_byte == UINT64_MAX) {
                m->first_byte = i;
                m->first_sector = sec;
            }
            diff++;
        }
        if (!diff)
            continue;
        m->mismatched += diff;
        struct bv_compare_extent *last = m->n_extents ? &m->ext[m->n_extents - 1] : NULL;
        if (last && last->offset + last->length == sec)
            last->length += end - sec;
        else if (m->n_extents++ < 64)
            m->ext[m->n_extents - 1] = (struct bv_compare_extent){ sec, end - sec };
    }
}

/* The tunings every model check runs under: the defaults, one thread, no
 * direct reads, items of a few sectors racing on a small ring, 1 MiB items. */
static const struct bv_compare_opts tunings[] = {
    { .chunk = 0 },
    { .no_helper = true },
    { .no_direct = true },
    { .chunk = 4096, .slots = 2 },
    { .chunk = 1536, .slots = 3 },
    { .chunk = MiB, .slots = 4 },
};
#define N_TUNINGS (sizeof(tunings) / sizeof(tunings[0]))

static int compare_tuned(const char *x, const char *y, size_t max_extents,
                         const struct bv_compare_opts *t, struct bv_compare_report *rep)
{
    bv_node *a = open_img(x, true), *b = open_img(y, true);
    struct bv_compare_opts o = *t;
    o.full = true;
    o.max_extents = max_extents;
    int r = bv_image_compare_ex(a, b, &o, rep, NULL);
    bv_node_close(a, NULL);
    bv_node_close(b, NULL);
    return r;
}

static int compare_full(const char *x, const char *y, size_t max_extents,
                        struct bv_compare_report *rep)
{
    return compare_tuned(x, y, max_extents, &tunings[0], rep);
}

/* The full report of x against y matches the model m of shadows a and b. */
static void expect_report(const char *x, const char *y, const struct bv_compare_opts *t,
                          const struct model *m, const uint8_t *a, uint64_t na,
                          const uint8_t *b, uint64_t nb)
{
    struct bv_compare_report rep;
    assert_int_equal(compare_tuned(x, y, 64, t, &rep), 0);
    assert_int_equal(rep.identical, m->first_byte == UINT64_MAX);
    assert_int_equal(rep.first_diff, m->first_sector);
    assert_int_equal(rep.first_diff_byte, m->first_byte);
    assert_int_equal(rep.mismatched_bytes, m->mismatched);
    assert_int_equal(rep.total_extents, m->n_extents);
    assert_int_equal(rep.n_extents, m->n_extents < 64 ? m->n_extents : 64);
    for (size_t i = 0; i < rep.n_extents; i++) {
        assert_int_equal(rep.extents[i].offset, m->ext[i].offset);
        assert_int_equal(rep.extents[i].length, m->ext[i].length);
    }
    if (!rep.identical) {
        uint64_t fb = m->first_byte;
        assert_true(rep.sample_len > 0);
        for (uint32_t i = 0; i < rep.sample_len; i++) {
            assert_int_equal(rep.sample_a[i], at(a, na, fb + i));
            assert_int_equal(rep.sample_b[i], at(b, nb, fb + i));
        }
    }
    assert_int_equal(rep.scanned, na > nb ? na : nb);
    assert_true(rep.bytes_direct <= rep.bytes_read);
    if (t->no_direct)
        assert_int_equal(rep.bytes_direct, 0);
    bv_compare_report_free(&rep);
}

/* x and y (images of the shadows a and b) compare as the model says, in a full
 * scan and in a stopping one (both directions), under every tuning. */
static void expect_model(const char *x, const char *y, const uint8_t *a, uint64_t na,
                         const uint8_t *b, uint64_t nb)
{
    struct model m;
    model(a, na, b, nb, &m);
    for (size_t t = 0; t < N_TUNINGS; t++) {
        expect_report(x, y, &tunings[t], &m, a, na, b, nb);
        for (int dir_ = 0; dir_ < 2; dir_++) {
            bv_node *p = open_img(dir_ ? y : x, true), *q = open_img(dir_ ? x : y, true);
            struct bv_compare_report rep;
            assert_int_equal(bv_image_compare_ex(p, q, &tunings[t], &rep, NULL), 0);
            assert_int_equal(rep.identical, m.first_byte == UINT64_MAX);
            assert_int_equal(rep.first_diff, m.first_sector);
            bv_compare_report_free(&rep);
            bool same = false;
            uint64_t first = 0;
            assert_int_equal(bv_image_compare(p, q, false, &same, &first, NULL), 0);
            assert_int_equal(same, m.first_byte == UINT64_MAX);
            assert_int_equal(first, m.first_sector);
            bv_node_close(p, NULL);
            bv_node_close(q, NULL);
        }
    }
}

/* ---- cases ---- */

#define BIG (3 * MiB + 4 * KiB + 512)   /* many items, not a multiple of any of them */

static void test_identical_many_items(void **state)
{
    (void)state;
    uint8_t *d = malloc(BIG);
    random_fill(d, BIG, 1);
    make("id.raw", BV_FMT_RAW, d, BIG);
    make("id.qcow2", BV_FMT_QCOW2, d, BIG);
    expect_model("id.raw", "id.qcow2", d, BIG, d, BIG);
    struct bv_compare_report rep;
    assert_int_equal(compare_full("id.qcow2", "id.raw", 0, &rep), 0);
    assert_true(rep.identical);
    assert_int_equal(rep.bytes_read, 2ull * BIG);
    assert_int_equal(rep.bytes_skipped, 0);
    bv_compare_report_free(&rep);
    free(d);
}

static void test_first_and_last_byte(void **state)
{
    (void)state;
    uint8_t *a = malloc(BIG), *b = malloc(BIG);
    random_fill(a, BIG, 2);
    make("fl-a.qcow2", BV_FMT_QCOW2, a, BIG);
    static const uint64_t where[] = { 0, BIG - 1, 256 * KiB - 1, 256 * KiB, 2 * MiB + 511 };
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        memcpy(b, a, BIG);
        b[where[i]] ^= 0x5a;
        make("fl-b.raw", BV_FMT_RAW, b, BIG);
        expect_model("fl-a.qcow2", "fl-b.raw", a, BIG, b, BIG);
    }
    free(a);
    free(b);
}

/* One side zero (written zeros, or never written) where the other has data. */
static void test_zero_region_vs_data(void **state)
{
    (void)state;
    const uint64_t size = 4 * MiB;
    uint8_t *a = malloc(size), *b = malloc(size);
    random_fill(a, size, 3);
    memset(a + MiB, 0, MiB);                     /* a: zero clusters at [1M, 2M) */
    memset(a + 3 * MiB, 0, MiB);                 /* a: never written at [3M, 4M) */
    create("zr-a.qcow2", BV_FMT_QCOW2, size, NULL);
    put("zr-a.qcow2", a, 3 * MiB, 0);
    zero("zr-a.qcow2", MiB, MiB);
    memcpy(b, a, size);
    make("zr-b.qcow2", BV_FMT_QCOW2, b, size);   /* b: the same bytes, all allocated */
    expect_model("zr-a.qcow2", "zr-b.qcow2", a, size, b, size);

    b[MiB + 300 * KiB + 7] = 1;                  /* data inside a's zero clusters */
    b[3 * MiB + 4095] = 2;                       /* and inside a's unallocated part */
    put("zr-b.qcow2", b + MiB + 300 * KiB + 7, 1, MiB + 300 * KiB + 7);
    put("zr-b.qcow2", b + 3 * MiB + 4095, 1, 3 * MiB + 4095);
    expect_model("zr-a.qcow2", "zr-b.qcow2", a, size, b, size);

    /* the zero side is not read */
    struct bv_compare_report rep;
    assert_int_equal(compare_full("zr-a.qcow2", "zr-b.qcow2", 4, &rep), 0);
    assert_true(rep.bytes_read < 2 * size);
    bv_compare_report_free(&rep);
    free(a);
    free(b);
}

static void test_all_zero_not_read(void **state)
{
    (void)state;
    create("z1.qcow2", BV_FMT_QCOW2, 64 * MiB, NULL);
    create("z2.qcow2", BV_FMT_QCOW2, 64 * MiB, NULL);
    zero("z2.qcow2", 8 * MiB, 16 * MiB);
    struct bv_compare_report rep;
    assert_int_equal(compare_full("z1.qcow2", "z2.qcow2", 4, &rep), 0);
    assert_true(rep.identical);
    assert_int_equal(rep.bytes_read, 0);
    assert_int_equal(rep.bytes_skipped, 64 * MiB);
    assert_int_equal(rep.scanned, 64 * MiB);
    bv_compare_report_free(&rep);
}

/* An overlay longer than its backing file reads zeros past the backing end. */
static void test_across_backing_end(void **state)
{
    (void)state;
    const uint64_t bsize = 2 * MiB + 64 * KiB, size = 4 * MiB;
    uint8_t *ref = calloc(1, size);
    random_fill(ref, bsize, 4);
    make("be-base.qcow2", BV_FMT_QCOW2, ref, bsize);
    create("be-top.qcow2", BV_FMT_QCOW2, size, "be-base.qcow2");
    uint8_t patch[1000];
    random_fill(patch, sizeof(patch), 5);       /* top: one write straddling the base end */
    memcpy(ref + bsize - 500, patch, sizeof(patch));
    put("be-top.qcow2", patch, sizeof(patch), bsize - 500);
    make("be-ref.raw", BV_FMT_RAW, ref, size);
    expect_model("be-top.qcow2", "be-ref.raw", ref, size, ref, size);

    uint8_t *other = malloc(size);
    static const uint64_t where[] = { bsize - 501, bsize - 1, bsize, bsize + 500, bsize + 4096 };
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        memcpy(other, ref, size);
        other[where[i]] ^= 0x80;
        make("be-other.raw", BV_FMT_RAW, other, size);
        expect_model("be-top.qcow2", "be-other.raw", ref, size, other, size);
    }
    free(other);
    free(ref);
}

static void test_full_report_and_cap(void **state)
{
    (void)state;
    const uint64_t size = 2 * MiB;
    uint8_t *a = malloc(size), *b = malloc(size);
    random_fill(a, size, 6);
    memcpy(b, a, size);
    b[10] ^= 1;                                  /* sector 0 */
    b[600] ^= 1;                                 /* sector 1: merges with 0 */
    b[256 * KiB - 1] ^= 1;                       /* across an item boundary: one extent */
    b[256 * KiB] ^= 1;
    memset(b + MiB, 0xee, 3000);                 /* a run of sectors, many bytes */
    b[size - 1] ^= 0xff;
    make("fr-a.raw", BV_FMT_RAW, a, size);
    make("fr-b.qcow2", BV_FMT_QCOW2, b, size);
    expect_model("fr-a.raw", "fr-b.qcow2", a, size, b, size);

    struct model m;
    model(a, size, b, size, &m);
    assert_int_equal(m.n_extents, 4);
    struct bv_compare_report rep;
    assert_int_equal(compare_full("fr-a.raw", "fr-b.qcow2", 2, &rep), 0);
    assert_int_equal(rep.n_extents, 2);          /* capped, still all counted */
    assert_int_equal(rep.total_extents, 4);
    assert_int_equal(rep.extents[1].offset, 256 * KiB - 512);
    assert_int_equal(rep.extents[1].length, 1024);
    assert_int_equal(rep.mismatched_bytes, m.mismatched);
    bv_compare_report_free(&rep);
    free(a);
    free(b);
}

static void test_sizes(void **state)
{
    (void)state;
    const uint64_t small = MiB, large = MiB + 512 * KiB;
    uint8_t *a = malloc(small), *b = calloc(1, large);
    random_fill(a, small, 7);
    memcpy(b, a, small);
    make("sz-a.qcow2", BV_FMT_QCOW2, a, small);
    make("sz-b.raw", BV_FMT_RAW, b, large);
    expect_model("sz-a.qcow2", "sz-b.raw", a, small, b, large);   /* zero tail: same */

    bv_node *x = open_img("sz-a.qcow2", true), *y = open_img("sz-b.raw", true);
    struct bv_compare_opts strict = { .strict = true };
    struct bv_compare_report rep;
    assert_int_equal(bv_image_compare_ex(x, y, &strict, &rep, NULL), 0);
    assert_false(rep.identical);
    assert_true(rep.size_mismatch);
    assert_int_equal(rep.first_diff, small);
    assert_int_equal(rep.bytes_read, 0);         /* qemu-img -s: sizes settle it */
    bv_compare_report_free(&rep);
    strict.full = true;
    strict.max_extents = 8;
    assert_int_equal(bv_image_compare_ex(x, y, &strict, &rep, NULL), 0);
    assert_int_equal(rep.first_diff, small);
    assert_int_equal(rep.total_extents, 1);
    assert_int_equal(rep.extents[0].offset, small);
    assert_int_equal(rep.extents[0].length, large - small);
    assert_int_equal(rep.mismatched_bytes, large - small);
    bv_compare_report_free(&rep);
    bv_node_close(x, NULL);
    bv_node_close(y, NULL);

    b[large - 700] = 9;                          /* data in the tail of the larger */
    make("sz-b.raw", BV_FMT_RAW, b, large);
    expect_model("sz-a.qcow2", "sz-b.raw", a, small, b, large);
    free(a);
    free(b);
}

struct watch {
    unsigned polls, stop_at;
    uint64_t last_done, calls, total;
};

static bool watch_stop(void *opaque)
{
    struct watch *w = opaque;
    return ++w->polls == w->stop_at;
}

static void watch_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct watch *w = opaque;
    assert_true(done >= w->last_done);
    assert_true(done <= total);
    w->last_done = done;
    w->total = total;
    w->calls++;
}

static void test_cancel_and_progress(void **state)
{
    (void)state;
    const uint64_t size = 80 * MiB;
    create("cp-a.qcow2", BV_FMT_QCOW2, size, NULL);
    create("cp-b.qcow2", BV_FMT_QCOW2, size, NULL);
    uint8_t *d = malloc(4 * MiB);
    random_fill(d, 4 * MiB, 8);
    for (uint64_t off = 0; off < size; off += 16 * MiB) {
        put("cp-a.qcow2", d, 4 * MiB, off);
        put("cp-b.qcow2", d, 4 * MiB, off);
    }
    free(d);
    bv_node *a = open_img("cp-a.qcow2", true), *b = open_img("cp-b.qcow2", true);

    struct watch w = { .stop_at = 0 };
    struct bv_compare_opts o = { .full = true, .progress = watch_progress,
                                 .should_stop = watch_stop, .opaque = &w };
    struct bv_compare_report rep;
    assert_int_equal(bv_image_compare_ex(a, b, &o, &rep, NULL), 0);
    assert_true(rep.identical);
    assert_true(w.calls >= 2);                   /* every 64 MiB, and at the end */
    assert_int_equal(w.last_done, size);
    assert_int_equal(w.total, size);
    assert_true(w.polls >= 5 * 16);              /* polled per item */
    assert_int_equal(rep.bytes_read, 2ull * 5 * 4 * MiB);
    bv_compare_report_free(&rep);

    w = (struct watch){ .stop_at = 20 };
    bv_error *err = NULL;
    assert_int_equal(bv_image_compare_ex(a, b, &o, &rep, &err), -ECANCELED);
    assert_non_null(err);
    bv_error_free(err);
    assert_true(rep.scanned < size);
    bv_compare_report_free(&rep);
    bv_node_close(a, NULL);
    bv_node_close(b, NULL);
}

/* The helper and the comparer race on every item: repeat (sanitizers watch). */
static void test_repeated(void **state)
{
    (void)state;
    const uint64_t size = MiB + 512;
    uint8_t *a = malloc(size), *b = malloc(size);
    random_fill(a, size, 9);
    memcpy(b, a, size);
    b[size / 2] ^= 1;
    make("rp-a.raw", BV_FMT_RAW, a, size);
    make("rp-b.raw", BV_FMT_RAW, b, size);
    bv_node *x = open_img("rp-a.raw", true), *y = open_img("rp-b.raw", true);
    for (int i = 0; i < 50; i++) {
        bool same = true;
        uint64_t first = 0;
        assert_int_equal(bv_image_compare(x, y, i & 1, &same, &first, NULL), 0);
        assert_false(same);
        assert_int_equal(first, size / 2 / 512 * 512);
    }
    bv_node_close(x, NULL);
    bv_node_close(y, NULL);
    free(a);
    free(b);
}

/* A three-layer chain (data in every layer, zero clusters over backing data)
 * against a raw copy: every data byte is read straight from the file of the
 * layer that holds it, and a difference in any layer is found. */
static void test_direct_chain(void **state)
{
    (void)state;
    const uint64_t size = 3 * MiB;
    uint8_t *ref = malloc(size), *d = malloc(size);
    random_fill(ref, size, 20);
    make("dc-base.qcow2", BV_FMT_QCOW2, ref, size);
    create("dc-mid.qcow2", BV_FMT_QCOW2, size, "dc-base.qcow2");
    create("dc-top.qcow2", BV_FMT_QCOW2, size, "dc-mid.qcow2");
    random_fill(d, size, 21);
    memcpy(ref + 512 * KiB, d, 700 * KiB);              /* mid: [512K, 1212K) */
    put("dc-mid.qcow2", d, 700 * KiB, 512 * KiB);
    memcpy(ref + MiB + 4 * KiB, d + MiB, 300 * KiB + 17);   /* top: over mid and base */
    put("dc-top.qcow2", d + MiB, 300 * KiB + 17, MiB + 4 * KiB);
    memset(ref + 2 * MiB, 0, 256 * KiB);                /* top: zero clusters over base */
    zero("dc-top.qcow2", 256 * KiB, 2 * MiB);
    make("dc-ref.raw", BV_FMT_RAW, ref, size);
    expect_model("dc-top.qcow2", "dc-ref.raw", ref, size, ref, size);

    struct bv_compare_report rep;
    assert_int_equal(compare_full("dc-top.qcow2", "dc-ref.raw", 4, &rep), 0);
    assert_true(rep.identical);
    assert_int_equal(rep.bytes_read, 2 * size - 256 * KiB);   /* the zero part: raw side only */
    assert_int_equal(rep.bytes_direct, rep.bytes_read);
    bv_compare_report_free(&rep);

    /* a writable top (a live drive) reads its own clusters through its node
     * (they could be freed under a direct read); its backing files stay direct */
    bv_node *top = open_img("dc-top.qcow2", false), *raw = open_img("dc-ref.raw", true);
    struct bv_compare_opts o = { .full = true };
    assert_int_equal(bv_image_compare_ex(top, raw, &o, &rep, NULL), 0);
    assert_true(rep.identical);
    assert_int_equal(rep.bytes_read, 2 * size - 256 * KiB);
    assert_int_equal(rep.bytes_direct, rep.bytes_read - 320 * KiB);   /* top's 5 clusters */
    bv_compare_report_free(&rep);
    bv_node_close(top, NULL);
    bv_node_close(raw, NULL);

    uint8_t *other = malloc(size);
    static const uint64_t where[] = { 100, 600 * KiB, MiB + 4 * KiB, 2 * MiB + 5, size - 1 };
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {   /* base, mid, top, zero */
        memcpy(other, ref, size);
        other[where[i]] ^= 0x10;
        make("dc-other.raw", BV_FMT_RAW, other, size);
        expect_model("dc-top.qcow2", "dc-other.raw", ref, size, other, size);
    }
    free(other);
    free(ref);
    free(d);
}

/* Compressed clusters are read through the node (qcow2 inflates them). */
static void test_compressed_clusters(void **state)
{
    (void)state;
    const uint64_t size = 2 * MiB;
    uint8_t *ref = malloc(size);
    for (uint64_t i = 0; i < size; i++)                 /* compressible */
        ref[i] = (uint8_t)(i / 4096 * 7 + (i % 13 == 0));
    random_fill(ref + MiB, MiB, 22);                    /* second half: plain clusters */
    create("cc.qcow2", BV_FMT_QCOW2, size, NULL);
    bv_node *n = open_img("cc.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, ref, MiB, 0, BV_WRITE_COMPRESSED, NULL), 0);
    assert_int_equal(bv_node_pwrite(n, ref + MiB, MiB, MiB, 0, NULL), 0);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, 0, size, &bs, NULL), 0);
    assert_true(bs.flags & BV_BS_COMPRESSED);
    assert_int_equal(bv_node_close(n, NULL), 0);
    make("cc.raw", BV_FMT_RAW, ref, size);
    expect_model("cc.qcow2", "cc.raw", ref, size, ref, size);

    struct bv_compare_report rep;
    assert_int_equal(compare_full("cc.qcow2", "cc.raw", 4, &rep), 0);
    assert_true(rep.identical);
    assert_int_equal(rep.bytes_read, 2 * size);
    assert_int_equal(rep.bytes_direct, 2 * size - MiB);   /* all but the compressed MiB */
    bv_compare_report_free(&rep);

    uint8_t *other = malloc(size);
    memcpy(other, ref, size);
    other[300 * KiB + 3] ^= 1;                          /* inside a compressed cluster */
    make("cc-other.raw", BV_FMT_RAW, other, size);
    expect_model("cc.qcow2", "cc-other.raw", ref, size, other, size);
    free(other);
    free(ref);
}

/* A blkdebug filter must see every read: that side reads through its node
 * (an injected read error fails the compare), the other side directly. */
static void test_blkdebug_falls_back(void **state)
{
    (void)state;
    const uint64_t size = MiB + 4 * KiB;
    uint8_t *ref = malloc(size);
    random_fill(ref, size, 23);
    make("bd.qcow2", BV_FMT_QCOW2, ref, size);
    make("bd.raw", BV_FMT_RAW, ref, size);
    for (int inject = 0; inject < 2; inject++) {
        for (size_t t = 0; t < N_TUNINGS; t++) {
            struct bv_blkdebug_config cfg;
            memset(&cfg, 0, sizeof(cfg));
            if (inject)
                assert_non_null(bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO));
            bv_node *a = NULL, *b = open_img("bd.raw", true);
            struct bv_open_opts oo = { .path = tp("bd.qcow2"), .read_only = true,
                                       .filters = BV_FILTERS_BLKDEBUG(&cfg) };
            assert_int_equal(bv_node_open(&oo, &a, NULL), 0);
            struct bv_compare_opts o = tunings[t];
            o.full = true;
            struct bv_compare_report rep;
            bv_error *err = NULL;
            int r = bv_image_compare_ex(a, b, &o, &rep, &err);
            if (inject) {
                assert_int_equal(r, -EIO);
                assert_non_null(err);
                bv_error_free(err);
            } else {
                assert_int_equal(r, 0);
                assert_true(rep.identical);
                assert_int_equal(rep.bytes_read, 2 * size);
                assert_int_equal(rep.bytes_direct, o.no_direct ? 0 : size);   /* raw only */
            }
            bv_compare_report_free(&rep);
            bv_node_close(a, NULL);
            bv_node_close(b, NULL);
        }
    }
    free(ref);
}

/* A blkverify node's file child is the reference raw image while its block
 * status is the test image's: no direct reads through it (they would read the
 * raw file at the qcow2 image's host offsets). */
static void test_blkverify_side(void **state)
{
    (void)state;
    const uint64_t size = MiB;
    uint8_t *ref = malloc(size);
    random_fill(ref, size, 24);
    make("bv-test.qcow2", BV_FMT_QCOW2, ref, size);
    make("bv-raw.raw", BV_FMT_RAW, ref, size);
    make("bv-other.raw", BV_FMT_RAW, ref, size);
    struct bv_blkverify_opts vo = {
        .test = { .path = tp("bv-test.qcow2"), .read_only = true },
        .raw = { .path = tp("bv-raw.raw"), .read_only = true },
    };
    bv_node *v = NULL, *b = open_img("bv-other.raw", true);
    assert_int_equal(bv_blkverify_open(&vo, &v, NULL), 0);
    uint8_t buf[16];
    assert_int_equal(bv_node_pread_host(v, buf, sizeof(buf), 0, NULL), -ENOTSUP);
    struct bv_compare_opts o = { .full = true };
    struct bv_compare_report rep;
    assert_int_equal(bv_image_compare_ex(v, b, &o, &rep, NULL), 0);
    assert_true(rep.identical);
    assert_int_equal(rep.bytes_direct, size);                  /* bv-other.raw only */
    bv_compare_report_free(&rep);
    bv_node_close(v, NULL);
    bv_node_close(b, NULL);
    free(ref);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "%s/bv-compare.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identical_many_items),
        cmocka_unit_test(test_first_and_last_byte),
        cmocka_unit_test(test_zero_region_vs_data),
        cmocka_unit_test(test_all_zero_not_read),
        cmocka_unit_test(test_across_backing_end),
        cmocka_unit_test(test_full_report_and_cap),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_cancel_and_progress),
        cmocka_unit_test(test_repeated),
        cmocka_unit_test(test_direct_chain),
        cmocka_unit_test(test_compressed_clusters),
        cmocka_unit_test(test_blkdebug_falls_back),
        cmocka_unit_test(test_blkverify_side),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
