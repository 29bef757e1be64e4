/*
 * Prune: removing a link from a backup chain (contract: "Backup chains").
 *
 * The block work is one merge: a removed link's data goes into its child,
 * written as a new image whose backing file is the link's own backing file
 * (none when the link was the full).  The new image reads exactly as the
 * child's point did, so every point above it is unchanged.
 *
 *   bv_prune_merge(top = the child opened with its chain,
 *                  out = the new image, backing = the link's parent)
 *
 * copies every range that the child's layer or the link's layer decides
 * (block status of each layer, coalesced): data as read through the child
 * (child over link), ranges either layer makes read as zero as zero
 * clusters; ranges neither allocates are left unallocated, so they keep
 * falling through to the link's parent.  Cost: reads and writes the data of
 * two links, never the rest of the chain.
 *
 * The job: a prune is recorded, queried and reported as any job (type
 * "prune", QEMU's status machine).  The catalog steps around the merge
 * belong to the service (core knows no SQL), so the driver's run calls the
 * caller's function on a worker; that function calls bv_prune_merge.  A
 * prune does not pause (it has no pause point: the caller holds its chain
 * for the whole run); cancel is seen by the merge between chunks.
 */
#ifndef BV_PRUNE_H
#define BV_PRUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/image.h"
#include "bv/job.h"

#define BV_PRUNE_CHUNK (1u << 20)        /* bytes per read/write of the merge */

struct bv_prune_merge_opts {
    bv_node *top;        /* the child, with its backing chain (read-only); its backing
                            node is the link being removed */
    bv_node *out;        /* the new image: empty, writable, the link's backing file as its
                            backing (or none), the child's virtual size */
    bool compress;       /* write data as compressed clusters (qcow2 out) */
    struct bv_job *job;  /* progress (len = the virtual size) and cancel; may be NULL */
    /* After each chunk reached out (for crash tests).  May be NULL. */
    void (*written)(void *opaque, uint64_t off, uint64_t len);
    void *opaque;
};

/* Merge as above and flush out (durable when it returns 0).  -ECANCELED
 * when the job was cancelled; out then holds a partial copy (the caller
 * removes it).  The top's backing must exist (-EINVAL otherwise). */
int bv_prune_merge(const struct bv_prune_merge_opts *o, bv_error **errp);

struct bv_prune_job_opts {
    /* The job's type: "prune" (NULL), or another service job run the same way
     * ("replicate", "import"); anything else is -EINVAL. */
    const char *type;
    /* The work, on a worker: 0 done, -errno failed (-ECANCELED: cancelled). */
    int (*run)(struct bv_job *job, void *opaque, bv_error **errp);
    void *opaque;
    /* The job's state is gone (after it ended, or when create fails):
     * release_opaque may be freed.  May be NULL. */
    void (*release)(void *opaque);
    void *release_opaque;
};

/* Create a prune job (status created; bv_job_start runs it).  On failure
 * release has been called. */
int bv_prune_job_create(struct bv_job_ctx *ctx, const struct bv_job_opts *jo,
                        const struct bv_prune_job_opts *o, struct bv_job **out,
                        bv_error **errp);

#endif
