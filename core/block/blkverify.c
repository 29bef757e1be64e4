/*
 * blkverify: a verifying node over two children, `test` and `raw` (see
 * include/bv/blkverify.h for the contract and reference/qemu-semantics.md
 * §8 for QEMU's behaviour, which we follow except that we never exit).
 *
 * Shape: a FORMAT-kind node built with bv_node_new_filter.  Its file child
 * is the raw image's protocol node (taken from a raw open, so confinement
 * and read-only rules are node.c's); the test image is a whole node stack
 * kept in the instance state and closed by our close op.  node.c's flush
 * calls our flush_to_os (flush the test image) and then flushes the file
 * child (fdatasync of the raw file), so a flush with nothing written since
 * the last one does nothing, on either side.
 *
 * Reads: the test child reads into the caller's buffer, the raw child into
 * a scratch buffer of at most CHUNK bytes at a time, compared as it goes
 * (memcmp first; a byte scan only for chunks that differ).  Cost: one extra
 * read of the request plus, on a mismatch, one 16-byte raw read per sample.
 */
#include "block/driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bv/blkverify.h"

#define CHUNK (1u << 20)

struct blkverify {
    bv_node *test;                       /* owned; immutable after open */
    bv_blkverify_report_fn *report;
    void *opaque;
};

static const char *const op_names[] = {
    [BV_BLKVERIFY_OP_READ] = "read",
    [BV_BLKVERIFY_OP_WRITE] = "write",
    [BV_BLKVERIFY_OP_WRITE_ZEROES] = "write_zeroes",
    [BV_BLKVERIFY_OP_DISCARD] = "discard",
    [BV_BLKVERIFY_OP_FLUSH] = "flush",
};

const char *bv_blkverify_op_name(enum bv_blkverify_op op)
{
    return (unsigned)op < sizeof(op_names) / sizeof(op_names[0]) ? op_names[op] : NULL;
}

static void report_init(bv_node *n, struct bv_blkverify_report *rep, enum bv_blkverify_kind kind,
                        enum bv_blkverify_op op, uint64_t off, uint64_t len)
{
    struct blkverify *s = n->opaque;
    memset(rep, 0, sizeof(*rep));
    rep->kind = kind;
    rep->op = op;
    rep->test_filename = bv_node_filename(s->test);
    rep->raw_filename = n->file->filename;
    rep->offset = off;
    rep->length = len;
}

static void report(bv_node *n, const struct bv_blkverify_report *rep)
{
    struct blkverify *s = n->opaque;
    if (s->report)
        s->report(s->opaque, rep);
}

/*
 * Both children have answered a request with tr (test) and rr (raw).  Both
 * fine: 0.  Both failed: the test's error.  Otherwise a return value
 * mismatch: report it and fail with EIO.  Consumes *terr.
 */
static int settle(bv_node *n, enum bv_blkverify_op op, uint64_t off, uint64_t len, int tr,
                  int rr, bv_error **terr, bv_error **errp)
{
    if ((tr < 0) == (rr < 0)) {
        bv_error_propagate(errp, terr);
        return tr < 0 ? tr : 0;
    }
    bv_error_free(*terr);
    *terr = NULL;
    struct bv_blkverify_report rep;
    report_init(n, &rep, BV_BLKVERIFY_RETURN_VALUE, op, off, len);
    rep.test_ret = tr;
    rep.raw_ret = rr;
    report(n, &rep);
    return bv_error_set_kind(errp, EIO, BV_ERR_MISMATCH, off,
                             "blkverify: %s offset=%llu bytes=%llu return value mismatch "
                             "%d != %d", op_names[op], (unsigned long long)off,
                             (unsigned long long)len, tr, rr);
}

/* ---------------- comparing a read ---------------- */

/* Account one chunk: t and r are the test and raw bytes at file offset off. */
static void scan_chunk(struct bv_blkverify_report *rep, bool *in_extent, uint64_t off,
                       const uint8_t *t, const uint8_t *r, size_t len)
{
    if (memcmp(t, r, len) == 0) {
        *in_extent = false;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (t[i] == r[i]) {
            *in_extent = false;
            continue;
        }
        if (rep->mismatched_bytes++ == 0)
            rep->first_mismatch_offset = off + i;
        if (*in_extent) {
            if (rep->extents_total == rep->nextents)    /* the open extent is kept */
                rep->extents[rep->nextents - 1].length++;
            continue;
        }
        *in_extent = true;
        if (rep->nextents < BV_BLKVERIFY_MAX_EXTENTS)
            rep->extents[rep->nextents++] = (struct bv_blkverify_extent){ off + i, 1 };
        rep->extents_total++;
    }
}

/* Read the raw child over the request, comparing with the test's bytes in tbuf
 * (unless tbuf is NULL).  Returns the raw child's result. */
static int read_raw(bv_node *n, const uint8_t *tbuf, uint64_t len, uint64_t off,
                    struct bv_blkverify_report *rep, bv_error **errp)
{
    uint8_t *scratch = malloc(len < CHUNK ? (size_t)len : CHUNK);
    if (!scratch)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    bool in_extent = false;
    int r = 0;
    for (uint64_t done = 0; r == 0 && done < len;) {
        size_t step = len - done < CHUNK ? (size_t)(len - done) : CHUNK;
        r = bv_child_pread(n->file, scratch, step, off + done, errp);
        if (r == 0 && tbuf)
            scan_chunk(rep, &in_extent, off + done, tbuf + done, scratch, step);
        done += step;
    }
    free(scratch);
    return r;
}

static void to_hex(char *out, const uint8_t *p, unsigned len)
{
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    out[2 * len] = '\0';
}

/* One sample at the start of each of the first extents. */
static void take_samples(bv_node *n, const uint8_t *tbuf, struct bv_blkverify_report *rep)
{
    unsigned count = rep->nextents < BV_BLKVERIFY_MAX_SAMPLES ? rep->nextents
                                                              : BV_BLKVERIFY_MAX_SAMPLES;
    for (unsigned i = 0; i < count; i++) {
        struct bv_blkverify_sample *sm = &rep->samples[i];
        uint64_t rel = rep->extents[i].offset - rep->offset;
        uint64_t left = rep->length - rel;
        uint8_t raw[BV_BLKVERIFY_SAMPLE_BYTES];
        sm->offset = rep->extents[i].offset;
        sm->length = left < BV_BLKVERIFY_SAMPLE_BYTES ? (unsigned)left
                                                      : BV_BLKVERIFY_SAMPLE_BYTES;
        to_hex(sm->test_hex, tbuf + rel, sm->length);
        if (bv_child_pread(n->file, raw, sm->length, sm->offset, NULL) == 0)
            to_hex(sm->raw_hex, raw, sm->length);
    }
    rep->nsamples = count;
}

static int bvf_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    struct blkverify *s = n->opaque;
    bv_error *terr = NULL, *rerr = NULL;
    struct bv_blkverify_report rep;
    report_init(n, &rep, BV_BLKVERIFY_CONTENTS, BV_BLKVERIFY_OP_READ, off, len);
    int tr = bv_node_pread(s->test, buf, len, off, &terr);
    int rr = read_raw(n, tr == 0 ? buf : NULL, len, off, &rep, &rerr);
    bv_error_free(rerr);
    if (tr < 0 || rr < 0)
        return settle(n, BV_BLKVERIFY_OP_READ, off, len, tr, rr, &terr, errp);
    if (rep.mismatched_bytes == 0)
        return 0;
    rep.first_mismatch_sector = rep.first_mismatch_offset / 512;
    take_samples(n, buf, &rep);
    report(n, &rep);
    return bv_error_set_kind(errp, EIO, BV_ERR_MISMATCH, rep.first_mismatch_offset,
                             "blkverify: read offset=%llu bytes=%llu contents mismatch in "
                             "sector %llu", (unsigned long long)off, (unsigned long long)len,
                             (unsigned long long)rep.first_mismatch_sector);
}

/* ---------------- mirrored writes, pass-through queries ---------------- */

static int bvf_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                      bv_error **errp)
{
    struct blkverify *s = n->opaque;
    bv_error *terr = NULL, *rerr = NULL;
    /* FUA: node.c flushes this node (both children) after we return. */
    int tr = bv_node_pwrite(s->test, buf, len, off, flags & ~BV_WRITE_FUA, &terr);
    int rr = bv_child_pwrite(n->file, buf, len, off, &rerr);
    bv_error_free(rerr);
    return settle(n, BV_BLKVERIFY_OP_WRITE, off, len, tr, rr, &terr, errp);
}

static int bvf_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    struct blkverify *s = n->opaque;
    bv_error *terr = NULL, *rerr = NULL;
    int tr = bv_node_write_zeroes(s->test, len, off, flags, &terr);
    int rr = bv_child_write_zeroes(n->file, len, off, flags, &rerr);
    bv_error_free(rerr);
    return settle(n, BV_BLKVERIFY_OP_WRITE_ZEROES, off, len, tr, rr, &terr, errp);
}

/* A discarded range reads as zeros (bv_node_discard's contract), so the raw
 * side is zeroed, with leave to free its space, as the raw format does. */
static int bvf_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    struct blkverify *s = n->opaque;
    bv_error *terr = NULL, *rerr = NULL;
    int tr = bv_node_discard(s->test, len, off, &terr);
    int rr = bv_child_write_zeroes(n->file, len, off, BV_ZERO_MAY_UNMAP, &rerr);
    bv_error_free(rerr);
    return settle(n, BV_BLKVERIFY_OP_DISCARD, off, len, tr, rr, &terr, errp);
}

/* node.c's flush: this, then a flush of the file child (the raw file). */
static int bvf_flush_test(bv_node *n, bv_error **errp)
{
    struct blkverify *s = n->opaque;
    return bv_node_flush(s->test, errp);
}

static int bvf_block_status(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                            bv_error **errp)
{
    struct blkverify *s = n->opaque;
    return bv_node_block_status(s->test, off, len, bs, errp);
}

static int bvf_info(bv_node *n, struct bv_image_info *info, bv_error **errp)
{
    struct blkverify *s = n->opaque;
    return bv_node_info(s->test, info, errp);
}

static int bvf_check(bv_node *n, bool repair, struct bv_check_result *res, bv_error **errp)
{
    struct blkverify *s = n->opaque;
    return bv_image_check(s->test, repair, res, errp);
}

static uint32_t bvf_cluster_size(const bv_node *n)
{
    const struct blkverify *s = n->opaque;
    return bv_node_cluster_size(s->test);
}

static void bvf_close(bv_node *n)
{
    struct blkverify *s = n->opaque;
    bv_node_close(s->test, NULL);    /* already flushed by node.c's close */
    s->test = NULL;
}

const struct bv_driver bv_drv_blkverify = {
    .name = "blkverify",
    .kind = BV_DRV_FORMAT,
    .format = BV_FMT_NONE,
    .instance_size = sizeof(struct blkverify),
    .close = bvf_close,
    .pread = bvf_pread,
    .pwrite = bvf_pwrite,
    .write_zeroes = bvf_write_zeroes,
    .discard = bvf_discard,
    .flush_to_os = bvf_flush_test,
    .block_status = bvf_block_status,
    .info = bvf_info,
    .check = bvf_check,
    .cluster_size = bvf_cluster_size,
};

/* ---------------- open ---------------- */

/* Open the raw child and keep only its protocol node (*out owns it). */
static int open_raw_file(const struct bv_open_opts *o, bv_node **out, bv_error **errp)
{
    if (o->format != BV_FMT_NONE && o->format != BV_FMT_RAW)
        return bv_error_setf(errp, EINVAL, "the raw child must be a raw image, not %s",
                             bv_format_name(o->format));
    if (o->filters && o->filters->n) {
        const char *name = bv_filter_name(o->filters->f[0].kind);
        return bv_error_setf(errp, EINVAL, "the raw child cannot have a %s filter",
                             name ? name : "(unknown)");
    }
    struct bv_open_opts ro = *o;
    ro.format = BV_FMT_RAW;
    ro.no_backing = true;
    bv_node *raw = NULL;
    int r = bv_node_open(&ro, &raw, errp);
    if (r < 0)
        return r;
    *out = raw->file;                /* steal the protocol node from the raw format node */
    raw->file = NULL;
    bv_node_close(raw, NULL);        /* nothing written: no flush, frees only the raw node */
    return 0;
}

static int check_sizes(bv_node *test, bv_node *raw_file, bv_error **errp)
{
    uint64_t len = 0;
    int r = bv_child_length(raw_file, &len, errp);
    if (r == 0 && len < bv_node_size(test))
        r = bv_error_setf(errp, EINVAL, "blkverify: raw image '%s' (%llu bytes) is smaller "
                          "than the test image '%s' (%llu bytes)", raw_file->filename,
                          (unsigned long long)len, bv_node_filename(test),
                          (unsigned long long)bv_node_size(test));
    return r;
}

/* Make n (whose file child is the raw file) present the test image. */
static int adopt_test(bv_node *n, bv_node *test, const struct bv_blkverify_opts *o,
                      bv_error **errp)
{
    struct blkverify *s = n->opaque;
    s->test = test;
    s->report = o->report;
    s->opaque = o->opaque;
    free(n->filename);
    n->filename = strdup(bv_node_filename(test));
    n->size = bv_node_size(test);
    n->read_only = test->read_only || n->file->read_only;
    return n->filename ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
}

int bv_blkverify_open(const struct bv_blkverify_opts *o, bv_node **out, bv_error **errp)
{
    bv_node *test = NULL, *raw_file = NULL, *n = NULL;
    *out = NULL;
    if (!o)
        return bv_error_setf(errp, EINVAL, "no blkverify options given");
    int r = bv_node_open(&o->test, &test, errp);
    if (r < 0) {
        bv_error_prepend(errp, "blkverify: test");
        return r;
    }
    r = open_raw_file(&o->raw, &raw_file, errp);
    if (r < 0) {
        bv_error_prepend(errp, "blkverify: raw");
        goto fail;
    }
    r = check_sizes(test, raw_file, errp);
    if (r < 0)
        goto fail;
    r = bv_node_new_filter(&bv_drv_blkverify, raw_file, &n, errp);   /* owns raw_file */
    raw_file = NULL;
    if (r < 0)
        goto fail;
    r = adopt_test(n, test, o, errp);                              /* n owns test */
    test = NULL;
    if (r < 0)
        goto fail;
    *out = n;
    return 0;
fail:
    bv_node_close(n, NULL);
    bv_node_close(raw_file, NULL);
    bv_node_close(test, NULL);
    return r;
}
