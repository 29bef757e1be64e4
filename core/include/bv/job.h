/*
 * Jobs: long operations (backup, later verify/restore/prune) with QEMU's
 * status machine, verbs, job transactions and events (qemu-semantics.md §5,
 * §6.3).  The engine knows no HTTP, JSON or SQL: the service installs an
 * executor (its worker pool) and an event sink (the catalog), and a job
 * driver (core/job/backup.c) supplies the work.
 *
 * Status machine (§5.1) — the table lives in job.c, checked in one place:
 *
 *   created ──start──> running ──pause──> paused ──resume──> running
 *      │                  │ run returns 0           │ cancel
 *      │                  v                         v
 *      │               waiting (grouped: the rest of the transaction)
 *      │                  │ all succeeded
 *      │                  v
 *      │               pending ──finalize (auto or verb)──> concluded ──dismiss──> null
 *      │                  │
 *      └──cancel──> aborting <── run fails / cancelled / the transaction aborts
 *                         └──────────────────────────────> concluded ──> null
 *
 * Threads: the run function executes on the executor (a worker thread).  A
 * job that finished its work but waits for its transaction holds no thread
 * (status waiting: the run function has returned), so a grouped transaction
 * of more jobs than workers completes.  A paused job holds no thread either:
 * its run function returns BV_JOB_YIELD at a pause point and is submitted
 * again on resume (the driver keeps its progress in its own state).
 *
 * Locking: one engine-wide mutex, ctx->lock, guards every job's status,
 * flags, the live list and the transactions (as QEMU's job_mutex).  The
 * event sink is called with ctx->lock held, so a status change, its events
 * and the job's removal from the live list are observed together: a client
 * that has read BLOCK_JOB_COMPLETED from the sink's store no longer finds
 * the job live.  The sink must not call back into the engine.  A driver's
 * run and kick are called without ctx->lock; commit, abort and clean with
 * it (see struct bv_job_driver).
 * Lock order: ctx->lock, then whatever the sink takes (the catalog), then
 * leaf locks (bitmap sets).  Progress counters are atomics, read lock-free.
 */
#ifndef BV_JOB_H
#define BV_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/error.h"

enum bv_job_status {
    BV_JOB_UNDEFINED = 0,
    BV_JOB_CREATED,
    BV_JOB_RUNNING,
    BV_JOB_PAUSED,
    BV_JOB_READY,
    BV_JOB_STANDBY,
    BV_JOB_WAITING,
    BV_JOB_PENDING,
    BV_JOB_ABORTING,
    BV_JOB_CONCLUDED,
    BV_JOB_NULL,
    BV_JOB_STATUS__MAX,
};
/* "created", …, "null"; "undefined" for BV_JOB_UNDEFINED. */
const char *bv_job_status_name(enum bv_job_status s);
/* -1 for an unknown name */
int bv_job_status_parse(const char *name);

enum bv_job_verb {
    BV_JOB_VERB_CANCEL = 0,
    BV_JOB_VERB_PAUSE,
    BV_JOB_VERB_RESUME,
    BV_JOB_VERB_SET_SPEED,
    BV_JOB_VERB_COMPLETE,
    BV_JOB_VERB_FINALIZE,
    BV_JOB_VERB_DISMISS,
    BV_JOB_VERB__MAX,
};
const char *bv_job_verb_name(enum bv_job_verb v);

/* The tables themselves (for tests and documentation). */
bool bv_job_transition_allowed(enum bv_job_status from, enum bv_job_status to);
bool bv_job_verb_allowed(enum bv_job_verb v, enum bv_job_status s);

/* Error policies (§4.8) and what a job did about an error. */
enum bv_job_error_policy {
    BV_JOB_ERR_REPORT = 0,
    BV_JOB_ERR_IGNORE,
    BV_JOB_ERR_STOP,
    BV_JOB_ERR_ENOSPC,
    BV_JOB_ERR_AUTO,
    BV_JOB_ERR__MAX,
};
extern const char *const bv_job_error_policy_names[];   /* NULL-terminated */
enum bv_job_error_action { BV_JOB_ACTION_REPORT, BV_JOB_ACTION_IGNORE, BV_JOB_ACTION_STOP };
const char *bv_job_error_action_name(enum bv_job_error_action a);
/* The action a policy takes for errno err (positive). */
enum bv_job_error_action bv_job_error_decide(enum bv_job_error_policy p, int err);

enum bv_job_iostatus { BV_JOB_IO_OK = 0, BV_JOB_IO_FAILED, BV_JOB_IO_NOSPACE };
const char *bv_job_iostatus_name(enum bv_job_iostatus s);

/* ---- events --------------------------------------------------------- */

enum bv_job_event_kind {
    BV_JOB_EV_STATUS,          /* JOB_STATUS_CHANGE {id, status} */
    BV_JOB_EV_COMPLETED,       /* BLOCK_JOB_COMPLETED {type, device, len, offset, speed, error?} */
    BV_JOB_EV_CANCELLED,       /* BLOCK_JOB_CANCELLED {type, device, len, offset, speed} */
    BV_JOB_EV_ERROR,           /* BLOCK_JOB_ERROR {device, operation, action} */
    BV_JOB_EV_PENDING,         /* BLOCK_JOB_PENDING {type, id} */
};

/* A snapshot of a job, as the sink and queries see it. */
struct bv_job_info {
    char id[129];
    const char *type;               /* static: the driver's name */
    char device[129];               /* the drive the job works on ("" if none) */
    enum bv_job_status status;
    uint64_t offset, len, speed;
    bool busy, paused;
    bool auto_finalize, auto_dismiss;
    enum bv_job_iostatus iostatus;
    bool failed;                    /* ret < 0 (and not cancelled) */
    bool cancelled;
    char error[256];                /* strerror text of the failure, "" if none */
    int64_t created_ms, started_ms, finished_ms;   /* unix ms, 0 = not yet */
};

struct bv_job;

struct bv_job_event {
    enum bv_job_event_kind kind;
    struct bv_job *source;          /* the job (bv_job_user() names the caller's data) */
    struct bv_job_info job;         /* the job as of this event */
    bool op_write;                  /* ERROR: "write" (else "read") */
    enum bv_job_error_action action;/* ERROR */
};

struct bv_job;
struct bv_job_ctx;

/* The service's hooks. */
struct bv_job_hooks {
    /* Run fn(arg) on a worker thread, or drop(arg) instead if the pool
     * stops first; 0 or -errno (then the job fails). */
    int (*submit)(void *opaque, void (*fn)(void *arg), void (*drop)(void *arg), void *arg);
    /* Called with ctx->lock held for every batch of events: record them
     * (and each job's new state) atomically.  n ≥ 1. */
    void (*events)(void *opaque, const struct bv_job_event *evs, size_t n);
    void *opaque;
};

/* ---- drivers -------------------------------------------------------- */

#define BV_JOB_YIELD 1   /* run: stopped at a pause point, submit again on resume */

struct bv_job_driver {
    const char *type;                /* "backup" */
    /* The work.  0 done, -errno failed (also -ECANCELED once cancelled),
     * BV_JOB_YIELD paused.  Called again after a yield. */
    int (*run)(struct bv_job *job, bv_error **errp);
    /* Finalization (§6.2 shape): exactly one of commit or abort, then
     * clean, always; none of them may fail.  They run with ctx->lock held
     * (so the bitmap outcome is in place when the event is recorded): they
     * may take leaf locks and quiesce the drive, never call the engine. */
    void (*commit)(struct bv_job *job);
    void (*abort)(struct bv_job *job);
    void (*clean)(struct bv_job *job);
    /* Wake the run function (sleeping for the speed limit, waiting for I/O)
     * so it sees a pause or cancel request soon.  Optional. */
    void (*kick)(struct bv_job *job);
    /* Free the driver's state (opaque).  Called once the job is gone. */
    void (*free)(struct bv_job *job);
};

/* ---- the engine ----------------------------------------------------- */

int bv_job_ctx_new(const struct bv_job_hooks *hooks, struct bv_job_ctx **out, bv_error **errp);
/* Every job must have reached null (see bv_job_ctx_shutdown). */
void bv_job_ctx_free(struct bv_job_ctx *ctx);
/* Shutdown: cancel every live job, wait (up to timeout_ms) until no run
 * function is on a worker.  Jobs that were not finalized are left to the
 * caller's recovery (the catalog marks them interrupted). */
void bv_job_ctx_shutdown(struct bv_job_ctx *ctx, unsigned timeout_ms);

struct bv_job_opts {
    const char *id;                  /* QEMU's id rule: a letter, then [A-Za-z0-9._-] */
    const char *device;              /* may be NULL */
    uint64_t speed;                  /* bytes/s, 0 = unlimited */
    bool auto_finalize, auto_dismiss;
    void *user;                      /* the caller's data, bv_job_user(); the engine never
                                        touches it (the driver's free is where it can go) */
};

/* Create a job in status created (emits JOB_STATUS_CHANGE created).
 * -EINVAL "Invalid job ID '…'", -EEXIST "Job ID '…' already in use".
 * opaque is the driver's state (freed by drv->free, also on failure here).
 * The returned pointer is valid until the job's status is null and the
 * gone hook has run; callers that keep it longer take a reference. */
int bv_job_create(struct bv_job_ctx *ctx, const struct bv_job_driver *drv, void *opaque,
                  const struct bv_job_opts *o, struct bv_job **out, bv_error **errp);
/* Check an id without creating anything (validation order). */
int bv_job_id_check(struct bv_job_ctx *ctx, const char *id, bv_error **errp);

/* Transactions (completion_mode grouped): jobs joined to one txn before
 * they start succeed or fail together. */
struct bv_job_txn;
struct bv_job_txn *bv_job_txn_new(struct bv_job_ctx *ctx);
void bv_job_txn_add(struct bv_job_txn *txn, struct bv_job *job);
/* Drop the creator's reference (jobs keep theirs). */
void bv_job_txn_unref(struct bv_job_txn *txn);

/* created -> running and submit the run function.  A job created but
 * never started (a transaction that aborts) is cancelled instead:
 * created -> aborting -> BLOCK_JOB_CANCELLED -> concluded -> null. */
void bv_job_start(struct bv_job *job);

/* Verbs, with QEMU's texts: -EBUSY (409) "Job 'x' in state 's' cannot
 * accept command verb 'v'", "Job is already paused", "Can't resume a job
 * that was not paused". */
int bv_job_cancel(struct bv_job *job, bv_error **errp);
int bv_job_pause(struct bv_job *job, bv_error **errp);
int bv_job_resume(struct bv_job *job, bv_error **errp);
int bv_job_finalize(struct bv_job *job, bv_error **errp);
int bv_job_dismiss(struct bv_job *job, bv_error **errp);
int bv_job_set_speed(struct bv_job *job, uint64_t speed, bv_error **errp);

/* Lookup among live jobs, with a reference (bv_job_unref). */
struct bv_job *bv_job_find(struct bv_job_ctx *ctx, const char *id);
void bv_job_ref(struct bv_job *job);
void bv_job_unref(struct bv_job *job);
/* Snapshots of every live job, oldest first (malloc'd array; returns n). */
size_t bv_job_list(struct bv_job_ctx *ctx, struct bv_job_info **out);
void bv_job_query(struct bv_job *job, struct bv_job_info *info);

/* ---- for drivers ---------------------------------------------------- */

void *bv_job_opaque(struct bv_job *job);
void *bv_job_user(struct bv_job *job);
const char *bv_job_id(struct bv_job *job);
/* Progress (atomics). */
void bv_job_progress_add(struct bv_job *job, uint64_t done);
void bv_job_set_len(struct bv_job *job, uint64_t len);
void bv_job_add_len(struct bv_job *job, uint64_t more);
uint64_t bv_job_speed(struct bv_job *job);
/* Has cancel been requested? */
bool bv_job_is_cancelled(struct bv_job *job);
/* Should the run function return BV_JOB_YIELD now (pause requested)? */
bool bv_job_should_pause(struct bv_job *job);
/* Report an I/O error under policy p: emits BLOCK_JOB_ERROR and returns the
 * action.  For STOP the job becomes user-paused with its iostatus set; the
 * run function then returns BV_JOB_YIELD. */
enum bv_job_error_action bv_job_report_error(struct bv_job *job, enum bv_job_error_policy p,
                                             bool op_write, int err);
/* Sleep up to ns, woken early by pause, cancel or kick. */
void bv_job_sleep_ns(struct bv_job *job, uint64_t ns);

#endif
