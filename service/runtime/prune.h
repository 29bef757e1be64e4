/*
 * Prune (DELETE /api/v1/backups/{bid}; contract: "Backup chains"): remove
 * one link of a chain so that every other point stays restorable byte for
 * byte.  A removed link's data is merged into its child, which is written
 * as a new link file; removing the newest link of a closed chain (or a
 * failed backup) just deletes it.  The steps, their order and the crash
 * recovery are described at the top of prune.c.
 *
 * Refusals (409, EBUSY): the backup is running; its child or the child's
 * child is running; it is the newest link of a chain that is still extended
 * (the chain's bitmap counts from it).  ENODEV: no such backup (404).
 * ENOSPC (507): a merge whose new child may not fit (runtime/capacity.h).
 *
 * Locking: the job holds app->backups_lock for its whole run (plan, merge,
 * switch, clean-up), so chain backups and other prunes wait for it; the
 * request takes it to validate and create the job.
 */
#ifndef BV_RUNTIME_PRUNE_H
#define BV_RUNTIME_PRUNE_H

#include "bv/job.h"

struct bv_app;

/* Validate and start a prune job of backup bid; *info gets the job as
 * created. */
int bv_prune_start(struct bv_app *app, const char *bid, struct bv_job_info *info,
                   bv_error **errp);

/* Start-up (after bv_backups_recover): finish or undo every prune a crash
 * interrupted, so each chain is either the old one or the new one. */
void bv_prune_recover(struct bv_app *app);

#endif
