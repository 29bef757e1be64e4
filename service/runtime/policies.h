/*
 * Backup policies (contract: "Policies"): definitions in the catalog, a
 * scheduler thread that starts runs on the job engine, retention applied
 * through prune jobs, scheduled verification, and the run history.
 *
 * A run (backup kind): for each drive of the policy, a chain backup (a new
 * chain every full_every backups of the policy on the current chain, else
 * an incremental), a checksum verify of it with verify:"after", then the
 * with "replicate" a replicate job of it to the remote (which tiers the
 * chain: keep_local), then the
 * retention rules over the policy's own complete backups of that drive,
 * each backup they drop pruned (so every kept point stays restorable).  A
 * drive that is busy is skipped with that reason; the run's outcome is
 * skipped if every drive was, failed if anything failed, else ok.
 * POLICY_RUN {policy, status} is emitted at the start ("started") and end.
 *
 * Schedules: each policy remembers the last schedule slot it handled; at
 * every tick a policy whose next slot after that is due runs once and the
 * slot moves to the latest one not after now, so a restart after downtime
 * makes one catch-up run, not one per missed slot.  Times come from the
 * service's clock (bv_app_now_ms: real time, or --test-clock's) and are
 * computed in the --timezone zone (UTC by default).
 *
 * Threads: one scheduler thread runs every run, one at a time (a run waits
 * for its jobs, which run on the worker pool; it never holds a worker).
 * sched->lock guards the run-now queue and the wake-up flag only.
 */
#ifndef BV_RUNTIME_POLICIES_H
#define BV_RUNTIME_POLICIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bv/error.h"

struct bv_app;

#define BV_POLICY_MAX_DRIVES 256

struct bv_policy_spec {
    const char *name;
    const char *const *drives;
    size_t ndrives;
    const char *schedule;            /* cron */
    int64_t full_every;              /* 0: none */
    int64_t keep[6];                 /* keep_last, hourly, daily, weekly, monthly, yearly */
    const char *verify;              /* "none" | "after" | cron */
    bool enabled;
    /* "replicate" (runtime/remotes.h): after each backup the run replicates it to this
     * remote (NULL: none) and tiers its chain (keep_local >= 0), with an Object Lock
     * retention of lock_days on the links it uploads */
    const char *replicate_remote;
    int64_t keep_local;              /* -1: not given (no tiering) */
    int64_t lock_days;
    bool lock_compliance;
};

int bv_scheduler_start(struct bv_app *app);
void bv_scheduler_stop(struct bv_app *app);
/* Wake the scheduler (a policy changed, the test clock moved). */
void bv_scheduler_kick(struct bv_app *app);

/* Validation names the field: "schedule: …", "drives[1]: …", "retention: …"
 * (EINVAL, 400).  EEXIST: name taken (409).  ENODEV: no such policy (404). */
int bv_policy_create(struct bv_app *app, const struct bv_policy_spec *s, bv_error **errp);
int bv_policy_replace(struct bv_app *app, const struct bv_policy_spec *s, bv_error **errp);
int bv_policy_delete(struct bv_app *app, const char *name, bv_error **errp);
/* Queue a run now; -ENODEV if unknown. */
int bv_policy_run_now(struct bv_app *app, const char *name, bv_error **errp);

/* JSON texts (the service's view, formatted by api/) live with the API:
 * these return the catalog rows' facts. */
struct bv_policy_view {
    char name[129];
    char *drives_json;               /* malloc'd */
    char schedule[256];
    int64_t full_every;
    char *retention_json;            /* malloc'd */
    char *replicate_json;            /* malloc'd, NULL: none */
    char verify[256];
    bool enabled;
    char created_at[32], updated_at[32];
    char next_run[32];               /* "" if none (disabled) */
    bool has_last_run;
    char last_started[32], last_finished[32], last_outcome[16];
};
int bv_policy_get(struct bv_app *app, const char *name, struct bv_policy_view *out,
                  bv_error **errp);
/* All policies by name; *out malloc'd; returns n. */
size_t bv_policy_list(struct bv_app *app, struct bv_policy_view **out);
void bv_policy_view_free(struct bv_policy_view *v);

/* The retention preview: every complete backup of the policy's drives that
 * the policy made, newest first, with keep and the rules that keep it. */
struct bv_retention_row {
    char id[32], drive[129], created_at[32];
    bool keep;
    unsigned reasons;                /* BV_RET_BIT bits (sched/retention.h) */
};
int bv_policy_retention(struct bv_app *app, const char *name, struct bv_retention_row **out,
                        size_t *n, bv_error **errp);

/* Prometheus text: runs by outcome, age of each drive's newest good backup. */
void bv_policy_metrics(struct bv_app *app, FILE *f);

#endif
