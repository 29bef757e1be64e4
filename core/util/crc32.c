/*
 * CRC-32 with carry-less multiplication: see crc32.h.
 *
 * The folding: four 128-bit lanes over 64-byte steps (constants k1,k2),
 * folded into one lane (k3,k4), then 16-byte steps, 128 -> 64 bits (k5) and
 * a Barrett reduction to 32 bits; the constants are the bit-reflected ones
 * at the end of Intel's paper.  The CPU is asked once (cpuid via
 * __builtin_cpu_supports); the function is compiled for those features only.
 */
#include <stdbool.h>
#include <zlib.h>

#include "util/crc32.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define FOLD_MIN 64     /* below this zlib is as fast */

/* The 128-bit folding from four lanes x1..x4 that hold the first 64 bytes
 * (crc already folded in): the rest of buf (len a multiple of 16). */
__attribute__((target("pclmul,sse4.1")))
static inline uint32_t fold_lanes(__m128i x1, __m128i x2, __m128i x3, __m128i x4,
                                  const uint8_t *buf, size_t len)
{
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124);
    const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);
    const __m128i mask = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i x0, x5, x6, x7, x8;

    x0 = k1k2;
    while (len >= 64) {                      /* four lanes in parallel */
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5),
                           _mm_loadu_si128((const __m128i *)(buf + 0x00)));
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6),
                           _mm_loadu_si128((const __m128i *)(buf + 0x10)));
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7),
                           _mm_loadu_si128((const __m128i *)(buf + 0x20)));
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8),
                           _mm_loadu_si128((const __m128i *)(buf + 0x30)));
        buf += 64;
        len -= 64;
    }
    x0 = k3k4;                               /* four lanes into one */
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
    while (len >= 16) {                      /* 16-byte steps */
        x2 = _mm_loadu_si128((const __m128i *)buf);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        buf += 16;
        len -= 16;
    }
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10); /* 128 -> 64 bits */
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
    x0 = k5k0;
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, mask);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    x0 = poly;                               /* Barrett reduction to 32 bits */
    x2 = _mm_and_si128(x1, mask);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, mask);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

__attribute__((target("pclmul,sse4.1")))
static uint32_t fold(const uint8_t *buf, size_t len, uint32_t crc)
{
    __m128i x1 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    return fold_lanes(x1, x2, x3, x4, buf + 64, len - 64);
}

/* AVX-512 VPCLMULQDQ: sixteen 128-bit lanes in four zmm registers over
 * 256-byte steps (each lane folds forward by 2048 bits: the constants are
 * x^(2048±32) mod P, bit-reflected, computed as the 512-bit ones are), then
 * the four registers fold into one (64-byte distance: k1,k2), whose four
 * lanes carry on in fold_lanes.  On the build machine's EPYC about 4x the
 * 128-bit loop, which is latency-bound. */
#define FOLD512_MIN 512

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1")))
static uint32_t fold512(const uint8_t *buf, size_t len, uint32_t crc)
{
    const __m512i k16 = _mm512_set4_epi64(0x01322d1430, 0x011542778a, 0x01322d1430, 0x011542778a);
    const __m512i k4 = _mm512_set4_epi64(0x01c6e41596, 0x0154442bd4, 0x01c6e41596, 0x0154442bd4);
    __m512i z0 = _mm512_loadu_si512((const void *)(buf + 0x00));
    __m512i z1 = _mm512_loadu_si512((const void *)(buf + 0x40));
    __m512i z2 = _mm512_loadu_si512((const void *)(buf + 0x80));
    __m512i z3 = _mm512_loadu_si512((const void *)(buf + 0xc0));
    z0 = _mm512_xor_si512(z0, _mm512_castsi128_si512(_mm_cvtsi32_si128((int)crc)));
    buf += 256;
    len -= 256;
    while (len >= 256) {
        __m512i a0 = _mm512_clmulepi64_epi128(z0, k16, 0x00);
        __m512i a1 = _mm512_clmulepi64_epi128(z1, k16, 0x00);
        __m512i a2 = _mm512_clmulepi64_epi128(z2, k16, 0x00);
        __m512i a3 = _mm512_clmulepi64_epi128(z3, k16, 0x00);
        z0 = _mm512_clmulepi64_epi128(z0, k16, 0x11);
        z1 = _mm512_clmulepi64_epi128(z1, k16, 0x11);
        z2 = _mm512_clmulepi64_epi128(z2, k16, 0x11);
        z3 = _mm512_clmulepi64_epi128(z3, k16, 0x11);
        z0 = _mm512_ternarylogic_epi64(z0, a0, _mm512_loadu_si512((const void *)(buf + 0x00)), 0x96);
        z1 = _mm512_ternarylogic_epi64(z1, a1, _mm512_loadu_si512((const void *)(buf + 0x40)), 0x96);
        z2 = _mm512_ternarylogic_epi64(z2, a2, _mm512_loadu_si512((const void *)(buf + 0x80)), 0x96);
        z3 = _mm512_ternarylogic_epi64(z3, a3, _mm512_loadu_si512((const void *)(buf + 0xc0)), 0x96);
        buf += 256;
        len -= 256;
    }
    /* four registers into one: z0 is 64 bytes before z1, and so on */
    __m512i a = _mm512_clmulepi64_epi128(z0, k4, 0x00);
    z0 = _mm512_clmulepi64_epi128(z0, k4, 0x11);
    z0 = _mm512_ternarylogic_epi64(z0, a, z1, 0x96);
    a = _mm512_clmulepi64_epi128(z0, k4, 0x00);
    z0 = _mm512_clmulepi64_epi128(z0, k4, 0x11);
    z0 = _mm512_ternarylogic_epi64(z0, a, z2, 0x96);
    a = _mm512_clmulepi64_epi128(z0, k4, 0x00);
    z0 = _mm512_clmulepi64_epi128(z0, k4, 0x11);
    z0 = _mm512_ternarylogic_epi64(z0, a, z3, 0x96);
    return fold_lanes(_mm512_extracti32x4_epi32(z0, 0), _mm512_extracti32x4_epi32(z0, 1),
                      _mm512_extracti32x4_epi32(z0, 2), _mm512_extracti32x4_epi32(z0, 3),
                      buf, len);
}

static bool have_vpclmul(void)
{
    static int have = -1;                    /* a benign race, as below */
    int h = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul");
        __atomic_store_n(&have, h, __ATOMIC_RELAXED);
    }
    return h;
}

static bool have_clmul(void)
{
    static int have = -1;                    /* a benign race: every thread finds the same */
    int h = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
        __atomic_store_n(&have, h, __ATOMIC_RELAXED);
    }
    return h;
}

uint32_t bv_crc32(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (len >= FOLD_MIN && have_clmul()) {
        size_t bulk = len & ~(size_t)15;
        crc = bulk >= FOLD512_MIN && have_vpclmul() ? ~fold512(p, bulk, ~crc)
                                                      : ~fold(p, bulk, ~crc);
        p += bulk;
        len -= bulk;
    }
    return len ? (uint32_t)crc32_z(crc, p, (z_size_t)len) : crc;
}

#else

uint32_t bv_crc32(uint32_t crc, const void *buf, size_t len)
{
    return (uint32_t)crc32_z(crc, buf, (z_size_t)len);
}

#endif
