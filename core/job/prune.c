/*
 * Prune: the merge of a removed link into its child, and the prune job
 * driver.  See include/bv/prune.h.
 *
 * Which layer decides a range: the child's (top) if it allocates it, else
 * the link's (top's backing), else neither.  A range decided by either is
 * read through top (so the child wins where both have data) and written to
 * out; where the deciding layer says zero it becomes zero clusters without
 * reading (a zero cluster hides out's backing, as the link's or the child's
 * did).  Data that reads as all zeroes is written as zeroes too.  A range
 * decided by neither stays unallocated in out: it reads from the link's
 * parent, as before.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bv/prune.h"

struct prune_job {
    int (*run)(struct bv_job *job, void *opaque, bv_error **errp);
    void *opaque;
    void (*release)(void *opaque);
    void *release_opaque;
};

/* ---- the merge -------------------------------------------------------- */

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Which layer decides [off, off+*n): sets *n to the run's length, *flags to
 * the deciding layer's status (0 when neither allocates it). */
static int decide(bv_node *top, bv_node *link, uint64_t off, uint64_t *n, int *flags,
                  bv_error **errp)
{
    struct bv_block_status bs;
    int r = bv_node_block_status(top, off, *n, &bs, errp);
    if (r < 0)
        return r;
    *n = bs.pnum;
    *flags = bs.flags;
    if (bs.flags & BV_BS_ALLOCATED)
        return 0;
    r = bv_node_block_status(link, off, *n, &bs, errp);
    if (r < 0)
        return r;
    *n = bs.pnum;
    *flags = bs.flags & BV_BS_ALLOCATED ? bs.flags : 0;
    return 0;
}

static int put(const struct bv_prune_merge_opts *o, const uint8_t *buf, uint64_t off,
               uint64_t len, bv_error **errp)
{
    if (all_zero(buf, len))
        return bv_node_write_zeroes(o->out, len, off, BV_ZERO_MAY_UNMAP, errp);
    if (!o->compress)
        return bv_node_pwrite(o->out, buf, len, off, 0, errp);
    uint64_t c = bv_node_cluster_size(o->out);
    int r = 0;
    for (uint64_t done = 0; done < len && r == 0; done += c) {
        uint64_t n = len - done < c ? len - done : c;
        r = bv_node_pwrite(o->out, buf + done, n, off + done, BV_WRITE_COMPRESSED, errp);
    }
    return r;
}

/* Copy a decided data run in chunks. */
static int copy_run(const struct bv_prune_merge_opts *o, uint8_t *buf, uint64_t off,
                    uint64_t len, bv_error **errp)
{
    int r = 0;
    for (uint64_t done = 0; done < len && r == 0;) {
        if (o->job && bv_job_is_cancelled(o->job))
            return -ECANCELED;
        uint64_t n = len - done < BV_PRUNE_CHUNK ? len - done : BV_PRUNE_CHUNK;
        r = bv_node_pread(o->top, buf, n, off + done, errp);
        if (r == 0)
            r = put(o, buf, off + done, n, errp);
        if (r == 0 && o->written)
            o->written(o->opaque, off + done, n);
        if (r == 0 && o->job)
            bv_job_progress_add(o->job, n);
        done += n;
    }
    return r;
}

int bv_prune_merge(const struct bv_prune_merge_opts *o, bv_error **errp)
{
    bv_node *link = bv_node_backing(o->top);
    if (!link)
        return bv_error_setf(errp, EINVAL, "'%s' has no backing file to merge",
                             bv_node_filename(o->top));
    uint64_t size = bv_node_size(o->top);
    if (bv_node_size(o->out) != size)
        return bv_error_setf(errp, EINVAL, "the merged image must have the child's size");
    uint8_t *buf = malloc(BV_PRUNE_CHUNK);
    if (!buf)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    if (o->job)
        bv_job_set_len(o->job, size);
    int r = 0;
    for (uint64_t off = 0; off < size && r == 0;) {
        uint64_t n = size - off;
        int flags = 0;
        r = decide(o->top, link, off, &n, &flags, errp);
        if (r < 0)
            break;
        if (o->job && bv_job_is_cancelled(o->job)) {
            r = -ECANCELED;
        } else if (flags & BV_BS_ZERO) {
            r = bv_node_write_zeroes(o->out, n, off, BV_ZERO_MAY_UNMAP, errp);
            if (r == 0 && o->job)
                bv_job_progress_add(o->job, n);
        } else if (flags) {
            r = copy_run(o, buf, off, n, errp);
        } else if (o->job) {
            bv_job_progress_add(o->job, n);
        }
        off += n;
    }
    free(buf);
    if (r == -ECANCELED)
        return bv_error_setf(errp, ECANCELED, "the prune was cancelled");
    if (r == 0)
        r = bv_node_flush(o->out, errp);
    return r;
}

/* ---- the job driver ----------------------------------------------------- */

static int prune_run(struct bv_job *job, bv_error **errp)
{
    struct prune_job *pj = bv_job_opaque(job);
    return pj->run(job, pj->opaque, errp);
}

static void prune_nothing(struct bv_job *job)
{
    (void)job;
}

static void prune_free(struct bv_job *job)
{
    struct prune_job *pj = bv_job_opaque(job);
    if (!pj)
        return;
    if (pj->release)
        pj->release(pj->release_opaque);
    free(pj);
}

static const struct bv_job_driver prune_driver = {
    .type = "prune",
    .run = prune_run,
    .commit = prune_nothing,
    .abort = prune_nothing,
    .clean = prune_nothing,
    .free = prune_free,
};

/* Service jobs of other types run exactly as a prune does (a function on a worker). */
static const struct bv_job_driver replicate_driver = {
    .type = "replicate", .run = prune_run, .commit = prune_nothing, .abort = prune_nothing,
    .clean = prune_nothing, .free = prune_free,
};
static const struct bv_job_driver import_driver = {
    .type = "import", .run = prune_run, .commit = prune_nothing, .abort = prune_nothing,
    .clean = prune_nothing, .free = prune_free,
};
/* A VM drive's pull backup (service/runtime/vmbackups.c): a backup job whose copy the
 * service runs (QMP and NBD stay in service/). */
static const struct bv_job_driver pull_driver = {
    .type = "backup", .run = prune_run, .commit = prune_nothing, .abort = prune_nothing,
    .clean = prune_nothing, .free = prune_free,
};

int bv_prune_job_create(struct bv_job_ctx *ctx, const struct bv_job_opts *jo,
                        const struct bv_prune_job_opts *o, struct bv_job **out,
                        bv_error **errp)
{
    const struct bv_job_driver *drv = !o->type || !strcmp(o->type, "prune") ? &prune_driver
                                    : !strcmp(o->type, "replicate") ? &replicate_driver
                                    : !strcmp(o->type, "import") ? &import_driver
                                    : !strcmp(o->type, "backup") ? &pull_driver : NULL;
    if (!drv) {
        if (o->release)
            o->release(o->release_opaque);
        return bv_error_setf(errp, EINVAL, "no service job of type '%s'", o->type);
    }
    struct prune_job *pj = calloc(1, sizeof(*pj));
    if (!pj) {
        if (o->release)
            o->release(o->release_opaque);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    pj->run = o->run;
    pj->opaque = o->opaque;
    pj->release = o->release;
    pj->release_opaque = o->release_opaque;
    return bv_job_create(ctx, drv, pj, jo, out, errp);   /* failure: prune_free ran */
}
