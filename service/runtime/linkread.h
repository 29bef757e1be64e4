/*
 * Where a backup link's bytes are read from (issue 16, tiering): its local file when it has
 * one, else the object of a remote where the link is `present`, read with ranged GETs through
 * the block engine's remote protocol driver and block cache (bv/remote.h).  A point whose
 * chain mixes local and remote links opens as one image, so GET …/data, restores, verifies
 * and NBD exports read it without downloading the chain first.
 *
 * A link is local when the catalog says so (backups.local, cleared by tiering) and its file
 * exists; otherwise the first remote (by name) holding it `present` serves it.  A link in
 * neither place cannot be opened (EIO, naming the backup and its file).
 *
 * Each open makes its own block cache (shared by the chain's remote layers; freed with the
 * node) and one S3 client per remote layer; every ranged GET has its own curl handle, so the
 * node may be read from several threads at once.  Nothing here holds a lock: the opens read
 * the catalog and the remote (a few header reads) on the caller's thread.
 */
#ifndef BV_RUNTIME_LINKREAD_H
#define BV_RUNTIME_LINKREAD_H

#include <stdbool.h>

#include "bv/error.h"
#include "bv/image.h"

struct bv_app;
struct bv_backup_rec;

/* Is the link's file on local disk (catalog local and the file present)? */
bool bv_linkread_is_local(struct bv_app *app, const struct bv_backup_rec *b);

/* Is it present on some remote?  remote (if non-NULL, BV_REMOTE_NAME_MAX + 1 bytes) gets the
 * first such remote's name. */
bool bv_linkread_on_remote(struct bv_app *app, const char *bid, char *remote);

enum {
    BV_LINKREAD_ALONE  = 1 << 0,   /* the link alone, without its backing chain */
    BV_LINKREAD_SPARSE = 1 << 1,   /* scattered reads (a checksum verify): 64 KiB blocks,
                                      so only about what is read comes over the network */
    BV_LINKREAD_STREAM = 1 << 2,   /* the whole point in order (a restore): 8 MiB blocks,
                                      12 ahead, 128 MiB cache (bench/README.md: 96 MiB in
                                      flight keeps the gateway busy; fewer, cheaper GETs) */
};
/* Without SPARSE or STREAM (GET …/data, NBD, compares): 1 MiB blocks, 32 MiB (bv/remote.h). */

/* Open backup link bid read-only (with its chain unless ALONE), each layer local or remote
 * as above.  No status check (bv_backups_open_point does it). */
int bv_linkread_open(struct bv_app *app, const char *bid, unsigned flags, bv_node **out,
                     bv_error **errp);

#endif
