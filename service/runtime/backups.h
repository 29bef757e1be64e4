/*
 * Chain-managed backups (contract: "Backup chains"): the service names,
 * creates and records the links itself.
 *
 * Layout: chains/<drive>/<chain>/<backup>.qcow2 in the storage directory.
 * A full is a standalone qcow2; an incremental's backing file is the
 * previous link, named relative to the chain's directory, so a chain copied
 * as a folder still opens in qemu-img.
 *
 * A full backup starts a chain: one transaction adds the chain's bitmap
 * (persistent on qcow2 drives) and creates the backup job, so the bitmap
 * counts exactly the writes after the point in time.  An incremental copies
 * what the chain's bitmap marks; if the bitmap is gone or inconsistent
 * (after a crash) it is taken as a full and says why ("reason").  One
 * backup per drive at a time: a second is 409.
 *
 * Each link records a CRC32 per 64 KiB block it wrote (bv/crcmap.h) and the
 * digest of its point in time, computed from its parent's and the blocks it
 * changed.  The outcome is recorded in the catalog in the same transaction
 * as the job's final event; a failed backup's link file is removed.
 *
 * Locking: app->backups_lock (a mutex) serialises the creation of backups
 * and the changes of chains (prune); it is taken before any engine lock.
 */
#ifndef BV_RUNTIME_BACKUPS_H
#define BV_RUNTIME_BACKUPS_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/crcmap.h"
#include "bv/image.h"
#include "bv/job.h"

struct bv_app;

#define BV_BACKUP_ID_MAX 32

struct bv_backup_rec {
    char id[BV_BACKUP_ID_MAX], drive[129], chain[BV_BACKUP_ID_MAX], parent[BV_BACKUP_ID_MAX];
    char kind[16], status[16], job_id[129];
    char file[1024];
    char created_at[32], completed_at[32], verified_at[32];
    char checksum[33];
    char reason[256];
    uint64_t virtual_size, data_bytes;
    bool compress;
    bool damaged;                  /* it, or a link it depends on, has unhealed damage */
    char policy[129];              /* "" unless a policy made it */
    bool local;                    /* catalog: false once tiering removed its file */
    int64_t seq;
};

struct bv_backup_request {
    const char *drive;
    bool incremental;
    bool compress;
    bool verify;                   /* a checksum verify of the new link after it */
    const char *policy;            /* the policy making it (retention prunes only its own) */
};

/* Start a chain backup.  *out gets the backup as recorded (status running),
 * *job the job.  ENODEV unknown drive, EBUSY a backup of it runs, ENOSPC the
 * estimate does not fit (runtime/capacity.h; nothing is created). */
int bv_backups_create(struct bv_app *app, const struct bv_backup_request *rq,
                      struct bv_backup_rec *out, struct bv_job_info *job, bv_error **errp);

/* One backup; ENODEV "Backup 'x' not found". */
int bv_backups_get(struct bv_app *app, const char *id, struct bv_backup_rec *out,
                   bv_error **errp);
/* Backups of a drive (or all: drive NULL), oldest first, grouped by chain
 * through rec.chain.  *out malloc'd; returns the count or -errno. */
int bv_backups_list(struct bv_app *app, const char *drive, struct bv_backup_rec **out);

/* Open a backup point read-only: the link with its chain. */
int bv_backups_open_point(struct bv_app *app, const char *id, bv_node **out, bv_error **errp);
/* The point's CRC map: the overlay of its chain's maps up to it. */
int bv_backups_point_crcmap(struct bv_app *app, const char *id, struct bv_crcmap **out,
                            bv_error **errp);

/* One link's own CRC map (the blocks it wrote). */
int bv_backups_link_crcmap(struct bv_app *app, const char *id, struct bv_crcmap **out,
                           bv_error **errp);

/* The damage point id still reads: for each link at or below it (newest
 * first), its recorded damaged extents minus the blocks that a link between
 * that one and the point wrote again (healed for this point), as runs of
 * whole 64 KiB blocks; a corrupt link without recorded extents counts whole
 * (len 0).  cb may be NULL.  Returns the number of runs (0: not damaged) or
 * -errno. */
int bv_backups_point_damage(struct bv_app *app, const char *id,
                            void (*cb)(void *opaque, const char *link, uint64_t off,
                                       uint64_t len),
                            void *opaque);

/* Start-up: backups left running by a crash are failed and their files
 * removed. */
void bv_backups_recover(struct bv_app *app);

#endif
