/*
 * Verify: re-read stored data and prove it is what was written (contract:
 * "Verification"; the idea is blkverify's: say exactly which block is bad).
 *
 * Two kinds of work, both typed, no SQL or JSON (the service supplies the
 * catalog's CRC maps and files the reports):
 *
 *   bv_verify_blocks   checksum: re-read the blocks a backup link wrote (its
 *                      own CRC map, bv/crcmap.h) through the link's point in
 *                      time and compare each 64 KiB block's CRC32 with the
 *                      stored one.  Cost: the link's data, never the drive
 *                      size.  Threads (BV_VERIFY_THREADS) claim runs of
 *                      present blocks of at most BV_VERIFY_CHUNK bytes and
 *                      read each in pieces of BV_VERIFY_PIECE (L2-sized),
 *                      each block's CRC computed right after its read while
 *                      it is still in cache.  Where the link holds the data
 *                      uncompressed the pieces are read from its file at the
 *                      host offsets block status gave (bv_node_pread_host).
 *   bv_verify_compare  compare: bv_image_compare_ex over the two sides, a
 *                      full scan (extents, byte counts), wired to the job's
 *                      progress and cancel.
 *
 * The job: a verify is recorded, queried and reported as any job (type
 * "verify", QEMU's status machine).  Which sides to open, what to record and
 * how to heal belong to the service, so the driver's run calls the caller's
 * function on a worker (as a prune does, bv/prune.h).  A verify does not
 * pause; cancel is seen between chunks.
 */
#ifndef BV_VERIFY_H
#define BV_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/crcmap.h"
#include "bv/image.h"
#include "bv/job.h"

#define BV_VERIFY_CHUNK    (1u << 20)   /* bytes per claimed run: 16 blocks */
#define BV_VERIFY_PIECE    (128u << 10) /* bytes per read: 2 blocks (bench/README.md) */
#define BV_VERIFY_THREADS  2u           /* readers of a checksum verify */
#define BV_VERIFY_MAX_BAD_EXTENTS 4096u /* merged bad extents kept; past it the last one
                                           grows to cover the rest (never loses a block) */
#define BV_VERIFY_SAMPLE   16u          /* bytes of a sample */

struct bv_verify_extent {
    uint64_t offset, length;
};

struct bv_verify_blocks_opts {
    bv_node *point;                      /* the link with its chain, read-only */
    const struct bv_crcmap *map;         /* the link's own map: the blocks to check */
    struct bv_job *job;                  /* progress and cancel; may be NULL */
    unsigned threads;                    /* 0: BV_VERIFY_THREADS (at most 16) */
    uint32_t chunk;                      /* bytes per claimed run, a multiple of 64 KiB;
                                            0: BV_VERIFY_CHUNK (at most 16 MiB) */
    uint32_t piece;                      /* bytes per read, a multiple of 64 KiB, at
                                            most chunk; 0: BV_VERIFY_PIECE */
};

struct bv_verify_blocks_result {
    uint64_t blocks_checked, bytes_read;
    uint64_t bad_blocks;                 /* whole 64 KiB blocks whose CRC differs */
    uint64_t bad_bytes;                  /* their lengths (the last block may be short) */
    uint64_t first_bad;                  /* guest offset of the first bad block, or UINT64_MAX */
    uint8_t sample[BV_VERIFY_SAMPLE];    /* the point's bytes at first_bad */
    uint32_t sample_len;
    struct bv_verify_extent *extents;    /* owned: merged bad ranges, ascending */
    size_t n_extents;                    /* ≤ BV_VERIFY_MAX_BAD_EXTENTS */
    uint64_t extents_total;              /* merged ranges before the cap */
};

/* Check every present block of o->map by reading it through o->point.  A
 * read error fails the call (the caller decides whether that is damage);
 * -ECANCELED once the job is cancelled.  *res is always initialised; free
 * it with bv_verify_blocks_free. */
int bv_verify_blocks(const struct bv_verify_blocks_opts *o, struct bv_verify_blocks_result *res,
                     bv_error **errp);
void bv_verify_blocks_free(struct bv_verify_blocks_result *res);

/* bv_image_compare_ex (full scan, max_extents) with the job's progress (len
 * = the larger size) and cancel.  *rep as there (free with
 * bv_compare_report_free). */
int bv_verify_compare(struct bv_job *job, bv_node *test, bv_node *ref, size_t max_extents,
                      struct bv_compare_report *rep, bv_error **errp);

struct bv_verify_job_opts {
    /* The work, on a worker: 0 done, -errno failed (-ECANCELED: cancelled). */
    int (*run)(struct bv_job *job, void *opaque, bv_error **errp);
    void *opaque;
    /* The job's state is gone (after it ended, or when create fails):
     * release_opaque may be freed.  May be NULL. */
    void (*release)(void *opaque);
    void *release_opaque;
};

/* Create a verify job (status created; bv_job_start runs it).  On failure
 * release has been called. */
int bv_verify_job_create(struct bv_job_ctx *ctx, const struct bv_job_opts *jo,
                         const struct bv_verify_job_opts *o, struct bv_job **out,
                         bv_error **errp);

#endif
