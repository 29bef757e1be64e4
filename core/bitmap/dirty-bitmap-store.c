/*
 * Persistence helpers for dirty bitmaps: contents to and from zlib data.
 * The caller (db/ via the service) stores the blob with the bitmap's name,
 * granularity and flags; the disk size comes from the drive.
 *
 * Format: the zlib stream (RFC 1950, what compress2() produces; level 1,
 * since bitmaps are mostly zeros and speed matters more) of the
 * LSB-first bitmap of hbitmap.h, ceil(ceil(size/g)/8) bytes.  Both ways
 * stream through 64 KiB buffers: memory is the bitmap itself (sparse), the
 * output blob (capped by the caller) and the zlib state.  Time is
 * proportional to the raw size (zlib must see every byte, mostly zeros:
 * about 1 GB/s), so a 16 TiB drive at 64 KiB granularity (32 MiB raw) takes
 * tens of milliseconds.
 *
 * Loading never trusts the blob: a stream that is corrupt, ends early, is
 * longer than the expected raw size, has trailing bytes or sets bits past
 * the disk end is -EINVAL and creates nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bitmap/dirty-bitmap-int.h"
#include "bv/dirty-bitmap.h"
#include "util/hbitmap.h"

#define CHUNK (64u * 1024u)
#define FEED_MAX (1u << 30)                 /* zlib's avail_in is 32-bit */

struct outbuf {
    uint8_t *p;
    size_t len, cap, max;
};

/* Make room for CHUNK more bytes, doubling, within max. */
static int outbuf_reserve(struct outbuf *o)
{
    if (o->cap - o->len >= CHUNK)
        return 0;
    if (o->len >= o->max)
        return -EFBIG;
    size_t want = o->cap ? o->cap * 2 : 4 * CHUNK;
    if (want > o->max + CHUNK || want < o->cap)
        want = o->max + CHUNK;           /* room to notice the overrun */
    uint8_t *n = realloc(o->p, want);
    if (!n)
        return -ENOMEM;
    o->p = n;
    o->cap = want;
    return 0;
}

/* Run deflate over the whole of the input buffer (flush: Z_NO_FLUSH or
 * Z_FINISH) appending to o. */
static int deflate_step(z_stream *zs, struct outbuf *o, int flush)
{
    int zr;
    do {
        int r = outbuf_reserve(o);
        if (r < 0)
            return r;
        zs->next_out = o->p + o->len;
        zs->avail_out = CHUNK;
        zr = deflate(zs, flush);
        if (zr == Z_STREAM_ERROR)
            return -EIO;
        o->len += CHUNK - zs->avail_out;
        if (o->len > o->max)
            return -EFBIG;
    } while (zs->avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
    return 0;
}

static int compress_hbitmap(const struct hbitmap *hb, struct outbuf *o)
{
    uint8_t *chunk = malloc(CHUNK);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (!chunk || deflateInit(&zs, Z_BEST_SPEED) != Z_OK) {
        free(chunk);
        return -ENOMEM;
    }
    uint64_t total = hbitmap_serialized_size(hb);
    int r = 0;
    for (uint64_t off = 0; r == 0 && off < total; off += CHUNK) {
        size_t n = total - off < CHUNK ? (size_t)(total - off) : CHUNK;
        r = hbitmap_serialize(hb, off, chunk, n);
        zs.next_in = chunk;
        zs.avail_in = (uInt)n;
        if (r == 0)
            r = deflate_step(&zs, o, Z_NO_FLUSH);
    }
    zs.avail_in = 0;
    if (r == 0)
        r = deflate_step(&zs, o, Z_FINISH);
    deflateEnd(&zs);
    free(chunk);
    return r;
}

int bv_bitmap_serialize(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm,
                        size_t max_len, uint8_t **out, size_t *out_len,
                        bv_error **errp)
{
    struct hbitmap *copy = NULL;
    dbm_lock(set);
    int r = hbitmap_copy(bm->hb, &copy);
    const char *name = bm->name ? bm->name : "";
    char label[64];
    snprintf(label, sizeof(label), "%.40s", name);
    dbm_unlock(set);
    if (r < 0)
        return bv_error_setf(errp, -r, "Out of memory");
    struct outbuf o = { .max = max_len };
    r = compress_hbitmap(copy, &o);
    hbitmap_free(copy);
    if (r < 0) {
        free(o.p);
        return bv_error_setf(errp, -r, "Cannot serialize bitmap '%s'%s",
                             label, r == -EFBIG ? ": too large" : "");
    }
    *out = o.p;
    *out_len = o.len;
    return 0;
}

/* Inflate data into hb, checking the exact length (see the file comment). */
static int inflate_into(struct hbitmap *hb, const uint8_t *data, size_t len)
{
    uint8_t *chunk = malloc(CHUNK);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (!chunk || inflateInit(&zs) != Z_OK) {
        free(chunk);
        return -ENOMEM;
    }
    uint64_t want = hbitmap_serialized_size(hb), got = 0;
    size_t fed = 0;
    int zr = Z_OK, r = 0;
    while (r == 0 && zr != Z_STREAM_END) {
        if (zs.avail_in == 0 && fed < len) {
            size_t n = len - fed < FEED_MAX ? len - fed : FEED_MAX;
            zs.next_in = (Bytef *)(uintptr_t)(data + fed);
            zs.avail_in = (uInt)n;
            fed += n;
        }
        zs.next_out = chunk;
        zs.avail_out = CHUNK;
        zr = inflate(&zs, Z_NO_FLUSH);
        size_t n = CHUNK - zs.avail_out;
        if (zr != Z_OK && zr != Z_STREAM_END)
            r = -EINVAL;                    /* corrupt, or truncated input */
        else if (n > want - got)
            r = -EINVAL;                    /* longer than the bitmap */
        else if (n)
            r = hbitmap_deserialize(hb, got, chunk, n);
        got += n;
    }
    if (r == 0 && (got != want || zs.avail_in != 0 || fed != len))
        r = -EINVAL;                        /* short, or trailing bytes */
    inflateEnd(&zs);
    free(chunk);
    return r;
}

int bv_bitmap_load(struct bv_bitmap_set *set, const char *name,
                   uint32_t granularity, unsigned flags, const uint8_t *data,
                   size_t len, struct bv_dirty_bitmap **out, bv_error **errp)
{
    struct bv_dirty_bitmap *bm = NULL;
    int r = dbm_check_new(set, name, granularity, flags, errp);
    if (r < 0)
        return r;
    if ((uint64_t)len > BV_BITMAP_BLOB_MAX)
        return bv_error_setf(errp, EINVAL, "Stored bitmap '%s' is too large",
                             name);
    uint64_t size = bv_bitmap_set_disk_size(set);
    r = dbm_alloc(name, granularity, size, flags, &bm);
    if (r < 0)
        return bv_error_setf(errp, -r, "Cannot create bitmap '%s'", name);
    if (!(flags & BV_BITMAP_F_INCONSISTENT)) {
        r = inflate_into(bm->hb, data, len);
        if (r < 0)
            bv_error_setf(errp, -r, r == -EINVAL ?
                          "Stored data of bitmap '%s' is invalid" :
                          "Cannot load bitmap '%s'", name);
    }
    if (r == 0) {
        dbm_lock(set);
        r = dbm_insert_named_locked(set, bm, errp);
        dbm_unlock(set);
    }
    if (r < 0)
        dbm_free(bm);
    else if (out)
        *out = bm;
    return r;
}
