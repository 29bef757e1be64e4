/* Worker pool: see workers.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "runtime/workers.h"

struct task {
    void (*fn)(void *);
    void (*drop)(void *);
    void *arg;
    struct task *next;
};

struct bv_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct task *head, *tail;      /* guarded by lock */
    atomic_bool stopping;          /* written under lock, read anywhere */
    unsigned n;
    pthread_t threads[];
};

static void *worker_main(void *opaque)
{
    struct bv_workers *w = opaque;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        if (w->stopping)
            break;
        struct task *t = w->head;
        w->head = t->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        t->fn(t->arg);
        free(t);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct bv_workers *bv_workers_start(unsigned n)
{
    struct bv_workers *w = calloc(1, sizeof(*w) + n * sizeof(pthread_t));
    if (!w)
        return NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    for (w->n = 0; w->n < n; w->n++) {
        if (pthread_create(&w->threads[w->n], NULL, worker_main, w) != 0) {
            bv_workers_stop(w);
            return NULL;
        }
    }
    return w;
}

void bv_workers_stop(struct bv_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    struct task *t = w->head;
    w->head = w->tail = NULL;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    while (t) {
        struct task *next = t->next;
        if (t->drop)
            t->drop(t->arg);
        free(t);
        t = next;
    }
    for (unsigned i = 0; i < w->n; i++)
        pthread_join(w->threads[i], NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int bv_workers_submit(struct bv_workers *w, void (*fn)(void *arg), void (*drop)(void *arg),
                      void *arg)
{
    struct task *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->fn = fn;
    t->drop = drop;
    t->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        free(t);
        return -ESHUTDOWN;
    }
    if (w->tail)
        w->tail->next = t;
    else
        w->head = t;
    w->tail = t;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

bool bv_workers_stopping(const struct bv_workers *w)
{
    return atomic_load(&w->stopping);
}
