/*
 * What runtime/backups.c shares with runtime/vmbackups.c: a chain backup's
 * records (the chain and backup rows, the CRC map and digest at the end)
 * are the same whether the engine copies a local drive or a VM drive is
 * pulled; only the copy differs.  Callers hold app->backups_lock where
 * backups.c does (deciding and recording a new backup).
 */
#ifndef BV_RUNTIME_BACKUPS_INT_H
#define BV_RUNTIME_BACKUPS_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bv/crcmap.h"
#include "bv/error.h"
#include "bv/job.h"
#include "bvdb/backups.h"
#include "runtime/backups.h"

#define CHAIN_BITMAP_PREFIX "blockvault-chain-"

struct bv_app;

/* What a running chain backup carries to its end (the job's hook data). */
struct chain_job {
    struct bv_app *app;
    char bid[BV_BACKUP_ID_MAX], cid[BV_BACKUP_ID_MAX], parent[BV_BACKUP_ID_MAX];
    char drive[129];
    char file[1024];
    char bitmap[160];
    char job_id[129];                  /* "" : the drive id (a local drive's backup job) */
    bool new_chain;
    bool verify;                       /* a checksum verify of the link after it */
    uint64_t size;
    struct bv_crcmap *map;
    _Atomic uint64_t written;
};

/* The drive's current chain: the newest open chain with its newest
 * complete link (bvdb_chain_list with find_chain, then bvdb_backup_list
 * with find_parent). */
struct current {
    char chain[BV_BACKUP_ID_MAX], bitmap[160], dir[512], parent[BV_BACKUP_ID_MAX];
    char parent_file[1024];
    bool running;
};
int find_chain(const struct bvdb_chain *c, void *opaque);
int find_parent(const struct bvdb_backup *b, void *opaque);

/* Job hooks: each range written (CRC map), the end (rows, digest, a failed
 * link removed, older chains closed), the state freed. */
void chain_copied(void *opaque, uint64_t off, uint64_t len, const void *data);
void chain_finished(struct bv_app *app, void *opaque, const struct bv_job_info *info);
void chain_release(void *opaque);

/* mkdir -p beneath the storage directory of a name the service made. */
int make_dirs(struct bv_app *app, const char *dir, bv_error **errp);
/* The chain (new_chain) and backup rows, status running, in one transaction. */
int record_start(struct bv_app *app, struct chain_job *cj, bool full, const char *reason,
                 const char *dir, const struct bv_backup_request *rq, int64_t seq,
                 bv_error **errp);
void unrecord(struct bv_app *app, struct chain_job *cj);

/* runtime/vmbackups.c: a chain backup of a VM drive (pulled).  1 when
 * rq->drive is not a VM drive (nothing done), else 0 with bid_out set, or
 * -errno. */
int bv_vm_backups_create(struct bv_app *app, const struct bv_backup_request *rq,
                         char bid_out[BV_BACKUP_ID_MAX], bv_error **errp);

#endif
