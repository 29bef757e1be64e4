/*
 * Owner-tracking locks behind the *_locked asserts: bv/lock.h's bv_mutex
 * and the catalog's recursive lock.  Each check would fail if the owner were
 * not recorded, not cleared, or visible to another thread as its own.
 * Debug builds only (release builds compile the tracking out: skipped).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "catalog-int.h"
#include "bv/lock.h"

static void *held_elsewhere(void *opaque)
{
    return (void *)(uintptr_t)bv_mutex_held(opaque);
}

struct waiter {
    bv_mutex mx;
    pthread_cond_t cond;
    bool waiting, go, held_after_wait;
};

static void *wait_then_check(void *opaque)
{
    struct waiter *w = opaque;
    bv_mutex_lock(&w->mx);
    w->waiting = true;
    while (!w->go)
        bv_cond_wait(&w->cond, &w->mx);
    w->held_after_wait = bv_mutex_held(&w->mx);
    bv_mutex_unlock(&w->mx);
    return NULL;
}

static void test_bv_mutex_owner(void **state)
{
    (void)state;
#ifdef NDEBUG
    skip();
#endif
    bv_mutex mx;
    assert_int_equal(bv_mutex_init(&mx), 0);
    assert_false(bv_mutex_held(&mx));
    bv_mutex_lock(&mx);
    assert_true(bv_mutex_held(&mx));
    pthread_t t;
    void *other = (void *)1;
    assert_int_equal(pthread_create(&t, NULL, held_elsewhere, &mx), 0);
    pthread_join(t, &other);
    assert_null(other);                    /* not the owner over there */
    bv_mutex_unlock(&mx);
    assert_false(bv_mutex_held(&mx));
    bv_mutex_destroy(&mx);
}

static void test_cond_wait_restores_owner(void **state)
{
    (void)state;
#ifdef NDEBUG
    skip();
#endif
    struct waiter w = { .go = false };
    assert_int_equal(bv_mutex_init(&w.mx), 0);
    pthread_cond_init(&w.cond, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_then_check, &w), 0);
    /* take the lock while the waiter sleeps in the wait: the owner field
     * becomes ours, so the waiter must restore its own when it wakes */
    bv_mutex_lock(&w.mx);
    while (!w.waiting) {
        bv_mutex_unlock(&w.mx);
        sched_yield();
        bv_mutex_lock(&w.mx);
    }
    assert_true(bv_mutex_held(&w.mx));
    w.go = true;
    pthread_cond_signal(&w.cond);
    bv_mutex_unlock(&w.mx);
    pthread_join(t, NULL);
    assert_true(w.held_after_wait);
    assert_false(bv_mutex_held(&w.mx));
    pthread_cond_destroy(&w.cond);
    bv_mutex_destroy(&w.mx);
}

static void *db_held_elsewhere(void *opaque)
{
#ifndef NDEBUG
    return (void *)(uintptr_t)db_locked_by_me(opaque);
#else
    (void)opaque;
    return NULL;
#endif
}

static void test_catalog_lock_recursive_owner(void **state)
{
    (void)state;
#ifdef NDEBUG
    skip();
#else
    char path[] = "/tmp/bv-lock-XXXXXX", err[256];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    bvdb *db = NULL;
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    assert_false(db_locked_by_me(db));
    assert_int_equal(bvdb_begin(db), 0);         /* takes the lock … */
    assert_true(db_locked_by_me(db));
    db_lock(db);                                 /* … recursively */
    db_unlock(db);
    assert_true(db_locked_by_me(db));            /* still held: depth 1 */
    pthread_t t;
    void *other = (void *)1;
    assert_int_equal(pthread_create(&t, NULL, db_held_elsewhere, db), 0);
    pthread_join(t, &other);
    assert_null(other);
    assert_int_equal(bvdb_rollback(db), 0);      /* … and releases it */
    assert_false(db_locked_by_me(db));
    bvdb_close(db);
    unlink(path);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bv_mutex_owner),
        cmocka_unit_test(test_cond_wait_restores_owner),
        cmocka_unit_test(test_catalog_lock_recursive_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
