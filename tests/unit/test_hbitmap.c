/*
 * Unit tests for util/hbitmap: exact counts, search and run iteration,
 * granule rounding, truncate across tree levels, merge across
 * granularities, the serialized byte layout, and memory on a 16 TiB sparse
 * bitmap.  A randomized test checks every operation against a flat
 * reference bitmap (fixed seed, so a failure reproduces).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util/hbitmap.h"

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)
#define TiB (1024ULL * GiB)

static struct hbitmap *mk(uint64_t size, unsigned shift)
{
    struct hbitmap *hb = NULL;
    assert_int_equal(hbitmap_new(size, shift, &hb), 0);
    return hb;
}

static void test_set_get_count(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(100 * KiB, 16);          /* 2 granules of 64 KiB */
    assert_int_equal(hbitmap_nbits(hb), 2);
    assert_int_equal(hbitmap_set(hb, 99 * KiB, 512), 0);
    assert_int_equal(hbitmap_count(hb), 1);
    assert_true(hbitmap_get(hb, 64 * KiB));
    assert_false(hbitmap_get(hb, 0));
    assert_int_equal(hbitmap_set(hb, 0, 1), 0);
    assert_int_equal(hbitmap_set(hb, 1, 1), 0);      /* same bit once */
    assert_int_equal(hbitmap_count(hb), 2);
    assert_int_equal(hbitmap_set(hb, 200 * KiB, 512), 0); /* past the end */
    assert_int_equal(hbitmap_count(hb), 2);
    assert_int_equal(hbitmap_set(hb, 0, 0), 0);
    hbitmap_free(hb);
}

static void test_reset_rounding(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(100 * KiB, 16);
    assert_int_equal(hbitmap_set(hb, 0, 100 * KiB), 0);
    assert_int_equal(hbitmap_count(hb), 2);
    /* partial granules are not cleared */
    assert_int_equal(hbitmap_reset(hb, 1, 64 * KiB), 0);
    assert_int_equal(hbitmap_count(hb), 2);
    /* a range reaching the end clears the short tail granule */
    assert_int_equal(hbitmap_reset(hb, 64 * KiB, 36 * KiB), 0);
    assert_int_equal(hbitmap_count(hb), 1);
    assert_int_equal(hbitmap_reset(hb, 0, 64 * KiB), 0);
    assert_true(hbitmap_is_empty(hb));
    hbitmap_free(hb);
}

static void test_next_and_runs(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(1ULL << 40, 9);          /* 1 TiB @ 512 B */
    assert_int_equal(hbitmap_set(hb, 5 * GiB, 4096), 0);
    assert_int_equal(hbitmap_set(hb, 5 * GiB + 4096, 512), 0);   /* adjacent */
    assert_int_equal(hbitmap_set(hb, 700 * GiB + 1000, 1), 0);
    assert_int_equal(hbitmap_next_set(hb, 0, UINT64_MAX), 5 * GiB);
    assert_int_equal(hbitmap_next_set(hb, 5 * GiB + 100, UINT64_MAX),
                     5 * GiB + 100);
    assert_int_equal(hbitmap_next_clear(hb, 5 * GiB, UINT64_MAX),
                     5 * GiB + 4608);
    assert_int_equal(hbitmap_next_set(hb, 5 * GiB + 4608, UINT64_MAX),
                     700 * GiB + 512);
    assert_int_equal(hbitmap_next_set(hb, 700 * GiB + 1024, UINT64_MAX), -1);
    assert_int_equal(hbitmap_next_set(hb, 0, 5 * GiB), -1);      /* bounded */
    uint64_t o, l;
    assert_true(hbitmap_next_run(hb, 0, UINT64_MAX, &o, &l));
    assert_int_equal(o, 5 * GiB);
    assert_int_equal(l, 4608);
    assert_true(hbitmap_next_run(hb, o + l, UINT64_MAX, &o, &l));
    assert_int_equal(o, 700 * GiB + 512);
    assert_int_equal(l, 512);
    assert_false(hbitmap_next_run(hb, o + l, UINT64_MAX, &o, &l));
    /* a window clips the run */
    assert_true(hbitmap_next_run(hb, 5 * GiB + 1024, 5 * GiB + 2048, &o, &l));
    assert_int_equal(o, 5 * GiB + 1024);
    assert_int_equal(l, 1024);
    hbitmap_free(hb);
}

static void test_full_is_cheap(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(16 * TiB, 16);           /* 2^28 bits */
    assert_int_equal(hbitmap_set(hb, 0, 16 * TiB), 0);
    assert_int_equal(hbitmap_count(hb), 1ULL << 28);
    assert_true(hbitmap_mem_usage(hb) < 64 * KiB);
    assert_int_equal(hbitmap_next_clear(hb, 0, UINT64_MAX), -1);
    /* clear one granule in the middle: only its path materializes */
    assert_int_equal(hbitmap_reset(hb, 8 * TiB, 64 * KiB), 0);
    assert_int_equal(hbitmap_count(hb), (1ULL << 28) - 1);
    assert_int_equal(hbitmap_next_clear(hb, 0, UINT64_MAX), 8 * TiB);
    assert_true(hbitmap_mem_usage(hb) < 64 * KiB);
    assert_int_equal(hbitmap_set(hb, 8 * TiB, 1), 0);
    assert_int_equal(hbitmap_count(hb), 1ULL << 28);
    assert_true(hbitmap_mem_usage(hb) < 64 * KiB);
    hbitmap_reset_all(hb);
    assert_int_equal(hbitmap_count(hb), 0);
    struct hbitmap *empty = mk(16 * TiB, 16);
    assert_int_equal(hbitmap_mem_usage(hb), hbitmap_mem_usage(empty));
    hbitmap_free(empty);
    hbitmap_free(hb);
}

static void test_huge_sparse_memory(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(16 * TiB, 9);            /* 2^35 bits */
    assert_int_equal(hbitmap_nbits(hb), 1ULL << 35);
    /* 1000 scattered 64 KiB writes */
    for (uint64_t i = 0; i < 1000; i++)
        assert_int_equal(hbitmap_set(hb, i * (16 * GiB + 4096), 64 * KiB), 0);
    assert_int_equal(hbitmap_count(hb), 1000 * 128);
    /* each write touches at most 2 leaves plus a path of inner nodes */
    assert_true(hbitmap_mem_usage(hb) < 20 * MiB);
    uint64_t runs = 0, pos = 0, o, l;
    while (hbitmap_next_run(hb, pos, UINT64_MAX, &o, &l)) {
        assert_int_equal(l, 64 * KiB);
        runs++;
        pos = o + l;
    }
    assert_int_equal(runs, 1000);
    assert_int_equal(hbitmap_next_set(hb, 16 * TiB - 64 * KiB, UINT64_MAX), -1);
    assert_int_equal(hbitmap_set(hb, 16 * TiB - 1, 1), 0);
    assert_int_equal(hbitmap_next_set(hb, 16 * TiB - 64 * KiB, UINT64_MAX),
                     16 * TiB - 512);
    hbitmap_free(hb);
}

static void test_truncate(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(64 * MiB, 16);           /* 1024 bits, 1 level */
    assert_int_equal(hbitmap_set(hb, 0, 64 * MiB), 0);
    assert_int_equal(hbitmap_count(hb), 1024);
    /* grow across two levels: the new area is clean */
    assert_int_equal(hbitmap_truncate(hb, 4 * TiB), 0);
    assert_int_equal(hbitmap_count(hb), 1024);
    assert_int_equal(hbitmap_next_clear(hb, 0, UINT64_MAX), 64 * MiB);
    assert_int_equal(hbitmap_set(hb, 3 * TiB, 1), 0);
    assert_int_equal(hbitmap_count(hb), 1025);
    /* shrink drops everything past the end, levels included */
    assert_int_equal(hbitmap_truncate(hb, 32 * MiB + 1), 0);
    assert_int_equal(hbitmap_nbits(hb), 513);
    assert_int_equal(hbitmap_count(hb), 513);
    assert_int_equal(hbitmap_truncate(hb, 65 * MiB), 0);
    assert_int_equal(hbitmap_count(hb), 513);
    assert_false(hbitmap_get(hb, 64 * MiB));
    assert_int_equal(hbitmap_set(hb, 64 * MiB, 64 * KiB), 0);
    assert_int_equal(hbitmap_count(hb), 514);
    assert_int_equal(hbitmap_truncate(hb, 0), 0);
    assert_int_equal(hbitmap_count(hb), 0);
    hbitmap_free(hb);
}

static void test_merge_granularities(void **state)
{
    (void)state;
    struct hbitmap *fine = mk(64 * MiB, 15), *coarse = mk(64 * MiB, 17);
    struct hbitmap *mid = mk(64 * MiB, 16);
    assert_int_equal(hbitmap_set(fine, 32736 * KiB, 64 * KiB), 0); /* 2 bits */
    assert_int_equal(hbitmap_set(coarse, 0, 512), 0);              /* 128K */
    assert_int_equal(hbitmap_merge(mid, fine), 0);
    assert_int_equal(hbitmap_count(mid), 2);         /* 32704K and 32768K */
    assert_int_equal(hbitmap_merge(mid, coarse), 0);
    assert_int_equal(hbitmap_count(mid), 4);         /* + 0 and 64K */
    assert_int_equal(hbitmap_merge(coarse, mid), 0);
    assert_int_equal(hbitmap_count(coarse), 3);      /* 0, 32640K, 32768K */
    hbitmap_free(fine);
    hbitmap_free(coarse);
    hbitmap_free(mid);
}

static void test_serialize_layout(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(64 * MiB, 16), *back = mk(64 * MiB, 16);
    uint8_t buf[128];
    assert_int_equal(hbitmap_serialized_size(hb), 128);
    assert_int_equal(hbitmap_set(hb, 16 * MiB, 64 * KiB), 0);
    assert_int_equal(hbitmap_set(hb, 65 * KiB, 1), 0);
    assert_int_equal(hbitmap_serialize(hb, 0, buf, sizeof(buf)), 0);
    assert_int_equal(buf[0x20], 0x01);               /* §2.7's check */
    assert_int_equal(buf[0], 0x02);
    for (size_t i = 1; i < sizeof(buf); i++)
        if (i != 0x20)
            assert_int_equal(buf[i], 0);
    /* windows */
    uint8_t w[4];
    assert_int_equal(hbitmap_serialize(hb, 0x1f, w, 4), 0);
    assert_int_equal(w[1], 0x01);
    assert_int_equal(hbitmap_serialize(hb, 126, w, 4), -EINVAL);
    assert_int_equal(hbitmap_deserialize(back, 0, buf, 64), 0);
    assert_int_equal(hbitmap_deserialize(back, 64, buf + 64, 64), 0);
    assert_int_equal(hbitmap_count(back), 2);
    assert_true(hbitmap_get(back, 16 * MiB));
    /* deserialize replaces the window */
    memset(w, 0, sizeof(w));
    assert_int_equal(hbitmap_deserialize(back, 0x1f, w, 4), 0);
    assert_int_equal(hbitmap_count(back), 1);
    hbitmap_free(hb);
    hbitmap_free(back);
}

static void test_deserialize_tail_bits(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(100 * KiB, 16);          /* 2 bits, 1 byte */
    uint8_t b = 0x03;
    assert_int_equal(hbitmap_deserialize(hb, 0, &b, 1), 0);
    assert_int_equal(hbitmap_count(hb), 2);
    b = 0x07;
    assert_int_equal(hbitmap_deserialize(hb, 0, &b, 1), -EINVAL);
    assert_int_equal(hbitmap_count(hb), 2);          /* unchanged */
    assert_int_equal(hbitmap_deserialize(hb, 1, &b, 1), -EINVAL);
    hbitmap_free(hb);
}

static void test_copy(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(1 * TiB, 12), *c = NULL;
    assert_int_equal(hbitmap_set(hb, 0, 300 * GiB), 0);
    assert_int_equal(hbitmap_set(hb, 500 * GiB + 7, 3 * MiB), 0);
    assert_int_equal(hbitmap_copy(hb, &c), 0);
    assert_int_equal(hbitmap_count(c), hbitmap_count(hb));
    assert_int_equal(hbitmap_mem_usage(c), hbitmap_mem_usage(hb));
    hbitmap_free(hb);                                /* c is independent */
    assert_true(hbitmap_get(c, 500 * GiB + 3 * MiB));
    assert_int_equal(hbitmap_next_clear(c, 0, UINT64_MAX), 300 * GiB);
    hbitmap_free(c);
}

/* ---- randomized comparison with a flat bitmap ---- */

#define RBITS 300000u                                /* 10 leaves, 2 levels */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(uint64_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state % n;
}

static bool ref_get(const uint8_t *ref, uint64_t b)
{
    return (ref[b >> 3] >> (b & 7)) & 1;
}

static void ref_apply(uint8_t *ref, uint64_t s, uint64_t e, bool set)
{
    for (uint64_t b = s; b < e; b++) {
        if (set)
            ref[b >> 3] |= (uint8_t)(1u << (b & 7));
        else
            ref[b >> 3] &= (uint8_t)~(1u << (b & 7));
    }
}

static void check_against(struct hbitmap *hb, const uint8_t *ref)
{
    uint64_t count = 0;
    for (uint64_t b = 0; b < RBITS; b++)
        count += ref_get(ref, b);
    assert_int_equal(hbitmap_count(hb), count);
    for (int k = 0; k < 200; k++) {
        uint64_t p = rnd(RBITS);
        assert_int_equal(hbitmap_get(hb, p), ref_get(ref, p));
        uint64_t s = p, c = p;
        while (s < RBITS && !ref_get(ref, s))
            s++;
        while (c < RBITS && ref_get(ref, c))
            c++;
        assert_int_equal(hbitmap_next_set(hb, p, UINT64_MAX),
                         s < RBITS ? (int64_t)s : -1);
        assert_int_equal(hbitmap_next_clear(hb, p, UINT64_MAX),
                         c < RBITS ? (int64_t)c : -1);
    }
    uint8_t *buf = malloc(RBITS / 8);
    assert_non_null(buf);
    assert_int_equal(hbitmap_serialize(hb, 0, buf, RBITS / 8), 0);
    assert_memory_equal(buf, ref, RBITS / 8);
    free(buf);
}

static void test_random_vs_flat(void **state)
{
    (void)state;
    struct hbitmap *hb = mk(RBITS, 0);
    uint8_t *ref = calloc(RBITS / 8, 1);
    assert_non_null(ref);
    for (int round = 0; round < 400; round++) {
        uint64_t s = rnd(RBITS);
        uint64_t maxlen = round % 3 == 0 ? RBITS : 300;
        uint64_t len = 1 + rnd(maxlen);
        uint64_t e = s + len > RBITS ? RBITS : s + len;
        bool set = rnd(3) != 0;
        assert_int_equal(set ? hbitmap_set(hb, s, len) : hbitmap_reset(hb, s, len), 0);
        ref_apply(ref, s, e, set);
        if (round % 20 == 0)
            check_against(hb, ref);
    }
    check_against(hb, ref);
    /* round trip through the serialized form */
    struct hbitmap *back = mk(RBITS, 0);
    assert_int_equal(hbitmap_deserialize(back, 0, ref, RBITS / 8), 0);
    check_against(back, ref);
    hbitmap_free(back);
    hbitmap_free(hb);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_count),
        cmocka_unit_test(test_reset_rounding),
        cmocka_unit_test(test_next_and_runs),
        cmocka_unit_test(test_full_is_cheap),
        cmocka_unit_test(test_huge_sparse_memory),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_merge_granularities),
        cmocka_unit_test(test_serialize_layout),
        cmocka_unit_test(test_deserialize_tail_bits),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_random_vs_flat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
