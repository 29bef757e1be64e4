/*
 * test_crc32: bv_crc32 (core/util/crc32.c) equals zlib's crc32_z for every
 * length around the folding thresholds (0..1200 bytes), every alignment of
 * the buffer, seeds other than 0, chained calls, and large random buffers;
 * the CRC maps' values are zlib's, so stored maps stay valid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "util/crc32.h"

#define BIG (1u << 20)

static uint8_t *random_buf(size_t n)
{
    uint8_t *b = malloc(n);
    assert_non_null(b);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t)x;
    }
    return b;
}

static void test_lengths_and_alignments(void **state)
{
    (void)state;
    uint8_t *b = random_buf(1300);
    for (size_t len = 0; len <= 1200; len++)
        for (size_t off = 0; off < 16; off++) {
            assert_int_equal(bv_crc32(0, b + off, len), (uint32_t)crc32_z(0, b + off, len));
            assert_int_equal(bv_crc32(0xdeadbeef, b + off, len),
                             (uint32_t)crc32_z(0xdeadbeef, b + off, len));
        }
    free(b);
}

static void test_large_and_chained(void **state)
{
    (void)state;
    uint8_t *b = random_buf(BIG + 64);
    for (size_t len = BIG - 70; len <= BIG; len += 7)
        assert_int_equal(bv_crc32(0, b + 3, len), (uint32_t)crc32_z(0, b + 3, len));
    uint32_t whole = (uint32_t)crc32_z(0, b, BIG);
    uint32_t c = 0;
    for (size_t pos = 0; pos < BIG; pos += 65536 + 5) {
        size_t n = BIG - pos < 65536 + 5 ? BIG - pos : 65536 + 5;
        c = bv_crc32(c, b + pos, n);
    }
    assert_int_equal(c, whole);
    memset(b, 0, 65536);
    assert_int_equal(bv_crc32(0, b, 65536), (uint32_t)crc32_z(0, b, 65536));
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths_and_alignments),
        cmocka_unit_test(test_large_and_chained),
    };
    return cmocka_run_group_tests_name("crc32", tests, NULL, NULL);
}
