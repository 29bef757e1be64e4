/*
 * Overflow-checked arithmetic for offsets and sizes.  Every addition or
 * multiplication of values that come from a client or an image goes through
 * these; they return false on overflow and leave *out untouched.
 */
#ifndef BV_UTIL_CHECKED_H
#define BV_UTIL_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

static inline bool ck_add(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

static inline bool ck_mul(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

/* align must be a power of two */
static inline bool ck_align_up(uint64_t v, uint64_t align, uint64_t *out)
{
    uint64_t r;
    if (__builtin_add_overflow(v, align - 1, &r))
        return false;
    *out = r & ~(align - 1);
    return true;
}

static inline uint64_t align_down64(uint64_t v, uint64_t align)
{
    return v & ~(align - 1);
}

static inline bool is_pow2_u64(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Range [off, off+len) lies within [0, size). */
static inline bool ck_range(uint64_t off, uint64_t len, uint64_t size)
{
    uint64_t end;
    return ck_add(off, len, &end) && end <= size;
}

#endif
