/* CRC maps and point-in-time digests: see include/bv/crcmap.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bv/crcmap.h"
#include "util/crc32.h"

struct bv_crcmap {
    uint64_t disk_size, nblocks;
    uint32_t *crc;
    uint8_t *present;                 /* a bit per block */
    uint64_t count;
    pthread_mutex_t lock;             /* record() from copy threads */
};

uint64_t bv_crc_block_len(uint64_t disk_size, uint64_t block)
{
    uint64_t off = block * BV_CRC_BLOCK;
    if (off >= disk_size)
        return 0;
    return disk_size - off < BV_CRC_BLOCK ? disk_size - off : BV_CRC_BLOCK;
}

/* A whole block's value is computed once: digests ask for it per block, and
 * 64 KiB of CRC per call made a digest of a 1 GiB map cost 1 GiB of CRC. */
uint32_t bv_crc_zero(uint64_t len)
{
    static const uint8_t z[BV_CRC_BLOCK];
    static _Atomic uint32_t whole;            /* 0: not yet (a zero block's CRC is not 0) */
    if (len < BV_CRC_BLOCK)
        return (uint32_t)crc32_z(0, z, (z_size_t)len);
    uint32_t c = atomic_load_explicit(&whole, memory_order_relaxed);
    if (!c) {
        c = (uint32_t)crc32_z(0, z, BV_CRC_BLOCK);
        atomic_store_explicit(&whole, c, memory_order_relaxed);
    }
    return c;
}

int bv_crcmap_new(uint64_t disk_size, struct bv_crcmap **out, bv_error **errp)
{
    uint64_t n = (disk_size + BV_CRC_BLOCK - 1) / BV_CRC_BLOCK;
    if (n > (1ULL << 32))
        return bv_error_setf(errp, EFBIG, "disk too large for a CRC map");
    struct bv_crcmap *m = calloc(1, sizeof(*m));
    if (m) {
        m->crc = calloc(n ? n : 1, sizeof(uint32_t));
        m->present = calloc(n / 8 + 1, 1);
    }
    if (!m || !m->crc || !m->present) {
        if (m) {
            free(m->crc);
            free(m->present);
        }
        free(m);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    m->disk_size = disk_size;
    m->nblocks = n;
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return 0;
}

void bv_crcmap_free(struct bv_crcmap *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m->crc);
    free(m->present);
    free(m);
}

uint64_t bv_crcmap_blocks(const struct bv_crcmap *m) { return m->nblocks; }
uint64_t bv_crcmap_disk_size(const struct bv_crcmap *m) { return m->disk_size; }
uint64_t bv_crcmap_count(const struct bv_crcmap *m) { return m->count; }

static void set_nolock(struct bv_crcmap *m, uint64_t block, uint32_t crc)
{
    if (block >= m->nblocks)
        return;
    if (!(m->present[block / 8] & (1u << (block % 8)))) {
        m->present[block / 8] |= (uint8_t)(1u << (block % 8));
        m->count++;
    }
    m->crc[block] = crc;
}

void bv_crcmap_set(struct bv_crcmap *m, uint64_t block, uint32_t crc)
{
    pthread_mutex_lock(&m->lock);
    set_nolock(m, block, crc);
    pthread_mutex_unlock(&m->lock);
}

void bv_crcmap_record(struct bv_crcmap *m, uint64_t off, uint64_t len, const void *data)
{
    const uint8_t *p = data;
    for (uint64_t done = 0; done < len;) {
        uint64_t block = (off + done) / BV_CRC_BLOCK;
        uint64_t n = bv_crc_block_len(m->disk_size, block);
        if (n == 0)
            break;
        if (n > len - done)
            n = len - done;               /* a short tail: the caller's range ends here */
        uint32_t crc = p ? bv_crc32(0, p + done, n) : bv_crc_zero(n);
        bv_crcmap_set(m, block, crc);
        done += n;
    }
}

bool bv_crcmap_get(const struct bv_crcmap *m, uint64_t block, uint32_t *crc)
{
    if (block >= m->nblocks || !(m->present[block / 8] & (1u << (block % 8))))
        return false;
    *crc = m->crc[block];
    return true;
}

bool bv_crcmap_next(const struct bv_crcmap *m, uint64_t *block, uint32_t *crc)
{
    for (uint64_t b = *block; b < m->nblocks; b++) {
        if (!m->present[b / 8]) {
            b |= 7;                        /* skip a whole empty byte */
            continue;
        }
        if (m->present[b / 8] & (1u << (b % 8))) {
            *block = b;
            *crc = m->crc[b];
            return true;
        }
    }
    return false;
}

void bv_crcmap_overlay(struct bv_crcmap *dst, const struct bv_crcmap *src)
{
    uint64_t b = 0;
    uint32_t crc;
    while (bv_crcmap_next(src, &b, &crc)) {
        set_nolock(dst, b, crc);
        b++;
    }
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int bv_crcmap_serialize(const struct bv_crcmap *m, uint8_t **out, size_t *len, bv_error **errp)
{
    size_t raw_len = (size_t)m->count * 8;
    uint8_t *raw = malloc(raw_len ? raw_len : 1);
    uLongf zlen = compressBound((uLong)raw_len);
    uint8_t *z = malloc(zlen);
    if (!raw || !z) {
        free(raw);
        free(z);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    uint64_t b = 0, prev = 0;
    uint32_t crc;
    size_t i = 0;
    while (i < m->count && bv_crcmap_next(m, &b, &crc)) {
        put_le32(raw + i * 8, (uint32_t)(b - prev));
        put_le32(raw + i * 8 + 4, crc);
        prev = b;
        b++;
        i++;
    }
    int r = compress2(z, &zlen, raw, (uLong)(i * 8), 6);
    free(raw);
    if (r != Z_OK) {
        free(z);
        return bv_error_setf(errp, EIO, "cannot compress a CRC map");
    }
    *out = z;
    *len = zlen;
    return 0;
}

int bv_crcmap_load(const uint8_t *data, size_t len, uint64_t disk_size, struct bv_crcmap **out,
                   bv_error **errp)
{
    struct bv_crcmap *m = NULL;
    int r = bv_crcmap_new(disk_size, &m, errp);
    if (r < 0)
        return r;
    uLongf cap = (uLongf)(m->nblocks * 8);
    uint8_t *raw = malloc(cap ? cap : 1);
    if (!raw) {
        bv_crcmap_free(m);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    uLongf raw_len = cap;
    if (len && uncompress(raw, &raw_len, data, (uLong)len) != Z_OK) {
        free(raw);
        bv_crcmap_free(m);
        return bv_error_setf(errp, EINVAL, "stored CRC map is damaged");
    }
    if (!len)
        raw_len = 0;
    uint64_t b = 0;
    for (size_t i = 0; i + 8 <= raw_len; i += 8) {
        b += get_le32(raw + i);
        if (b >= m->nblocks) {
            free(raw);
            bv_crcmap_free(m);
            return bv_error_setf(errp, EINVAL, "stored CRC map names a block past the disk");
        }
        set_nolock(m, b, get_le32(raw + i + 4));
    }
    free(raw);
    *out = m;
    return 0;
}

/* ---- digests --------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    /* splitmix64's finaliser: a well-spread 64-bit hash */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void bv_digest_init(struct bv_digest *d)
{
    d->a = d->b = 0;
}

static void term(uint64_t block, uint32_t crc, uint64_t *a, uint64_t *b)
{
    uint64_t k = block << 32 | crc;
    *a = mix(k);
    *b = mix(k ^ 0x6a09e667f3bcc909ULL);
}

void bv_digest_change(struct bv_digest *d, uint64_t disk_size, uint64_t block, bool had_old,
                      uint32_t old_crc, uint32_t crc)
{
    uint32_t zero = bv_crc_zero(bv_crc_block_len(disk_size, block));
    uint64_t a, b;
    if (had_old && old_crc != zero) {
        term(block, old_crc, &a, &b);
        d->a -= a;
        d->b -= b;
    }
    if (crc != zero) {
        term(block, crc, &a, &b);
        d->a += a;
        d->b += b;
    }
}

void bv_digest_of_map(struct bv_digest *d, const struct bv_crcmap *m)
{
    bv_digest_init(d);
    uint64_t b = 0;
    uint32_t crc;
    while (bv_crcmap_next(m, &b, &crc)) {
        bv_digest_change(d, m->disk_size, b, false, 0, crc);
        b++;
    }
}

void bv_digest_hex(const struct bv_digest *d, char out[33])
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)d->a, (unsigned long long)d->b);
}
