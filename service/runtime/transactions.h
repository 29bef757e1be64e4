/*
 * Transactions (qemu-semantics.md §6): a list of bitmap actions and backups
 * prepared in order, each seeing the ones before it, then all committed —
 * or, at the first failure, the prepared ones aborted in reverse order and
 * that first error returned.  Jobs start only at commit.  Every drive the
 * actions name is quiesced (in address order) from before the first prepare
 * until after the last commit, so the bitmap changes and the backups' points
 * in time are one instant.  With grouped completion the backups form one
 * job transaction (bv/job.h): one failing or cancelled cancels the others.
 * Bitmap actions are allowed in grouped mode (a Blockvault extension, §11).
 * Typed, no JSON: api/transactions.c parses.
 */
#ifndef BV_RUNTIME_TRANSACTIONS_H
#define BV_RUNTIME_TRANSACTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/drives.h"
#include "runtime/jobs.h"

enum bv_txn_type {
    BV_TXN_BITMAP_ADD = 0,
    BV_TXN_BITMAP_CLEAR,
    BV_TXN_BITMAP_ENABLE,
    BV_TXN_BITMAP_DISABLE,
    BV_TXN_BITMAP_MERGE,
    BV_TXN_BITMAP_REMOVE,
    BV_TXN_DRIVE_BACKUP,
    BV_TXN__MAX,
};
/* "block-dirty-bitmap-add", …, "drive-backup", NULL */
extern const char *const bv_txn_type_names[];

#define BV_TXN_MAX_ACTIONS 256

struct bv_txn_action {
    enum bv_txn_type type;
    const char *node;                    /* bitmap actions: the drive id */
    struct bv_bitmap_spec bitmap;        /* name (all bitmap actions), add's options */
    const char *const *sources;          /* merge */
    size_t nsources;
    struct bv_backup_spec backup;        /* drive-backup */
};

/* Run the transaction.  On success *job_ids (malloc'd array of malloc'd
 * strings, *njobs entries) names the started jobs in action order. */
int bv_txn_run(struct bv_app *app, const struct bv_txn_action *actions, size_t n, bool grouped,
               char ***job_ids, size_t *njobs, bv_error **errp);

#endif
