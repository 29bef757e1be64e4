/*
 * A fixed pool of worker threads running tasks from one FIFO queue.  Jobs
 * (backup, restore, prune, verify) and scheduled policy runs execute here,
 * never on HTTP connection threads.
 *
 * Locking: pool->lock guards the queue, `stopping` and `running`; tasks run
 * without it.  Shutdown: bv_workers_stop() refuses new tasks, sets the
 * cancel flag that long tasks poll (bv_workers_stopping) so they reach a
 * safe point, runs nothing more from the queue (queued tasks get their
 * `drop` callback), and joins the threads.
 */
#ifndef BV_RUNTIME_WORKERS_H
#define BV_RUNTIME_WORKERS_H

#include <stdbool.h>

struct bv_workers;

struct bv_workers *bv_workers_start(unsigned n);
void bv_workers_stop(struct bv_workers *w);

/* Queue fn(arg).  drop(arg) (may be NULL) runs instead if the pool stops
 * before fn started.  Returns 0, or -ESHUTDOWN once stopping. */
int bv_workers_submit(struct bv_workers *w, void (*fn)(void *arg), void (*drop)(void *arg),
                      void *arg);

/* True once shutdown began: long tasks stop at their next safe point. */
bool bv_workers_stopping(const struct bv_workers *w);

#endif
