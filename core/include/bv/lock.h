/*
 * A mutex that knows its owner in debug builds, so that a *_locked function
 * can assert that the calling thread holds the lock it expects (style.md
 * §10).  Release builds (NDEBUG) compile to a bare pthread mutex.
 *
 * How: each live thread has a distinct token (its pthread_self(), the same
 * in every translation unit: a _Thread_local in a static inline function
 * would be one variable per .c file, so a lock taken in one file would not
 * be "held" in another); the lock stores the owner's token after acquiring
 * and clears it before releasing.  Only the owner writes the field while
 * the mutex is held, so a relaxed atomic suffices: a thread reading its own
 * token there must have written it itself, and no other thread can make it
 * read its own token.
 * A condition wait clears and restores the field around the wait, as the
 * wait releases and retakes the mutex.  Cost: two relaxed stores per
 * lock/unlock pair.  Not for recursive mutexes.
 */
#ifndef BV_LOCK_H
#define BV_LOCK_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct bv_mutex {
    pthread_mutex_t m;
#ifndef NDEBUG
    _Atomic uintptr_t owner;          /* the owner's thread token, 0 when free */
#endif
} bv_mutex;

static inline uintptr_t bv_thread_token(void)
{
    return (uintptr_t)pthread_self();
}

static inline void bv_mutex_acquired_(bv_mutex *mx)
{
#ifndef NDEBUG
    atomic_store_explicit(&mx->owner, bv_thread_token(), memory_order_relaxed);
#else
    (void)mx;
#endif
}

static inline void bv_mutex_releasing_(bv_mutex *mx)
{
#ifndef NDEBUG
    atomic_store_explicit(&mx->owner, 0, memory_order_relaxed);
#else
    (void)mx;
#endif
}

static inline int bv_mutex_init(bv_mutex *mx)
{
#ifndef NDEBUG
    atomic_init(&mx->owner, 0);
#endif
    return -pthread_mutex_init(&mx->m, NULL);
}

static inline void bv_mutex_destroy(bv_mutex *mx)
{
    pthread_mutex_destroy(&mx->m);
}

static inline void bv_mutex_lock(bv_mutex *mx)
{
    pthread_mutex_lock(&mx->m);
    bv_mutex_acquired_(mx);
}

static inline void bv_mutex_unlock(bv_mutex *mx)
{
    bv_mutex_releasing_(mx);
    pthread_mutex_unlock(&mx->m);
}

/* Does the calling thread hold mx?  Always true in release builds. */
static inline bool bv_mutex_held(const bv_mutex *mx)
{
#ifndef NDEBUG
    return atomic_load_explicit(&mx->owner, memory_order_relaxed) == bv_thread_token();
#else
    (void)mx;
    return true;
#endif
}

static inline void bv_cond_wait(pthread_cond_t *c, bv_mutex *mx)
{
    bv_mutex_releasing_(mx);
    pthread_cond_wait(c, &mx->m);
    bv_mutex_acquired_(mx);
}

static inline int bv_cond_timedwait(pthread_cond_t *c, bv_mutex *mx, const struct timespec *t)
{
    bv_mutex_releasing_(mx);
    int r = pthread_cond_timedwait(c, &mx->m, t);
    bv_mutex_acquired_(mx);
    return r;
}

#define BV_ASSERT_HELD(mx) assert(bv_mutex_held(mx))

#endif
