/*
 * What the job engine's unit tests stand in for the service with: a small
 * thread pool as the executor (submit / drop, as runtime/workers does) and
 * a sink that records every event batch, so that a test can wait for an
 * event (condition variable with a deadline, never a fixed sleep) and
 * compare a job's whole event sequence with the one QEMU emits.
 *
 * Header-only (static functions): included by test_job.c and
 * test_backup.c, which each build into their own executable.
 */
#ifndef BV_TEST_JOB_HARNESS_H
#define BV_TEST_JOB_HARNESS_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bv/job.h"

#define H_UNUSED __attribute__((unused))
#define H_WAIT_S 20                  /* a deadline, not a pacing: tests normally take ms */

static H_UNUSED struct timespec h_deadline(int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    return ts;
}

/* ---- the executor --------------------------------------------------------- */

struct h_item {
    void (*fn)(void *);
    void (*drop)(void *);
    void *arg;
    struct h_item *next;
};

struct h_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct h_item *head, *tail;
    bool stop;
    int n;
    pthread_t tids[16];
    unsigned running;                /* mu: run functions executing now */
    unsigned max_running;            /* mu: the most seen at once */
};

static H_UNUSED void *h_pool_main(void *opaque)
{
    struct h_pool *p = opaque;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        struct h_item *it = p->head;
        p->head = it->next;
        if (!p->head)
            p->tail = NULL;
        p->running++;
        if (p->running > p->max_running)
            p->max_running = p->running;
        pthread_mutex_unlock(&p->mu);
        it->fn(it->arg);
        free(it);
        pthread_mutex_lock(&p->mu);
        p->running--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static H_UNUSED int h_pool_submit(void *opaque, void (*fn)(void *), void (*drop)(void *),
                                  void *arg)
{
    struct h_pool *p = opaque;
    struct h_item *it = calloc(1, sizeof(*it));
    if (!it)
        return -ENOMEM;
    *it = (struct h_item){ fn, drop, arg, NULL };
    pthread_mutex_lock(&p->mu);
    int r = 0;
    if (p->stop) {
        r = -ESHUTDOWN;
        free(it);
    } else {
        if (p->tail)
            p->tail->next = it;
        else
            p->head = it;
        p->tail = it;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

static H_UNUSED void h_pool_start(struct h_pool *p, int n)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->n = n;
    for (int i = 0; i < n; i++)
        pthread_create(&p->tids[i], NULL, h_pool_main, p);
}

/* Stop: the workers finish what they run, what is still queued is dropped. */
static H_UNUSED void h_pool_stop(struct h_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->tids[i], NULL);
    p->n = 0;
    struct h_item *it = p->head;
    p->head = p->tail = NULL;
    while (it) {
        struct h_item *next = it->next;
        it->drop(it->arg);
        free(it);
        it = next;
    }
}

static H_UNUSED void h_pool_destroy(struct h_pool *p)
{
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

/* ---- the sink ------------------------------------------------------------- */

struct h_event {
    enum bv_job_event_kind kind;
    struct bv_job_info job;
    bool op_write;
    enum bv_job_error_action action;
    unsigned batch;                  /* which sink call delivered it */
};

#define H_MAX_EVENTS 4096

struct h_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct h_event ev[H_MAX_EVENTS];
    size_t n;
    unsigned batches;
    bool overflow;
};

static H_UNUSED void h_rec_init(struct h_rec *r)
{
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->n = 0;
    r->batches = 0;
    r->overflow = false;
}

static H_UNUSED void h_rec_destroy(struct h_rec *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

/* The sink: called with the engine's lock held; takes only r->mu. */
static H_UNUSED void h_rec_events(void *opaque, const struct bv_job_event *evs, size_t n)
{
    struct h_rec *r = opaque;
    pthread_mutex_lock(&r->mu);
    unsigned batch = ++r->batches;
    for (size_t i = 0; i < n; i++) {
        if (r->n == H_MAX_EVENTS) {
            r->overflow = true;
            break;
        }
        struct h_event *e = &r->ev[r->n++];
        e->kind = evs[i].kind;
        e->job = evs[i].job;
        e->op_write = evs[i].op_write;
        e->action = evs[i].action;
        e->batch = batch;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* An event as one word: the status name, or COMPLETED, COMPLETED(<error>),
 * CANCELLED, PENDING, ERROR(read|write,<action>). */
static H_UNUSED void h_event_word(const struct h_event *e, char *buf, size_t size)
{
    switch (e->kind) {
    case BV_JOB_EV_STATUS:
        snprintf(buf, size, "%s", bv_job_status_name(e->job.status));
        break;
    case BV_JOB_EV_COMPLETED:
        if (e->job.error[0])
            snprintf(buf, size, "COMPLETED(%s)", e->job.error);
        else
            snprintf(buf, size, "COMPLETED");
        break;
    case BV_JOB_EV_CANCELLED:
        snprintf(buf, size, "CANCELLED");
        break;
    case BV_JOB_EV_PENDING:
        snprintf(buf, size, "PENDING");
        break;
    case BV_JOB_EV_ERROR:
        snprintf(buf, size, "ERROR(%s,%s)", e->op_write ? "write" : "read",
                 bv_job_error_action_name(e->action));
        break;
    }
}

/* The job's events so far, space-separated words, into buf. */
static H_UNUSED const char *h_seq(struct h_rec *r, const char *id, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->ev[i].job.id, id) != 0)
            continue;
        char w[320];
        h_event_word(&r->ev[i], w, sizeof(w));
        int k = snprintf(buf + used, size - used, "%s%s", used ? " " : "", w);
        if (k < 0 || (size_t)k >= size - used)
            break;
        used += (size_t)k;
    }
    pthread_mutex_unlock(&r->mu);
    return buf;
}

/* Index of the nth (1-based) event of job id spelled word, or -1. */
static H_UNUSED long h_find_locked(struct h_rec *r, const char *id, const char *word, int nth)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->ev[i].job.id, id) != 0)
            continue;
        char w[320];
        h_event_word(&r->ev[i], w, sizeof(w));
        if (strcmp(w, word) == 0 && --nth == 0)
            return (long)i;
    }
    return -1;
}

static H_UNUSED long h_find(struct h_rec *r, const char *id, const char *word, int nth)
{
    pthread_mutex_lock(&r->mu);
    long i = h_find_locked(r, id, word, nth);
    pthread_mutex_unlock(&r->mu);
    return i;
}

/* Wait until job id has had its nth event spelled word; false at the deadline. */
static H_UNUSED bool h_wait_nth(struct h_rec *r, const char *id, const char *word, int nth)
{
    struct timespec dl = h_deadline(H_WAIT_S);
    pthread_mutex_lock(&r->mu);
    long i;
    while ((i = h_find_locked(r, id, word, nth)) < 0)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&r->mu);
    return i >= 0;
}

static H_UNUSED bool h_wait(struct h_rec *r, const char *id, const char *word)
{
    return h_wait_nth(r, id, word, 1);
}

/* A copy of event number i. */
static H_UNUSED struct h_event h_get(struct h_rec *r, long i)
{
    pthread_mutex_lock(&r->mu);
    struct h_event e = r->ev[i];
    pthread_mutex_unlock(&r->mu);
    return e;
}

static H_UNUSED size_t h_count(struct h_rec *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---- an engine on both ----------------------------------------------------- */

/* The hooks take one opaque: the engine, told apart by these trampolines. */
struct h_engine {
    struct h_pool pool;
    struct h_rec rec;
    struct bv_job_ctx *ctx;
};

static H_UNUSED int h_engine_submit(void *opaque, void (*fn)(void *), void (*drop)(void *),
                                    void *arg)
{
    struct h_engine *e = opaque;
    return h_pool_submit(&e->pool, fn, drop, arg);
}

static H_UNUSED void h_engine_events(void *opaque, const struct bv_job_event *evs, size_t n)
{
    struct h_engine *e = opaque;
    h_rec_events(&e->rec, evs, n);
}

/* e must not move while the engine lives (heap or static). */
static H_UNUSED int h_engine_start(struct h_engine *e, int threads)
{
    h_pool_start(&e->pool, threads);
    h_rec_init(&e->rec);
    struct bv_job_hooks hooks = { .submit = h_engine_submit, .events = h_engine_events,
                                  .opaque = e };
    return bv_job_ctx_new(&hooks, &e->ctx, NULL);
}

/* Cancel what is live, wait for the run functions, stop the pool, free. */
static H_UNUSED void h_engine_stop(struct h_engine *e)
{
    bv_job_ctx_shutdown(e->ctx, H_WAIT_S * 1000);
    h_pool_stop(&e->pool);
    bv_job_ctx_free(e->ctx);
    e->ctx = NULL;
    h_pool_destroy(&e->pool);
    h_rec_destroy(&e->rec);
}

#endif
