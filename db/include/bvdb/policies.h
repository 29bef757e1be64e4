/*
 * Backup policies and their runs.  Plain records (see catalog.h).  A
 * policy's drives and retention are JSON texts, opaque to db/.
 */
#ifndef BVDB_POLICIES_H
#define BVDB_POLICIES_H

#include <stdbool.h>
#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_policy {
    const char *name;
    const char *drives;            /* JSON array of drive ids */
    const char *schedule;          /* cron text as given */
    int64_t full_every;            /* 0: never a scheduled full */
    const char *retention;         /* JSON object of keep_* rules */
    const char *verify;            /* "none" | "after" | cron text */
    bool enabled;
    const char *created_at, *updated_at;
    int64_t last_slot;             /* the last schedule slot handled (unix s), 0: none */
    int64_t verify_last_slot;      /* the same for a verify schedule */
    const char *replicate;         /* JSON {"remote","keep_local","lock_days","lock_mode"},
                                      NULL: none */
};

int bvdb_policy_insert(bvdb *db, const struct bvdb_policy *p);
/* Replace the definition (not the slots). */
int bvdb_policy_update(bvdb *db, const struct bvdb_policy *p);
int bvdb_policy_set_slots(bvdb *db, const char *name, int64_t last_slot, int64_t verify_last_slot);
int bvdb_policy_delete(bvdb *db, const char *name);     /* its runs go too */
int bvdb_policy_get(bvdb *db, const char *name,
                    void (*cb)(const struct bvdb_policy *p, void *opaque), void *opaque);
/* By name. */
int bvdb_policy_list(bvdb *db, int (*cb)(const struct bvdb_policy *p, void *opaque),
                     void *opaque);

struct bvdb_policy_run {
    int64_t id;
    const char *policy;
    const char *kind;              /* "backup" | "verify" */
    const char *started_at, *finished_at;   /* finished NULL while running */
    const char *outcome;           /* running | ok | failed | skipped */
    const char *reason;            /* why skipped or failed, may be NULL */
    const char *backups_made;      /* JSON array of ids */
    const char *backups_pruned;    /* JSON array of ids */
    const char *errors;            /* JSON array of sentences */
};

int bvdb_policy_run_insert(bvdb *db, const struct bvdb_policy_run *r, int64_t *id);
int bvdb_policy_run_finish(bvdb *db, const struct bvdb_policy_run *r);
/* Newest first, at most limit. */
int bvdb_policy_run_list(bvdb *db, const char *policy, int limit,
                         int (*cb)(const struct bvdb_policy_run *r, void *opaque), void *opaque);
/* Start-up: runs left 'running' by a crash become failed. */
int bvdb_policy_run_interrupt(bvdb *db, const char *now);

#endif
