/*
 * blkverify: catch a block driver returning wrong data the first time it
 * does.  A verifying node has two children, `test` (any format, the image
 * under test) and `raw` (a plain file holding what `test` should read as).
 * Writes, zeroes and discards go to both; every read goes to both and the
 * results are compared.  See reference/qemu-semantics.md §8.
 *
 * Unlike QEMU, a mismatch never ends the process.  The read fails with -EIO
 * (error kind BV_ERR_MISMATCH, offset = first differing byte) and the
 * message
 *     blkverify: read offset=O bytes=N contents mismatch in sector S
 * where S = first differing byte / 512, and a report is handed to the
 * opener's callback before the call returns.  Reads that avoid the bad bytes
 * succeed; the node keeps serving.  When one child fails a request and the
 * other does not, the request fails with -EIO and
 *     blkverify: <op> offset=O bytes=N return value mismatch T != R
 * (T, R: the test and raw results, 0 or -errno) and is reported too.  When
 * both fail, the test child's error is returned and nothing is reported.
 *
 * The node works with every bv_node_* call: its size is the test image's,
 * bv_node_info/block status/check/cluster size describe the test image
 * (bv_node_format returns BV_FMT_NONE: it is not one format), a flush
 * flushes the test image then the raw file, and bv_node_close closes both.
 * Resize is not supported (-ENOTSUP).
 *
 * Threads: the node holds no mutable state of its own, so it is as
 * concurrent as its children; the report callback may be called from
 * several threads at once and must not call back into this node.
 */
#ifndef BV_BLKVERIFY_H
#define BV_BLKVERIFY_H

#include <stdint.h>

#include "bv/error.h"
#include "bv/image.h"

#define BV_BLKVERIFY_MAX_EXTENTS   64   /* differing ranges kept in a report */
#define BV_BLKVERIFY_MAX_SAMPLES   8    /* hex samples kept in a report */
#define BV_BLKVERIFY_SAMPLE_BYTES  16   /* bytes per sample */

enum bv_blkverify_kind {
    BV_BLKVERIFY_CONTENTS = 0,          /* both read fine, the data differs */
    BV_BLKVERIFY_RETURN_VALUE,          /* one child failed, the other did not */
};

enum bv_blkverify_op {
    BV_BLKVERIFY_OP_READ = 0,
    BV_BLKVERIFY_OP_WRITE,
    BV_BLKVERIFY_OP_WRITE_ZEROES,
    BV_BLKVERIFY_OP_DISCARD,
    BV_BLKVERIFY_OP_FLUSH,
};

struct bv_blkverify_extent {
    uint64_t offset, length;            /* guest bytes; adjacent differing bytes merged */
};

struct bv_blkverify_sample {
    uint64_t offset;                    /* start of a differing extent */
    unsigned length;                    /* bytes shown: ≤ BV_BLKVERIFY_SAMPLE_BYTES, within
                                           the request */
    char test_hex[2 * BV_BLKVERIFY_SAMPLE_BYTES + 1];   /* lowercase, no spaces */
    char raw_hex[2 * BV_BLKVERIFY_SAMPLE_BYTES + 1];
};

/* Valid only during the callback (it lives on the caller's stack). */
struct bv_blkverify_report {
    enum bv_blkverify_kind kind;
    enum bv_blkverify_op op;
    const char *test_filename;          /* the test image's host path */
    const char *raw_filename;           /* the raw file's host path */
    uint64_t offset, length;            /* the request */
    int test_ret, raw_ret;              /* RETURN_VALUE: 0 or -errno of each child */
    /* CONTENTS only (zero otherwise): */
    uint64_t first_mismatch_offset;     /* first differing byte */
    uint64_t first_mismatch_sector;     /* first_mismatch_offset / 512 */
    uint64_t mismatched_bytes;          /* differing bytes in the request */
    uint64_t extents_total;             /* differing ranges in the request */
    unsigned nextents;                  /* the first min(total, MAX_EXTENTS) of them */
    struct bv_blkverify_extent extents[BV_BLKVERIFY_MAX_EXTENTS];
    unsigned nsamples;                  /* one per extent, the first MAX_SAMPLES */
    struct bv_blkverify_sample samples[BV_BLKVERIFY_MAX_SAMPLES];
};

typedef void bv_blkverify_report_fn(void *opaque, const struct bv_blkverify_report *r);

struct bv_blkverify_opts {
    struct bv_open_opts test;           /* any format; may carry a blkdebug config */
    struct bv_open_opts raw;            /* format must be BV_FMT_RAW or BV_FMT_NONE (taken as
                                           raw, never probed); blkdebug not allowed */
    bv_blkverify_report_fn *report;     /* may be NULL */
    void *opaque;
};

/* Open both children and build the verifying node; on success *out owns both (close
 * with bv_node_close).  The node is read-only if either child is.  Errors: a child
 * that does not open (its message, prefixed "blkverify: test: " or "blkverify: raw: "),
 * a raw file shorter than the test image's virtual size (-EINVAL). */
int bv_blkverify_open(const struct bv_blkverify_opts *o, bv_node **out, bv_error **errp);

/* "read", "write", "write_zeroes", "discard", "flush"; NULL out of range. */
const char *bv_blkverify_op_name(enum bv_blkverify_op op);

#endif
