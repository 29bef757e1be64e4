/*
 * hbitmap: a sparse hierarchical bitmap over a byte range, one bit per
 * granule of 2^gran_shift bytes.  It is the storage under every dirty bitmap
 * (core/bitmap/dirty-bitmap.c) and the backup job's copy bitmap.
 *
 * Why not a flat array: a 16 TiB drive at 512-byte granularity has 2^35
 * granules (4 GiB of flat bits) while a typical bitmap has a few runs set.
 * Here memory follows the set bits: 4 KiB leaves of 32768 bits are allocated
 * only when they hold a mix of set and clear bits; an all-clear subtree is a
 * NULL pointer and an all-set subtree is a shared "full" marker, so both an
 * empty bitmap and a fully set one (a full backup's copy bitmap) cost a few
 * pointers.  Worst case (bits scattered so that every leaf is mixed) is the
 * flat size plus about 0.4 % for the inner nodes.
 *
 * Costs (d = depth = 1 + ceil((log2(bits) - 15) / 9), at most 6):
 *   set / reset of a range   O(d + leaves touched + words touched)
 *   get                      O(d)
 *   count                    O(1): every node keeps its subtree's count
 *   next set / next clear    O(d * 8) word scans per level plus one leaf scan
 *   iterate runs             one next_set + one next_clear per run
 *   merge, serialize         proportional to the runs in the source range
 *   copy                     proportional to the allocated nodes
 *
 * Offsets and lengths are in bytes (items); a range touches every granule it
 * overlaps by even one byte.  Ranges are clamped to the bitmap's size; bits
 * past the size are never set.  Not thread safe: the owner locks.
 *
 * Errors: 0 or -errno (-ENOMEM when a leaf cannot be allocated, -EINVAL for a
 * bad argument).  A failed set/reset leaves a consistent bitmap with part of
 * the range applied.
 */
#ifndef BV_UTIL_HBITMAP_H
#define BV_UTIL_HBITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hbitmap;

#define HBITMAP_MAX_GRAN_SHIFT 40
#define HBITMAP_MAX_SIZE       ((uint64_t)INT64_MAX)
#define HBITMAP_MAX_BITS       (1ULL << 60)

/* New empty bitmap over size bytes, granule 2^gran_shift bytes.  The caller
 * frees it with hbitmap_free(). */
int hbitmap_new(uint64_t size, unsigned gran_shift, struct hbitmap **out);
void hbitmap_free(struct hbitmap *hb);
/* Deep copy; *out is owned by the caller. */
int hbitmap_copy(const struct hbitmap *src, struct hbitmap **out);

uint64_t hbitmap_size(const struct hbitmap *hb);       /* bytes covered */
unsigned hbitmap_gran_shift(const struct hbitmap *hb);
uint64_t hbitmap_nbits(const struct hbitmap *hb);      /* ceil(size / granule) */
uint64_t hbitmap_count(const struct hbitmap *hb);      /* set bits, O(1) */
bool hbitmap_is_empty(const struct hbitmap *hb);
/* Bytes allocated by the structure (nodes, leaves and the handle). */
uint64_t hbitmap_mem_usage(const struct hbitmap *hb);

/* Set every granule that [off, off+len) touches. */
int hbitmap_set(struct hbitmap *hb, uint64_t off, uint64_t len);
/* Clear the granules that lie wholly inside [off, off+len); a range that
 * reaches the end of the bitmap also clears the (short) last granule. */
int hbitmap_reset(struct hbitmap *hb, uint64_t off, uint64_t len);
void hbitmap_reset_all(struct hbitmap *hb);
bool hbitmap_get(const struct hbitmap *hb, uint64_t off);

/* First byte offset in [off, min(end, size)) whose granule is set (resp.
 * clear); -1 when there is none. */
int64_t hbitmap_next_set(const struct hbitmap *hb, uint64_t off, uint64_t end);
int64_t hbitmap_next_clear(const struct hbitmap *hb, uint64_t off, uint64_t end);
/* First run of set granules meeting [off, min(end, size)), clipped to that
 * window.  Returns false when there is none. */
bool hbitmap_next_run(const struct hbitmap *hb, uint64_t off, uint64_t end,
                      uint64_t *run_off, uint64_t *run_len);

/* dst |= src: every granule of dst that a set granule of src touches is set.
 * Granularities may differ; src ranges beyond dst's size are ignored. */
int hbitmap_merge(struct hbitmap *dst, const struct hbitmap *src);

/* Change the covered size.  Growing adds clear granules; shrinking drops the
 * bits of granules that start at or after the new end. */
int hbitmap_truncate(struct hbitmap *hb, uint64_t new_size);

/*
 * Serialized form: ceil(nbits / 8) bytes, bit n in byte n/8 at bit n%8
 * (least significant first), as qcow2 persistent bitmaps store it; unused
 * tail bits are 0.  Both calls work on a byte window so a huge bitmap can be
 * streamed in bounded chunks.  deserialize replaces the window's bits and
 * refuses (-EINVAL) a window outside the size or set tail bits.
 */
uint64_t hbitmap_serialized_size(const struct hbitmap *hb);
int hbitmap_serialize(const struct hbitmap *hb, uint64_t byte_off,
                      uint8_t *buf, size_t len);
int hbitmap_deserialize(struct hbitmap *hb, uint64_t byte_off,
                        const uint8_t *buf, size_t len);

#endif
