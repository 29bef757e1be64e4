/*
 * CRC maps: a CRC32 (zlib's) of each 64 KiB block of guest data a backup
 * link wrote, and the digest of a whole point in time built from them.
 *
 * A link's map holds the blocks that link wrote (an incremental: its dirty
 * clusters, zero blocks included; a full: its data blocks).  The point in
 * time of a link is the overlay of the maps of its chain from the full up to
 * it.  Its digest is the sum, over every block whose content is not all
 * zeroes, of a 128-bit mix of (block index, crc): a block that changes
 * moves the digest by the difference of its two terms, so a new link's
 * digest costs the blocks it wrote, not the drive size, and a restored
 * image's digest can be recomputed from its data alone.
 *
 * Storage: the present entries as little-endian (u32 index delta, u32 crc)
 * pairs, zlib-compressed — a fully written 1 GiB link is 16384 entries.
 * Memory: a flat array of the disk's blocks (4 bytes each) plus a present
 * bit per block.
 *
 * Threads: record() may be called from several copy threads at once (the
 * map's own mutex); the rest are single-threaded uses.
 */
#ifndef BV_CRCMAP_H
#define BV_CRCMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/error.h"

#define BV_CRC_BLOCK 65536u

struct bv_crcmap;

int bv_crcmap_new(uint64_t disk_size, struct bv_crcmap **out, bv_error **errp);
void bv_crcmap_free(struct bv_crcmap *m);
uint64_t bv_crcmap_blocks(const struct bv_crcmap *m);     /* ceil(disk_size / 64 KiB) */
uint64_t bv_crcmap_disk_size(const struct bv_crcmap *m);

/* [off, off+len) was written with data (NULL: zeroes).  off is a multiple
 * of 64 KiB; len too, except where the range ends at the disk's end. */
void bv_crcmap_record(struct bv_crcmap *m, uint64_t off, uint64_t len, const void *data);
/* Set one block's crc directly. */
void bv_crcmap_set(struct bv_crcmap *m, uint64_t block, uint32_t crc);
bool bv_crcmap_get(const struct bv_crcmap *m, uint64_t block, uint32_t *crc);
/* The next present block >= *block; false when none. */
bool bv_crcmap_next(const struct bv_crcmap *m, uint64_t *block, uint32_t *crc);
uint64_t bv_crcmap_count(const struct bv_crcmap *m);
/* dst := dst overlaid with src's present entries (same disk size or src
 * smaller: a drive that grew). */
void bv_crcmap_overlay(struct bv_crcmap *dst, const struct bv_crcmap *src);

/* zlib bytes of the present entries; *out malloc'd. */
int bv_crcmap_serialize(const struct bv_crcmap *m, uint8_t **out, size_t *len, bv_error **errp);
/* Bounded: refuses entries past the disk or inflating past the map's size. */
int bv_crcmap_load(const uint8_t *data, size_t len, uint64_t disk_size, struct bv_crcmap **out,
                   bv_error **errp);

/* CRC of a block of len zero bytes (len ≤ 64 KiB). */
uint32_t bv_crc_zero(uint64_t len);
/* Length of block i of a disk of size disk_size (the last may be short). */
uint64_t bv_crc_block_len(uint64_t disk_size, uint64_t block);

/* Digest of a point in time. */
struct bv_digest { uint64_t a, b; };
void bv_digest_init(struct bv_digest *d);
/* Block i's crc went from old (had_old: it had one) to crc; len is the
 * block's length (zero blocks contribute nothing). */
void bv_digest_change(struct bv_digest *d, uint64_t disk_size, uint64_t block, bool had_old,
                      uint32_t old_crc, uint32_t crc);
/* The digest of a whole map. */
void bv_digest_of_map(struct bv_digest *d, const struct bv_crcmap *m);
void bv_digest_hex(const struct bv_digest *d, char out[33]);

#endif
