/*
 * Space in the storage directory (issue 17, "Capacity"): what the file
 * system has (statvfs on the directory's descriptor), what each chain's link
 * files take, and the check made before a chain backup or a restore creates
 * anything: its estimated size against the free space, refused with ENOSPC
 * ("Insufficient space: need N, have M", 507) instead of failing half-way.
 *
 * Estimates (bytes the new image may take, before compression):
 *   incremental  the chain bitmap's dirty bytes;
 *   full/restore the source's allocated bytes (data or allocated in any
 *                layer of its chain, capped at its size);
 *   prune        (a link merged into its child) the allocated bytes of both
 *                link files, which the merged child may hold;
 * plus qcow2 metadata: 1/4096 of that and 1 MiB.
 *
 * BV_TEST_FREE_BYTES (tests only): when set in the service's environment,
 * a decimal number of bytes reported as free instead of statvfs's answer.
 */
#ifndef BV_RUNTIME_CAPACITY_H
#define BV_RUNTIME_CAPACITY_H

#include <stdint.h>
#include <stdio.h>

#include "bv/error.h"
#include "bv/image.h"

struct bv_app;

struct bv_space {
    uint64_t total, used, free;    /* free: what an unprivileged writer may use */
};

int bv_capacity_space(struct bv_app *app, struct bv_space *out, bv_error **errp);

/* Bytes a new qcow2 holding data_bytes may take (see above). */
uint64_t bv_capacity_need(uint64_t data_bytes);
/* The allocated bytes of n's chain (see above); -errno on a read failure. */
int bv_capacity_allocated(bv_node *n, uint64_t *out, bv_error **errp);
/* Allocated bytes (st_blocks × 512) of a storage-relative file, 0 if it is gone. */
uint64_t bv_capacity_file_bytes(struct bv_app *app, const char *file);
/* 0 when need bytes fit, else -ENOSPC with the contract's sentence. */
int bv_capacity_check(struct bv_app *app, uint64_t need, bv_error **errp);

struct bv_chain_usage {
    char drive[129], chain[32];
    uint64_t bytes;                /* allocated bytes of its link files */
};
/* Every chain with its bytes, oldest first; *out malloc'd; the count or -errno. */
int bv_capacity_chains(struct bv_app *app, struct bv_chain_usage **out);

/* Prometheus lines for GET /metrics. */
void bv_capacity_metrics(struct bv_app *app, FILE *f);

#endif
