/*
 * The job engine: QEMU's status machine and verb table as data, job
 * transactions, and the event batches the service records.  See
 * include/bv/job.h for the diagram, the threads and the lock.
 *
 * Every job belongs to a transaction (a lone job to one of its own), so
 * completion has one path: a job whose work succeeded waits until every job
 * of its transaction has; a job that failed or was cancelled aborts the
 * transaction, cancelling the others (even those already waiting).
 *
 * Events are gathered in a batch while ctx->lock is held and handed to the
 * sink before the lock is dropped, so each batch is one catalog commit.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bv/job.h"
#include "bv/lock.h"

static const char *const status_names[BV_JOB_STATUS__MAX] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null",
};

/* §5.1: allowed[from][to] */
#define T true
#define F false
static const bool transitions[BV_JOB_STATUS__MAX][BV_JOB_STATUS__MAX] = {
    /*            U  C  R  P  Y  S  W  D  A  X  N */
    /* U */     { F, T, F, F, F, F, F, F, F, F, F },
    /* C */     { F, F, T, F, F, F, F, F, T, F, T },
    /* R */     { F, F, F, T, T, F, T, F, T, F, F },
    /* P */     { F, F, T, F, F, F, F, F, F, F, F },
    /* Y */     { F, F, F, F, F, T, T, F, T, F, F },
    /* S */     { F, F, F, F, T, F, F, F, F, F, F },
    /* W */     { F, F, F, F, F, F, F, T, T, F, F },
    /* D */     { F, F, F, F, F, F, F, F, T, T, F },
    /* A */     { F, F, F, F, F, F, F, F, T, T, F },
    /* X */     { F, F, F, F, F, F, F, F, F, F, T },
    /* N */     { F, F, F, F, F, F, F, F, F, F, F },
};

static const char *const verb_names[BV_JOB_VERB__MAX] = {
    "cancel", "pause", "resume", "set-speed", "complete", "finalize", "dismiss",
};

/* §5.2: verbs[verb][status] */
static const bool verbs[BV_JOB_VERB__MAX][BV_JOB_STATUS__MAX] = {
    /*               U  C  R  P  Y  S  W  D  A  X  N */
    /* cancel */   { F, T, T, T, T, T, T, T, F, F, F },
    /* pause */    { F, T, T, T, T, T, F, F, F, F, F },
    /* resume */   { F, T, T, T, T, T, F, F, F, F, F },
    /* set-speed */{ F, T, T, T, T, T, F, F, F, F, F },
    /* complete */ { F, F, F, F, T, T, F, F, F, F, F },
    /* finalize */ { F, F, F, F, F, F, F, T, F, F, F },
    /* dismiss */  { F, F, F, F, F, F, F, F, F, T, F },
};
#undef T
#undef F

const char *const bv_job_error_policy_names[] = {
    "report", "ignore", "stop", "enospc", "auto", NULL,
};

struct bv_job_txn {
    struct bv_job_ctx *ctx;
    struct bv_job **jobs;            /* ctx->lock; a slot is NULL once its job is gone */
    size_t n, cap;
    unsigned refs;                   /* ctx->lock: the creator, each live job, walkers */
    bool aborting;                   /* ctx->lock */
};

struct bv_job {
    struct bv_job_ctx *ctx;
    const struct bv_job_driver *drv;
    void *opaque;
    void *user;                      /* immutable */
    char id[129], device[129];
    /* ctx->lock: */
    enum bv_job_status status;
    bool auto_finalize, auto_dismiss;
    bool cancelled;                  /* cancel requested */
    bool user_paused;                /* pause requested (verb or stop policy) */
    bool on_worker;                  /* run submitted or executing */
    bool finished;                   /* run returned its result */
    bool kicked;
    int ret;
    char error[256];
    enum bv_job_iostatus iostatus;
    struct bv_job_txn *txn;
    unsigned refs;
    int64_t created_ms, started_ms, finished_ms;
    pthread_cond_t wake;
    struct bv_job *next;             /* live list */
    struct bv_job *dead_next;        /* a batch's list of jobs to free */
    /* lock-free: */
    _Atomic uint64_t offset, len, speed;
};

struct bv_job_ctx {
    bv_mutex lock;
    pthread_cond_t idle;             /* a run function returned */
    struct bv_job_hooks hooks;
    struct bv_job *live;             /* oldest first */
    unsigned on_worker;              /* run functions submitted or executing */
};

/* Events gathered under ctx->lock, handed to the sink before unlocking;
 * jobs whose last reference went while the lock was held are freed after. */
struct batch {
    struct bv_job_event ev[64];
    size_t n;
    struct bv_job *dead;             /* linked through dead_next */
};

static void run_entry(void *arg);
static void run_dropped(void *arg);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_REALTIME + ns, for condition waits. */
static void deadline_after(struct timespec *t, uint64_t ns)
{
    clock_gettime(CLOCK_REALTIME, t);
    t->tv_sec += (time_t)(ns / 1000000000u);
    t->tv_nsec += (long)(ns % 1000000000u);
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

const char *bv_job_status_name(enum bv_job_status s)
{
    return (unsigned)s < BV_JOB_STATUS__MAX ? status_names[s] : "undefined";
}

int bv_job_status_parse(const char *name)
{
    for (int i = 0; i < BV_JOB_STATUS__MAX; i++)
        if (strcmp(status_names[i], name) == 0)
            return i;
    return -1;
}

const char *bv_job_verb_name(enum bv_job_verb v)
{
    return (unsigned)v < BV_JOB_VERB__MAX ? verb_names[v] : "?";
}

bool bv_job_transition_allowed(enum bv_job_status from, enum bv_job_status to)
{
    return (unsigned)from < BV_JOB_STATUS__MAX && (unsigned)to < BV_JOB_STATUS__MAX &&
           transitions[from][to];
}

bool bv_job_verb_allowed(enum bv_job_verb v, enum bv_job_status s)
{
    return (unsigned)v < BV_JOB_VERB__MAX && (unsigned)s < BV_JOB_STATUS__MAX && verbs[v][s];
}

const char *bv_job_error_action_name(enum bv_job_error_action a)
{
    static const char *const names[] = { "report", "ignore", "stop" };
    return names[a];
}

enum bv_job_error_action bv_job_error_decide(enum bv_job_error_policy p, int err)
{
    switch (p) {
    case BV_JOB_ERR_IGNORE: return BV_JOB_ACTION_IGNORE;
    case BV_JOB_ERR_STOP:   return BV_JOB_ACTION_STOP;
    case BV_JOB_ERR_ENOSPC:
    case BV_JOB_ERR_AUTO:   return err == ENOSPC ? BV_JOB_ACTION_STOP : BV_JOB_ACTION_REPORT;
    default:                return BV_JOB_ACTION_REPORT;
    }
}

const char *bv_job_iostatus_name(enum bv_job_iostatus s)
{
    static const char *const names[] = { "ok", "failed", "nospace" };
    return names[s];
}

/* ---- snapshots and events ------------------------------------------ */

static void query_locked(struct bv_job *job, struct bv_job_info *info)
{
    BV_ASSERT_HELD(&job->ctx->lock);
    memset(info, 0, sizeof(*info));
    snprintf(info->id, sizeof(info->id), "%s", job->id);
    snprintf(info->device, sizeof(info->device), "%s", job->device);
    info->type = job->drv->type;
    info->status = job->status;
    info->offset = atomic_load(&job->offset);
    info->len = atomic_load(&job->len);
    info->speed = atomic_load(&job->speed);
    info->busy = job->on_worker && job->status == BV_JOB_RUNNING;
    info->paused = job->user_paused;
    info->auto_finalize = job->auto_finalize;
    info->auto_dismiss = job->auto_dismiss;
    info->iostatus = job->iostatus;
    info->cancelled = job->cancelled;
    info->failed = job->finished && job->ret < 0 && !job->cancelled;
    snprintf(info->error, sizeof(info->error), "%s", job->error);
    info->created_ms = job->created_ms;
    info->started_ms = job->started_ms;
    info->finished_ms = job->finished_ms;
}

static void flush_locked(struct bv_job_ctx *ctx, struct batch *b)
{
    BV_ASSERT_HELD(&ctx->lock);
    if (b->n && ctx->hooks.events)
        ctx->hooks.events(ctx->hooks.opaque, b->ev, b->n);
    b->n = 0;
}

static void job_free(struct bv_job *job);

/* Hand the batch to the sink, drop the lock, free what died. */
static void unlock_flush(struct bv_job_ctx *ctx, struct batch *b)
{
    flush_locked(ctx, b);
    struct bv_job *dead = b->dead;
    b->dead = NULL;
    bv_mutex_unlock(&ctx->lock);
    while (dead) {
        struct bv_job *next = dead->dead_next;
        job_free(dead);
        dead = next;
    }
}

static void bury_locked(struct bv_job *job, struct batch *b)
{
    job->dead_next = b->dead;
    b->dead = job;
}

static struct bv_job_event *push_locked(struct bv_job *job, struct batch *b,
                                        enum bv_job_event_kind kind)
{
    if (b->n == sizeof(b->ev) / sizeof(b->ev[0]))
        flush_locked(job->ctx, b);
    struct bv_job_event *ev = &b->ev[b->n++];
    memset(ev, 0, sizeof(*ev));
    ev->kind = kind;
    ev->source = job;
    query_locked(job, &ev->job);
    return ev;
}

static void transition_locked(struct bv_job *job, enum bv_job_status to, struct batch *b)
{
    BV_ASSERT_HELD(&job->ctx->lock);
    /* anything outside the table is an engine bug (QEMU asserts too) */
    assert(bv_job_transition_allowed(job->status, to));
    job->status = to;
    if (to == BV_JOB_CONCLUDED || to == BV_JOB_NULL) {
        if (!job->finished_ms)
            job->finished_ms = now_ms();
    }
    push_locked(job, b, BV_JOB_EV_STATUS);
}

/* ---- the context ----------------------------------------------------- */

int bv_job_ctx_new(const struct bv_job_hooks *hooks, struct bv_job_ctx **out, bv_error **errp)
{
    struct bv_job_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    bv_mutex_init(&ctx->lock);
    pthread_cond_init(&ctx->idle, NULL);
    ctx->hooks = *hooks;
    *out = ctx;
    return 0;
}

static void txn_unref_locked(struct bv_job_txn *txn);

static void job_free(struct bv_job *job)
{
    if (job->drv->free)
        job->drv->free(job);
    pthread_cond_destroy(&job->wake);
    free(job);
}

void bv_job_ctx_free(struct bv_job_ctx *ctx)
{
    if (!ctx)
        return;
    /* jobs still live (concluded, never dismissed) go with the engine */
    struct bv_job *j = ctx->live;
    while (j) {
        struct bv_job *next = j->next;
        if (j->txn)                      /* each job holds one reference on its txn */
            txn_unref_locked(j->txn);
        job_free(j);
        j = next;
    }
    pthread_cond_destroy(&ctx->idle);
    bv_mutex_destroy(&ctx->lock);
    free(ctx);
}

/* ---- references, lookup ---------------------------------------------- */

void bv_job_ref(struct bv_job *job)
{
    bv_mutex_lock(&job->ctx->lock);
    job->refs++;
    bv_mutex_unlock(&job->ctx->lock);
}

static void txn_unref_locked(struct bv_job_txn *txn)
{
    if (--txn->refs)
        return;
    free(txn->jobs);
    free(txn);
}

static bool unref_locked(struct bv_job *job)
{
    BV_ASSERT_HELD(&job->ctx->lock);
    return --job->refs == 0;
}

void bv_job_unref(struct bv_job *job)
{
    struct bv_job_ctx *ctx = job->ctx;
    bv_mutex_lock(&ctx->lock);
    bool last = unref_locked(job);
    bv_mutex_unlock(&ctx->lock);
    if (last)
        job_free(job);
}

static struct bv_job *find_locked(struct bv_job_ctx *ctx, const char *id)
{
    for (struct bv_job *j = ctx->live; j; j = j->next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

struct bv_job *bv_job_find(struct bv_job_ctx *ctx, const char *id)
{
    bv_mutex_lock(&ctx->lock);
    struct bv_job *j = find_locked(ctx, id);
    if (j)
        j->refs++;
    bv_mutex_unlock(&ctx->lock);
    return j;
}

size_t bv_job_list(struct bv_job_ctx *ctx, struct bv_job_info **out)
{
    bv_mutex_lock(&ctx->lock);
    size_t n = 0;
    for (struct bv_job *j = ctx->live; j; j = j->next)
        n++;
    struct bv_job_info *arr = calloc(n ? n : 1, sizeof(*arr));
    size_t i = 0;
    if (arr)
        for (struct bv_job *j = ctx->live; j; j = j->next)
            query_locked(j, &arr[i++]);
    bv_mutex_unlock(&ctx->lock);
    *out = arr;
    return arr ? n : 0;
}

void bv_job_query(struct bv_job *job, struct bv_job_info *info)
{
    bv_mutex_lock(&job->ctx->lock);
    query_locked(job, info);
    bv_mutex_unlock(&job->ctx->lock);
}

/* ---- creation ---------------------------------------------------------- */

static bool id_well_formed(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 128)
        return false;
    if (!((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

static int id_check_locked(struct bv_job_ctx *ctx, const char *id, bv_error **errp)
{
    BV_ASSERT_HELD(&ctx->lock);
    if (!id_well_formed(id))
        return bv_error_setf(errp, EINVAL, "Invalid job ID '%s'", id);
    if (find_locked(ctx, id))
        return bv_error_setf(errp, EEXIST, "Job ID '%s' already in use", id);
    return 0;
}

int bv_job_id_check(struct bv_job_ctx *ctx, const char *id, bv_error **errp)
{
    bv_mutex_lock(&ctx->lock);
    int r = id_check_locked(ctx, id, errp);
    bv_mutex_unlock(&ctx->lock);
    return r;
}

static int txn_add_locked(struct bv_job_txn *txn, struct bv_job *job)
{
    if (txn->n == txn->cap) {
        size_t cap = txn->cap ? txn->cap * 2 : 4;
        struct bv_job **a = realloc(txn->jobs, cap * sizeof(*a));
        if (!a)
            return -ENOMEM;
        txn->jobs = a;
        txn->cap = cap;
    }
    txn->jobs[txn->n++] = job;
    txn->refs++;
    job->txn = txn;
    return 0;
}

int bv_job_create(struct bv_job_ctx *ctx, const struct bv_job_driver *drv, void *opaque,
                  const struct bv_job_opts *o, struct bv_job **out, bv_error **errp)
{
    struct bv_job *job = calloc(1, sizeof(*job));
    struct bv_job_txn *txn = calloc(1, sizeof(*txn));
    if (!job || !txn) {
        free(job);
        free(txn);
        if (drv->free) {
            struct bv_job tmp = { .drv = drv, .opaque = opaque };
            drv->free(&tmp);
        }
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    job->ctx = ctx;
    job->drv = drv;
    job->opaque = opaque;
    job->user = o->user;
    snprintf(job->id, sizeof(job->id), "%s", o->id);
    snprintf(job->device, sizeof(job->device), "%s", o->device ? o->device : "");
    job->auto_finalize = o->auto_finalize;
    job->auto_dismiss = o->auto_dismiss;
    atomic_init(&job->offset, 0);
    atomic_init(&job->len, 0);
    atomic_init(&job->speed, o->speed);
    pthread_cond_init(&job->wake, NULL);
    job->created_ms = now_ms();
    txn->ctx = ctx;

    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    int r = id_check_locked(ctx, o->id, errp);
    if (r == 0 && txn_add_locked(txn, job) < 0)
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r < 0) {
        bv_mutex_unlock(&ctx->lock);
        free(txn->jobs);
        free(txn);
        job_free(job);
        return r;
    }
    job->refs = 2;                         /* the live list's and the caller's */
    struct bv_job **pp = &ctx->live;
    while (*pp)
        pp = &(*pp)->next;
    *pp = job;
    transition_locked(job, BV_JOB_CREATED, &b);
    unlock_flush(ctx, &b);
    *out = job;
    return 0;
}

struct bv_job_txn *bv_job_txn_new(struct bv_job_ctx *ctx)
{
    struct bv_job_txn *txn = calloc(1, sizeof(*txn));
    if (txn) {
        txn->ctx = ctx;
        txn->refs = 1;
    }
    return txn;
}

/* Move job from its own implicit transaction into txn (before start). */
void bv_job_txn_add(struct bv_job_txn *txn, struct bv_job *job)
{
    struct bv_job_ctx *ctx = txn->ctx;
    bv_mutex_lock(&ctx->lock);
    struct bv_job_txn *old = job->txn;
    assert(job->status == BV_JOB_CREATED && old->n == 1);
    if (txn_add_locked(txn, job) == 0) {
        old->jobs[0] = NULL;
        txn_unref_locked(old);
    } else {
        job->txn = old;                   /* out of memory: it stays alone */
    }
    bv_mutex_unlock(&ctx->lock);
}

void bv_job_txn_unref(struct bv_job_txn *txn)
{
    if (!txn)
        return;
    struct bv_job_ctx *ctx = txn->ctx;
    bv_mutex_lock(&ctx->lock);
    txn_unref_locked(txn);
    bv_mutex_unlock(&ctx->lock);
}

/* ---- running ---------------------------------------------------------- */

/* Submit the run function; false if the executor refused (the job then
 * fails with that error). */
static bool submit_locked(struct bv_job *job)
{
    struct bv_job_ctx *ctx = job->ctx;
    BV_ASSERT_HELD(&ctx->lock);
    job->on_worker = true;
    job->refs++;
    ctx->on_worker++;
    int r = ctx->hooks.submit(ctx->hooks.opaque, run_entry, run_dropped, job);
    if (r == 0)
        return true;
    job->on_worker = false;
    job->refs--;
    ctx->on_worker--;
    job->ret = r;
    snprintf(job->error, sizeof(job->error), "%s", strerror(-r));   /* COMPLETED's error */
    return false;
}

static void completed_locked(struct bv_job *job, struct batch *b);

void bv_job_start(struct bv_job *job)
{
    struct bv_job_ctx *ctx = job->ctx;
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    if (job->status != BV_JOB_CREATED) {
        bv_mutex_unlock(&ctx->lock);
        return;
    }
    if (job->cancelled || (job->txn && job->txn->aborting)) {
        job->cancelled = true;
        job->ret = -ECANCELED;
        job->finished = true;
        completed_locked(job, &b);
    } else {
        job->started_ms = now_ms();
        transition_locked(job, BV_JOB_RUNNING, &b);
        if (job->user_paused) {
            transition_locked(job, BV_JOB_PAUSED, &b);
        } else if (!submit_locked(job)) {
            job->finished = true;
            completed_locked(job, &b);
        }
    }
    unlock_flush(ctx, &b);
}

static void finish_run(struct bv_job *job, int r, const bv_error *err)
{
    struct bv_job_ctx *ctx = job->ctx;
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    job->on_worker = false;
    if (r == BV_JOB_YIELD && !job->cancelled) {
        if (job->user_paused) {
            transition_locked(job, BV_JOB_PAUSED, &b);
        } else if (!submit_locked(job)) {       /* resumed before we got here */
            job->finished = true;
            completed_locked(job, &b);
        }
    } else {
        if (r == BV_JOB_YIELD || (job->cancelled && r == 0))
            r = -ECANCELED;
        job->ret = r;
        job->finished = true;
        if (r < 0 && !job->cancelled && r != -ECANCELED)
            snprintf(job->error, sizeof(job->error), "%s", strerror(-r));
        (void)err;
        completed_locked(job, &b);
    }
    if (unref_locked(job))                       /* the run's reference */
        bury_locked(job, &b);
    unlock_flush(ctx, &b);
}

/* The worker is done with the engine (the job may be freed already):
 * shutdown waits for this. */
static void worker_done(struct bv_job_ctx *ctx)
{
    bv_mutex_lock(&ctx->lock);
    ctx->on_worker--;
    pthread_cond_broadcast(&ctx->idle);
    bv_mutex_unlock(&ctx->lock);
}

static void run_entry(void *arg)
{
    struct bv_job *job = arg;
    struct bv_job_ctx *ctx = job->ctx;
    bv_error *err = NULL;
    int r = job->drv->run(job, &err);
    finish_run(job, r, err);
    bv_error_free(err);
    worker_done(ctx);
}

static void run_dropped(void *arg)
{
    struct bv_job *job = arg;
    bv_mutex_lock(&job->ctx->lock);
    job->cancelled = true;
    struct bv_job_ctx *ctx = job->ctx;
    bv_mutex_unlock(&ctx->lock);
    finish_run(job, -ECANCELED, NULL);
    worker_done(ctx);
}

/* ---- completion: the transaction's path ----------------------------- */

/* The job (now null) leaves the live list and its transaction. */
static void remove_locked(struct bv_job *job, struct batch *b)
{
    struct bv_job_ctx *ctx = job->ctx;
    for (struct bv_job **pp = &ctx->live; *pp; pp = &(*pp)->next) {
        if (*pp == job) {
            *pp = job->next;
            break;
        }
    }
    struct bv_job_txn *txn = job->txn;
    for (size_t i = 0; i < txn->n; i++)
        if (txn->jobs[i] == job)
            txn->jobs[i] = NULL;
    txn_unref_locked(txn);
    job->txn = NULL;
    if (unref_locked(job))               /* the live list's reference */
        bury_locked(job, b);
}

/* BLOCK_JOB_COMPLETED / CANCELLED, concluded, and null with auto_dismiss:
 * one batch, after the driver's commit or abort and clean. */
static void finalize_one_locked(struct bv_job *job, struct batch *b)
{
    bool ok = job->ret == 0 && !job->cancelled;
    if (ok)
        job->drv->commit(job);
    else
        job->drv->abort(job);
    job->drv->clean(job);
    if (job->cancelled) {
        push_locked(job, b, BV_JOB_EV_CANCELLED);
    } else {
        push_locked(job, b, BV_JOB_EV_COMPLETED);
    }
    transition_locked(job, BV_JOB_CONCLUDED, b);
    if (job->auto_dismiss) {
        transition_locked(job, BV_JOB_NULL, b);
        remove_locked(job, b);
    }
}

/* Abort one job of an aborting transaction: to aborting, then finalize. */
static void abort_one_locked(struct bv_job *job, struct batch *b)
{
    if (job->status == BV_JOB_PAUSED)           /* paused -> aborting is not in the table */
        transition_locked(job, BV_JOB_RUNNING, b);
    transition_locked(job, BV_JOB_ABORTING, b);
    finalize_one_locked(job, b);
}

static void txn_abort_locked(struct bv_job_txn *txn, struct bv_job *failed, struct batch *b)
{
    txn->refs++;                                /* jobs leave it as they reach null */
    txn->aborting = true;
    abort_one_locked(failed, b);
    for (size_t i = 0; i < txn->n; i++) {
        struct bv_job *j = txn->jobs[i];
        if (!j || j == failed || j->status == BV_JOB_CONCLUDED || j->status == BV_JOB_ABORTING)
            continue;
        j->cancelled = true;
        if (j->on_worker) {                     /* its run returns soon, then aborts */
            if (j->drv->kick)
                j->drv->kick(j);
            pthread_cond_broadcast(&j->wake);
            continue;
        }
        if (!j->finished) {
            j->finished = true;
            j->ret = -ECANCELED;
        }
        abort_one_locked(j, b);
    }
    txn_unref_locked(txn);
}

static void txn_finalize_locked(struct bv_job_txn *txn, struct batch *b)
{
    txn->refs++;
    for (size_t i = 0; i < txn->n; i++)
        if (txn->jobs[i] && txn->jobs[i]->status == BV_JOB_PENDING)
            finalize_one_locked(txn->jobs[i], b);
    txn_unref_locked(txn);
}

static void txn_success_locked(struct bv_job *job, struct batch *b)
{
    struct bv_job_txn *txn = job->txn;
    transition_locked(job, BV_JOB_WAITING, b);
    for (size_t i = 0; i < txn->n; i++)
        if (txn->jobs[i] && !txn->jobs[i]->finished)
            return;                              /* the last one to finish moves on */
    bool all_auto = true;
    for (size_t i = 0; i < txn->n; i++) {
        struct bv_job *j = txn->jobs[i];
        if (!j)
            continue;
        transition_locked(j, BV_JOB_PENDING, b);
        if (!j->auto_finalize) {
            push_locked(j, b, BV_JOB_EV_PENDING);
            all_auto = false;
        }
    }
    if (all_auto)
        txn_finalize_locked(txn, b);
}

static void completed_locked(struct bv_job *job, struct batch *b)
{
    BV_ASSERT_HELD(&job->ctx->lock);
    if (job->ret < 0 || job->cancelled || job->txn->aborting) {
        if (job->txn->aborting && job->ret == 0)
            job->cancelled = true;
        txn_abort_locked(job->txn, job, b);
    } else {
        txn_success_locked(job, b);
    }
}

/* ---- verbs ------------------------------------------------------------- */

static int verb_check_locked(struct bv_job *job, enum bv_job_verb v, bv_error **errp)
{
    BV_ASSERT_HELD(&job->ctx->lock);
    if (bv_job_verb_allowed(v, job->status))
        return 0;
    return bv_error_setf(errp, EBUSY, "Job '%s' in state '%s' cannot accept command verb '%s'",
                         job->id, bv_job_status_name(job->status), bv_job_verb_name(v));
}

int bv_job_cancel(struct bv_job *job, bv_error **errp)
{
    struct bv_job_ctx *ctx = job->ctx;
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    int r = verb_check_locked(job, BV_JOB_VERB_CANCEL, errp);
    if (r == 0) {
        job->cancelled = true;
        if (job->on_worker) {
            if (job->drv->kick)
                job->drv->kick(job);
            pthread_cond_broadcast(&job->wake);
        } else {
            /* created, paused, waiting or pending: nothing runs, abort now */
            if (!job->finished) {
                job->finished = true;
                job->ret = -ECANCELED;
            }
            txn_abort_locked(job->txn, job, &b);
        }
    }
    unlock_flush(ctx, &b);
    return r;
}

int bv_job_pause(struct bv_job *job, bv_error **errp)
{
    struct bv_job_ctx *ctx = job->ctx;
    bv_mutex_lock(&ctx->lock);
    int r = verb_check_locked(job, BV_JOB_VERB_PAUSE, errp);
    if (r == 0 && job->user_paused)
        r = bv_error_setf(errp, EBUSY, "Job is already paused");
    if (r == 0) {
        job->user_paused = true;
        pthread_cond_broadcast(&job->wake);
        if (job->drv->kick && job->on_worker)
            job->drv->kick(job);
    }
    bv_mutex_unlock(&ctx->lock);
    return r;
}

int bv_job_resume(struct bv_job *job, bv_error **errp)
{
    struct bv_job_ctx *ctx = job->ctx;
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    int r = verb_check_locked(job, BV_JOB_VERB_RESUME, errp);
    if (r == 0 && !job->user_paused)
        r = bv_error_setf(errp, EBUSY, "Can't resume a job that was not paused");
    if (r == 0) {
        job->user_paused = false;
        job->iostatus = BV_JOB_IO_OK;
        if (job->status == BV_JOB_PAUSED) {
            transition_locked(job, BV_JOB_RUNNING, &b);
            if (!submit_locked(job)) {
                job->finished = true;
                completed_locked(job, &b);
            }
        }
    }
    unlock_flush(ctx, &b);
    return r;
}

int bv_job_finalize(struct bv_job *job, bv_error **errp)
{
    struct bv_job_ctx *ctx = job->ctx;
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    int r = verb_check_locked(job, BV_JOB_VERB_FINALIZE, errp);
    if (r == 0)
        txn_finalize_locked(job->txn, &b);
    unlock_flush(ctx, &b);
    return r;
}

int bv_job_dismiss(struct bv_job *job, bv_error **errp)
{
    struct bv_job_ctx *ctx = job->ctx;
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    int r = verb_check_locked(job, BV_JOB_VERB_DISMISS, errp);
    if (r == 0) {
        transition_locked(job, BV_JOB_NULL, &b);
        remove_locked(job, &b);
    }
    unlock_flush(ctx, &b);
    return r;
}

int bv_job_set_speed(struct bv_job *job, uint64_t speed, bv_error **errp)
{
    struct bv_job_ctx *ctx = job->ctx;
    bv_mutex_lock(&ctx->lock);
    int r = verb_check_locked(job, BV_JOB_VERB_SET_SPEED, errp);
    if (r == 0) {
        atomic_store(&job->speed, speed);
        job->kicked = true;
        pthread_cond_broadcast(&job->wake);
    }
    bv_mutex_unlock(&ctx->lock);
    return r;
}

void bv_job_ctx_shutdown(struct bv_job_ctx *ctx, unsigned timeout_ms)
{
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&ctx->lock);
    for (;;) {
        /* cancel one live job at a time: aborting may remove several */
        struct bv_job *victim = NULL;
        for (struct bv_job *j = ctx->live; j; j = j->next)
            if (!j->cancelled && bv_job_verb_allowed(BV_JOB_VERB_CANCEL, j->status)) {
                victim = j;
                break;
            }
        if (!victim)
            break;
        victim->cancelled = true;
        if (victim->on_worker) {
            if (victim->drv->kick)
                victim->drv->kick(victim);
            pthread_cond_broadcast(&victim->wake);
        } else {
            if (!victim->finished) {
                victim->finished = true;
                victim->ret = -ECANCELED;
            }
            txn_abort_locked(victim->txn, victim, &b);
            unlock_flush(ctx, &b);           /* frees the dead without the lock */
            bv_mutex_lock(&ctx->lock);
        }
    }
    struct timespec deadline;
    deadline_after(&deadline, (uint64_t)timeout_ms * 1000000u);
    while (ctx->on_worker)
        if (bv_cond_timedwait(&ctx->idle, &ctx->lock, &deadline) == ETIMEDOUT)
            break;
    bv_mutex_unlock(&ctx->lock);
}

/* ---- for drivers ------------------------------------------------------- */

void *bv_job_opaque(struct bv_job *job) { return job->opaque; }
void *bv_job_user(struct bv_job *job) { return job->user; }
const char *bv_job_id(struct bv_job *job) { return job->id; }
void bv_job_progress_add(struct bv_job *job, uint64_t done) { atomic_fetch_add(&job->offset, done); }
void bv_job_set_len(struct bv_job *job, uint64_t len) { atomic_store(&job->len, len); }
void bv_job_add_len(struct bv_job *job, uint64_t more) { atomic_fetch_add(&job->len, more); }
uint64_t bv_job_speed(struct bv_job *job) { return atomic_load(&job->speed); }

bool bv_job_is_cancelled(struct bv_job *job)
{
    bv_mutex_lock(&job->ctx->lock);
    bool c = job->cancelled;
    bv_mutex_unlock(&job->ctx->lock);
    return c;
}

bool bv_job_should_pause(struct bv_job *job)
{
    bv_mutex_lock(&job->ctx->lock);
    bool p = job->user_paused && !job->cancelled;
    bv_mutex_unlock(&job->ctx->lock);
    return p;
}

enum bv_job_error_action bv_job_report_error(struct bv_job *job, enum bv_job_error_policy p,
                                             bool op_write, int err)
{
    enum bv_job_error_action a = bv_job_error_decide(p, err);
    struct batch b = { .n = 0, .dead = NULL };
    bv_mutex_lock(&job->ctx->lock);
    struct bv_job_event *ev = push_locked(job, &b, BV_JOB_EV_ERROR);
    ev->op_write = op_write;
    ev->action = a;
    if (a == BV_JOB_ACTION_STOP) {
        job->user_paused = true;
        job->iostatus = err == ENOSPC ? BV_JOB_IO_NOSPACE : BV_JOB_IO_FAILED;
    }
    flush_locked(job->ctx, &b);
    bv_mutex_unlock(&job->ctx->lock);
    return a;
}

void bv_job_sleep_ns(struct bv_job *job, uint64_t ns)
{
    struct timespec deadline;
    deadline_after(&deadline, ns);
    bv_mutex_lock(&job->ctx->lock);
    job->kicked = false;
    while (!job->cancelled && !job->user_paused && !job->kicked)
        if (bv_cond_timedwait(&job->wake, &job->ctx->lock, &deadline) == ETIMEDOUT)
            break;
    job->kicked = false;
    bv_mutex_unlock(&job->ctx->lock);
}
