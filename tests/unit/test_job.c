/*
 * The job engine (core/job/job.c) against qemu-semantics.md §5 and §6.3:
 * every cell of the status transition table and of the verb table, then
 * the exact event sequences of a fake driver whose run function waits for
 * the test, fails, yields or stops on an error policy: success, failure,
 * cancel in each status that takes it, pause/resume and their refusals,
 * auto_finalize / auto_dismiss, job ids, grouped transactions (also with
 * more jobs than executor threads) and shutdown.
 *
 * No daemon: the executor is a small thread pool and the sink records the
 * event batches (job_harness.h).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bv/job.h"
#include "job_harness.h"

/* ---- the tables ------------------------------------------------------------ */

/* §5.1, written out again from the reference (not copied from job.c). */
static const char *const allowed_transitions[] = {
    "undefined>created",
    "created>running", "created>aborting", "created>null",
    "running>paused", "running>ready", "running>waiting", "running>aborting",
    "paused>running",
    "ready>standby", "ready>waiting", "ready>aborting",
    "standby>ready",
    "waiting>pending", "waiting>aborting",
    "pending>aborting", "pending>concluded",
    "aborting>aborting", "aborting>concluded",
    "concluded>null",
};

static bool listed(const char *const *list, size_t n, const char *cell)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], cell) == 0)
            return true;
    return false;
}

static void test_transition_table(void **state)
{
    (void)state;
    size_t n_list = sizeof(allowed_transitions) / sizeof(allowed_transitions[0]);
    size_t seen = 0;
    for (int from = 0; from < BV_JOB_STATUS__MAX; from++) {
        for (int to = 0; to < BV_JOB_STATUS__MAX; to++) {
            char cell[64];
            snprintf(cell, sizeof(cell), "%s>%s", bv_job_status_name(from),
                     bv_job_status_name(to));
            bool want = listed(allowed_transitions, n_list, cell);
            if (bv_job_transition_allowed(from, to) != want)
                fail_msg("transition %s: table says %d, §5.1 says %d", cell,
                         bv_job_transition_allowed(from, to), want);
            seen += want;
        }
    }
    assert_int_equal(seen, n_list);
    /* out of range is never allowed */
    assert_false(bv_job_transition_allowed(BV_JOB_STATUS__MAX, BV_JOB_CREATED));
    assert_false(bv_job_transition_allowed(BV_JOB_CREATED, BV_JOB_STATUS__MAX));
    assert_false(bv_job_transition_allowed((enum bv_job_status)-1, BV_JOB_CREATED));
}

/* §5.2 (7.2): the statuses each verb is accepted in; undefined and null take none. */
static const struct {
    enum bv_job_verb verb;
    const char *name;
    const char *statuses;
} verb_rows[] = {
    { BV_JOB_VERB_CANCEL,    "cancel",    " created running paused ready standby waiting pending " },
    { BV_JOB_VERB_PAUSE,     "pause",     " created running paused ready standby " },
    { BV_JOB_VERB_RESUME,    "resume",    " created running paused ready standby " },
    { BV_JOB_VERB_SET_SPEED, "set-speed", " created running paused ready standby " },
    { BV_JOB_VERB_COMPLETE,  "complete",  " ready standby " },
    { BV_JOB_VERB_FINALIZE,  "finalize",  " pending " },
    { BV_JOB_VERB_DISMISS,   "dismiss",   " concluded " },
};

static void test_verb_table(void **state)
{
    (void)state;
    assert_int_equal(sizeof(verb_rows) / sizeof(verb_rows[0]), BV_JOB_VERB__MAX);
    for (size_t v = 0; v < BV_JOB_VERB__MAX; v++) {
        assert_string_equal(bv_job_verb_name(verb_rows[v].verb), verb_rows[v].name);
        for (int s = 0; s < BV_JOB_STATUS__MAX; s++) {
            char word[32];
            snprintf(word, sizeof(word), " %s ", bv_job_status_name(s));
            bool want = strstr(verb_rows[v].statuses, word) != NULL;
            if (bv_job_verb_allowed(verb_rows[v].verb, s) != want)
                fail_msg("verb %s in %s: table says %d, §5.2 says %d", verb_rows[v].name,
                         bv_job_status_name(s), bv_job_verb_allowed(verb_rows[v].verb, s),
                         want);
        }
    }
    assert_false(bv_job_verb_allowed(BV_JOB_VERB__MAX, BV_JOB_RUNNING));
    assert_false(bv_job_verb_allowed(BV_JOB_VERB_CANCEL, BV_JOB_STATUS__MAX));
}

static void test_names(void **state)
{
    (void)state;
    static const char *const names[] = { "undefined", "created", "running", "paused", "ready",
                                         "standby", "waiting", "pending", "aborting",
                                         "concluded", "null" };
    for (int s = 0; s < BV_JOB_STATUS__MAX; s++) {
        assert_string_equal(bv_job_status_name(s), names[s]);
        assert_int_equal(bv_job_status_parse(names[s]), s);
    }
    assert_int_equal(bv_job_status_parse("nope"), -1);
    assert_string_equal(bv_job_status_name(BV_JOB_STATUS__MAX), "undefined");
    /* §4.8 policy → action */
    assert_int_equal(bv_job_error_decide(BV_JOB_ERR_REPORT, EIO), BV_JOB_ACTION_REPORT);
    assert_int_equal(bv_job_error_decide(BV_JOB_ERR_IGNORE, EIO), BV_JOB_ACTION_IGNORE);
    assert_int_equal(bv_job_error_decide(BV_JOB_ERR_STOP, EIO), BV_JOB_ACTION_STOP);
    assert_int_equal(bv_job_error_decide(BV_JOB_ERR_ENOSPC, ENOSPC), BV_JOB_ACTION_STOP);
    assert_int_equal(bv_job_error_decide(BV_JOB_ERR_ENOSPC, EIO), BV_JOB_ACTION_REPORT);
    assert_int_equal(bv_job_error_decide(BV_JOB_ERR_AUTO, ENOSPC), BV_JOB_ACTION_STOP);
    assert_int_equal(bv_job_error_decide(BV_JOB_ERR_AUTO, EIO), BV_JOB_ACTION_REPORT);
    assert_string_equal(bv_job_error_action_name(BV_JOB_ACTION_IGNORE), "ignore");
    assert_string_equal(bv_job_iostatus_name(BV_JOB_IO_NOSPACE), "nospace");
}

/* ---- a fake driver ------------------------------------------------------------ */

/* run() waits until the test releases it (then returns result), or until a
 * kick shows a cancel (-ECANCELED) or a pause (BV_JOB_YIELD).  Its mutex is
 * a leaf below the engine's lock (kick is called with that lock held). */
struct fake {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool release;                    /* mu */
    bool kicked;                     /* mu */
    int result;                      /* mu: what run returns once released */
    int started;                     /* mu: run calls so far */
    enum bv_job_error_policy policy; /* stop_once: report an error under it first */
    bool error_once;
    uint64_t len;
    atomic_int commits, aborts, cleans, frees;
};

static void fake_init(struct fake *f, bool released, int result)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->release = released;
    f->result = result;
    f->len = 1 << 20;
}

static void fake_destroy(struct fake *f)
{
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

/* The fakes live in the fixture, not on a test's stack: a failed assertion
 * leaves the test early while run functions may still use theirs; the
 * teardown shuts the engine down first, then destroys them. */
#define MAX_FAKES 16
static struct fake fakes[MAX_FAKES];
static int n_fakes;

static struct fake *fake_new(bool released, int result)
{
    assert_true(n_fakes < MAX_FAKES);
    struct fake *f = &fakes[n_fakes++];
    fake_init(f, released, result);
    return f;
}

static void fakes_destroy(void)
{
    for (int i = 0; i < n_fakes; i++)
        fake_destroy(&fakes[i]);
    n_fakes = 0;
}

static void fake_release(struct fake *f, int result)
{
    pthread_mutex_lock(&f->mu);
    f->release = true;
    f->result = result;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Wait until run has been called n times; false at the deadline. */
static bool fake_wait_started(struct fake *f, int n)
{
    struct timespec dl = h_deadline(H_WAIT_S);
    pthread_mutex_lock(&f->mu);
    while (f->started < n)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) == ETIMEDOUT)
            break;
    bool ok = f->started >= n;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static int fake_run(struct bv_job *job, bv_error **errp)
{
    struct fake *f = bv_job_opaque(job);
    pthread_mutex_lock(&f->mu);
    f->started++;
    bool error_now = f->error_once;
    f->error_once = false;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    bv_job_set_len(job, f->len);
    if (error_now) {
        enum bv_job_error_action a = bv_job_report_error(job, f->policy, false, EIO);
        if (a == BV_JOB_ACTION_REPORT)
            return -EIO;
        if (a == BV_JOB_ACTION_STOP)
            return BV_JOB_YIELD;
    }
    for (;;) {
        pthread_mutex_lock(&f->mu);
        while (!f->release && !f->kicked)
            pthread_cond_wait(&f->cv, &f->mu);
        bool released = f->release;
        int result = f->result;
        f->kicked = false;
        pthread_mutex_unlock(&f->mu);
        if (bv_job_is_cancelled(job))
            return -ECANCELED;
        if (bv_job_should_pause(job))
            return BV_JOB_YIELD;
        if (released) {
            if (result == 0)
                bv_job_progress_add(job, f->len);
            return result;
        }
    }
}

static void fake_kick(struct bv_job *job)
{
    struct fake *f = bv_job_opaque(job);
    pthread_mutex_lock(&f->mu);
    f->kicked = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void fake_commit(struct bv_job *job) { atomic_fetch_add(&((struct fake *)bv_job_opaque(job))->commits, 1); }
static void fake_abort(struct bv_job *job) { atomic_fetch_add(&((struct fake *)bv_job_opaque(job))->aborts, 1); }
static void fake_clean(struct bv_job *job) { atomic_fetch_add(&((struct fake *)bv_job_opaque(job))->cleans, 1); }
static void fake_free(struct bv_job *job) { atomic_fetch_add(&((struct fake *)bv_job_opaque(job))->frees, 1); }

static const struct bv_job_driver fake_driver = {
    .type = "backup",
    .run = fake_run,
    .commit = fake_commit,
    .abort = fake_abort,
    .clean = fake_clean,
    .kick = fake_kick,
    .free = fake_free,
};

/* ---- fixtures ---------------------------------------------------------------- */

static struct h_engine *eng;

static int setup_engine(int threads)
{
    eng = calloc(1, sizeof(*eng));
    return eng && h_engine_start(eng, threads) == 0 ? 0 : -1;
}

static int setup2(void **state) { (void)state; return setup_engine(2); }
static int setup1(void **state) { (void)state; return setup_engine(1); }

static int teardown(void **state)
{
    (void)state;
    bool overflow = eng->rec.overflow;
    h_engine_stop(eng);
    free(eng);
    eng = NULL;
    fakes_destroy();
    return overflow ? -1 : 0;
}

static struct bv_job *create(const char *id, struct fake *f, bool auto_finalize,
                             bool auto_dismiss)
{
    struct bv_job_opts o = { .id = id, .device = id, .auto_finalize = auto_finalize,
                             .auto_dismiss = auto_dismiss };
    struct bv_job *job = NULL;
    bv_error *err = NULL;
    int r = bv_job_create(eng->ctx, &fake_driver, f, &o, &job, &err);
    if (r < 0)
        fail_msg("bv_job_create(%s): %s", id, err ? err->msg : "?");
    return job;
}

static struct bv_job *start(const char *id, struct fake *f)
{
    struct bv_job *job = create(id, f, true, true);
    bv_job_start(job);
    return job;
}

#define SEQ(id) h_seq(&eng->rec, (id), seqbuf, sizeof(seqbuf))
#define WAIT(id, word) assert_true(h_wait(&eng->rec, (id), (word)))

/* Expect a verb to be refused with EBUSY and exactly this text. */
static void refused(int r, bv_error **errp, const char *text)
{
    assert_int_equal(r, -EBUSY);
    assert_non_null(*errp);
    assert_string_equal((*errp)->msg, text);
    bv_error_free(*errp);
    *errp = NULL;
}

static struct bv_job_info info_of(struct bv_job *job)
{
    struct bv_job_info i;
    bv_job_query(job, &i);
    return i;
}

/* Every event of job id (COMPLETED/CANCELLED, concluded, null) that ends it
 * is delivered in one sink call: a reader of the sink's store who has seen
 * the end sees the job gone. */
static void assert_end_in_one_batch(const char *id)
{
    long a = h_find(&eng->rec, id, "concluded", 1);
    long b = h_find(&eng->rec, id, "null", 1);
    assert_true(a > 0 && b > a);
    struct h_event ea = h_get(&eng->rec, a - 1), ec = h_get(&eng->rec, a),
                   en = h_get(&eng->rec, b);
    assert_true(ea.kind == BV_JOB_EV_COMPLETED || ea.kind == BV_JOB_EV_CANCELLED);
    assert_int_equal(ea.batch, ec.batch);
    assert_int_equal(ec.batch, en.batch);
}

/* ---- sequences ------------------------------------------------------------- */

static void test_success(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    struct bv_job *job = start("j0", f);
    WAIT("j0", "null");
    assert_string_equal(SEQ("j0"), "created running waiting pending COMPLETED concluded null");
    assert_end_in_one_batch("j0");
    struct h_event c = h_get(&eng->rec, h_find(&eng->rec, "j0", "COMPLETED", 1));
    assert_int_equal(c.job.offset, f->len);
    assert_int_equal(c.job.len, f->len);
    assert_string_equal(c.job.type, "backup");
    assert_string_equal(c.job.device, "j0");
    assert_false(c.job.failed);
    assert_int_equal(f->commits, 1);
    assert_int_equal(f->aborts, 0);
    assert_int_equal(f->cleans, 1);
    /* gone from the live list: the id is free again */
    assert_null(bv_job_find(eng->ctx, "j0"));
    assert_int_equal(bv_job_id_check(eng->ctx, "j0", NULL), 0);
    assert_int_equal(f->frees, 0);             /* the caller's reference keeps it */
    bv_job_unref(job);
    assert_int_equal(f->frees, 1);
}

static void test_failure(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(false, 0);
    struct bv_job *job = start("j1", f);
    assert_true(fake_wait_started(f, 1));
    struct bv_job_info i = info_of(job);
    assert_int_equal(i.status, BV_JOB_RUNNING);
    assert_true(i.busy);
    fake_release(f, -EIO);
    WAIT("j1", "null");
    assert_string_equal(SEQ("j1"),
                        "created running aborting COMPLETED(Input/output error) concluded null");
    assert_end_in_one_batch("j1");
    struct h_event c = h_get(&eng->rec, h_find(&eng->rec, "j1", "COMPLETED(Input/output error)", 1));
    assert_true(c.job.failed);
    assert_false(c.job.cancelled);
    assert_int_equal(c.job.offset, 0);
    assert_int_equal(f->commits, 0);
    assert_int_equal(f->aborts, 1);
    assert_int_equal(f->cleans, 1);
    bv_job_unref(job);
}

static void test_cancel_running(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(false, 0);
    struct bv_job *job = start("j2", f);
    assert_true(fake_wait_started(f, 1));
    assert_int_equal(bv_job_cancel(job, NULL), 0);
    WAIT("j2", "null");
    assert_string_equal(SEQ("j2"), "created running aborting CANCELLED concluded null");
    assert_end_in_one_batch("j2");
    struct h_event c = h_get(&eng->rec, h_find(&eng->rec, "j2", "CANCELLED", 1));
    assert_true(c.job.cancelled);
    assert_false(c.job.failed);
    assert_string_equal(c.job.error, "");
    assert_int_equal(f->aborts, 1);
    assert_int_equal(f->commits, 0);
    bv_job_unref(job);
}

static void test_cancel_created(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    struct bv_job *job = create("j3", f, true, true);
    assert_int_equal(bv_job_cancel(job, NULL), 0);
    assert_string_equal(SEQ("j3"), "created aborting CANCELLED concluded null");
    bv_job_start(job);                        /* a no-op now */
    assert_string_equal(SEQ("j3"), "created aborting CANCELLED concluded null");
    assert_int_equal(f->started, 0);
    assert_int_equal(f->aborts, 1);
    assert_int_equal(f->cleans, 1);
    bv_job_unref(job);
    assert_int_equal(f->frees, 1);
}

/* A job created but never started, whose transaction goes away: start
 * cancels it (§6.2: drive-backup's abort). */
static void test_start_after_txn_abort(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *fa = fake_new(true, 0);
    struct fake *fb = fake_new(true, 0);
    struct bv_job_txn *txn = bv_job_txn_new(eng->ctx);
    struct bv_job *a = create("ta", fa, true, true);
    struct bv_job *b = create("tb", fb, true, true);
    bv_job_txn_add(txn, a);
    bv_job_txn_add(txn, b);
    bv_job_txn_unref(txn);
    assert_int_equal(bv_job_cancel(a, NULL), 0);
    assert_string_equal(SEQ("ta"), "created aborting CANCELLED concluded null");
    assert_string_equal(SEQ("tb"), "created aborting CANCELLED concluded null");
    bv_job_start(a);
    bv_job_start(b);
    assert_int_equal(fa->started + fb->started, 0);
    bv_job_unref(a);
    bv_job_unref(b);
}

static void test_pause_resume(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(false, 0);
    struct bv_job *job = start("p0", f);
    assert_true(fake_wait_started(f, 1));
    bv_error *err = NULL;
    refused(bv_job_resume(job, &err), &err, "Can't resume a job that was not paused");
    assert_int_equal(bv_job_pause(job, NULL), 0);
    err = NULL;
    refused(bv_job_pause(job, &err), &err, "Job is already paused");
    WAIT("p0", "paused");
    struct bv_job_info i = info_of(job);
    assert_int_equal(i.status, BV_JOB_PAUSED);
    assert_true(i.paused);
    assert_false(i.busy);
    err = NULL;
    refused(bv_job_pause(job, &err), &err, "Job is already paused");
    err = NULL;
    refused(bv_job_finalize(job, &err), &err,
            "Job 'p0' in state 'paused' cannot accept command verb 'finalize'");
    err = NULL;
    refused(bv_job_dismiss(job, &err), &err,
            "Job 'p0' in state 'paused' cannot accept command verb 'dismiss'");
    assert_int_equal(bv_job_set_speed(job, 4096, NULL), 0);
    assert_int_equal(bv_job_resume(job, NULL), 0);
    assert_true(fake_wait_started(f, 2));    /* submitted again */
    i = info_of(job);
    assert_int_equal(i.status, BV_JOB_RUNNING);
    assert_false(i.paused);
    assert_int_equal(i.speed, 4096);
    err = NULL;
    refused(bv_job_resume(job, &err), &err, "Can't resume a job that was not paused");
    fake_release(f, 0);
    WAIT("p0", "null");
    assert_string_equal(SEQ("p0"),
                        "created running paused running waiting pending COMPLETED concluded null");
    struct h_event c = h_get(&eng->rec, h_find(&eng->rec, "p0", "COMPLETED", 1));
    assert_int_equal(c.job.speed, 4096);
    bv_job_unref(job);
}

/* Pause then resume before the run function reached its pause point: it
 * yields and is submitted again without a paused status. */
static void test_pause_resume_before_yield(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(false, 0);
    struct bv_job *job = create("p1", f, true, true);
    assert_int_equal(bv_job_pause(job, NULL), 0);     /* created: allowed */
    bv_job_start(job);
    assert_string_equal(SEQ("p1"), "created running paused");
    assert_int_equal(f->started, 0);                   /* a paused job holds no thread */
    assert_int_equal(bv_job_resume(job, NULL), 0);
    assert_true(fake_wait_started(f, 1));
    fake_release(f, 0);
    WAIT("p1", "null");
    assert_string_equal(SEQ("p1"),
                        "created running paused running waiting pending COMPLETED concluded null");
    bv_job_unref(job);
}

static void test_cancel_paused(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(false, 0);
    struct bv_job *job = start("p2", f);
    assert_true(fake_wait_started(f, 1));
    assert_int_equal(bv_job_pause(job, NULL), 0);
    WAIT("p2", "paused");
    assert_int_equal(bv_job_cancel(job, NULL), 0);
    WAIT("p2", "null");
    /* paused -> aborting is not in the table: QEMU resumes the job first */
    assert_string_equal(SEQ("p2"),
                        "created running paused running aborting CANCELLED concluded null");
    assert_int_equal(f->started, 1);
    assert_int_equal(f->aborts, 1);
    bv_job_unref(job);
}

/* An error under the stop policy: BLOCK_JOB_ERROR, then a user-paused job
 * with its io-status; resume clears it (§4.8). */
static void test_error_stop_then_resume(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    f->error_once = true;
    f->policy = BV_JOB_ERR_STOP;
    struct bv_job *job = start("e0", f);
    WAIT("e0", "paused");
    struct bv_job_info i = info_of(job);
    assert_int_equal(i.status, BV_JOB_PAUSED);
    assert_true(i.paused);
    assert_int_equal(i.iostatus, BV_JOB_IO_FAILED);
    assert_int_equal(bv_job_resume(job, NULL), 0);
    WAIT("e0", "null");
    assert_string_equal(SEQ("e0"), "created running ERROR(read,stop) paused running waiting "
                                   "pending COMPLETED concluded null");
    struct h_event c = h_get(&eng->rec, h_find(&eng->rec, "e0", "COMPLETED", 1));
    assert_int_equal(c.job.iostatus, BV_JOB_IO_OK);
    bv_job_unref(job);
}

static void test_error_report_and_ignore(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    f->error_once = true;
    f->policy = BV_JOB_ERR_REPORT;
    struct bv_job *a = start("e1", f);
    struct fake *g = fake_new(true, 0);
    g->error_once = true;
    g->policy = BV_JOB_ERR_IGNORE;
    struct bv_job *b = start("e2", g);
    WAIT("e1", "null");
    WAIT("e2", "null");
    assert_string_equal(SEQ("e1"), "created running ERROR(read,report) aborting "
                                   "COMPLETED(Input/output error) concluded null");
    assert_string_equal(SEQ("e2"), "created running ERROR(read,ignore) waiting pending "
                                   "COMPLETED concluded null");
    bv_job_unref(a);
    bv_job_unref(b);
}

static void test_auto_finalize_off(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    struct bv_job *job = create("f0", f, false, true);
    bv_job_start(job);
    WAIT("f0", "PENDING");
    assert_string_equal(SEQ("f0"), "created running waiting pending PENDING");
    assert_int_equal(info_of(job).status, BV_JOB_PENDING);
    assert_int_equal(f->commits, 0);
    bv_error *err = NULL;
    refused(bv_job_dismiss(job, &err), &err,
            "Job 'f0' in state 'pending' cannot accept command verb 'dismiss'");
    err = NULL;
    refused(bv_job_pause(job, &err), &err,
            "Job 'f0' in state 'pending' cannot accept command verb 'pause'");
    assert_int_equal(bv_job_finalize(job, NULL), 0);
    assert_string_equal(SEQ("f0"), "created running waiting pending PENDING COMPLETED "
                                   "concluded null");
    assert_int_equal(f->commits, 1);
    bv_job_unref(job);
}

static void test_cancel_pending(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    struct bv_job *job = create("f1", f, false, true);
    bv_job_start(job);
    WAIT("f1", "PENDING");
    assert_int_equal(bv_job_cancel(job, NULL), 0);
    /* still a cancel, with offset == len (§4.9) */
    assert_string_equal(SEQ("f1"), "created running waiting pending PENDING aborting "
                                   "CANCELLED concluded null");
    struct h_event c = h_get(&eng->rec, h_find(&eng->rec, "f1", "CANCELLED", 1));
    assert_int_equal(c.job.offset, c.job.len);
    assert_int_equal(f->aborts, 1);
    assert_int_equal(f->commits, 0);
    bv_job_unref(job);
}

static void test_auto_dismiss_off(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    struct bv_job *job = create("d0", f, true, false);
    bv_job_start(job);
    WAIT("d0", "concluded");
    assert_string_equal(SEQ("d0"), "created running waiting pending COMPLETED concluded");
    /* still live, its id reserved */
    struct bv_job *found = bv_job_find(eng->ctx, "d0");
    assert_ptr_equal(found, job);
    bv_job_unref(found);
    assert_int_equal(info_of(job).status, BV_JOB_CONCLUDED);
    bv_error *err = NULL;
    assert_int_equal(bv_job_id_check(eng->ctx, "d0", &err), -EEXIST);
    assert_string_equal(err->msg, "Job ID 'd0' already in use");
    bv_error_free(err);
    struct fake *g = fake_new(true, 0);
    struct bv_job_opts o = { .id = "d0", .auto_finalize = true, .auto_dismiss = true };
    struct bv_job *dup = NULL;
    err = NULL;
    assert_int_equal(bv_job_create(eng->ctx, &fake_driver, g, &o, &dup, &err), -EEXIST);
    assert_string_equal(err->msg, "Job ID 'd0' already in use");
    bv_error_free(err);
    assert_int_equal(g->frees, 1);             /* the driver state went with the refusal */
    err = NULL;
    refused(bv_job_cancel(job, &err), &err,
            "Job 'd0' in state 'concluded' cannot accept command verb 'cancel'");
    err = NULL;
    refused(bv_job_finalize(job, &err), &err,
            "Job 'd0' in state 'concluded' cannot accept command verb 'finalize'");
    struct bv_job_info *list = NULL;
    size_t n = bv_job_list(eng->ctx, &list);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, "d0");
    free(list);
    assert_int_equal(bv_job_dismiss(job, NULL), 0);
    assert_string_equal(SEQ("d0"), "created running waiting pending COMPLETED concluded null");
    err = NULL;
    refused(bv_job_dismiss(job, &err), &err,
            "Job 'd0' in state 'null' cannot accept command verb 'dismiss'");
    assert_null(bv_job_find(eng->ctx, "d0"));
    n = bv_job_list(eng->ctx, &list);
    assert_int_equal(n, 0);
    free(list);
    bv_job_unref(job);
    assert_int_equal(f->frees, 1);
    /* the id is reusable once null */
    job = start("d0", fake_new(true, 0));
    WAIT("d0", "COMPLETED");
    assert_true(h_wait_nth(&eng->rec, "d0", "null", 2));
    bv_job_unref(job);
}

static void test_job_ids(void **state)
{
    (void)state;
    static const char *const bad[] = { "", "1abc", "-a", "_a", ".a", "a b", "a/b", "a:b",
                                       "é", "a\n" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bv_error *err = NULL;
        struct fake *f = fake_new(true, 0);
        struct bv_job_opts o = { .id = bad[i], .auto_finalize = true, .auto_dismiss = true };
        struct bv_job *job = NULL;
        assert_int_equal(bv_job_create(eng->ctx, &fake_driver, f, &o, &job, &err), -EINVAL);
        char want[64];
        snprintf(want, sizeof(want), "Invalid job ID '%s'", bad[i]);
        assert_string_equal(err->msg, want);
        bv_error_free(err);
        assert_int_equal(f->frees, 1);
        err = NULL;
        assert_int_equal(bv_job_id_check(eng->ctx, bad[i], &err), -EINVAL);
        assert_string_equal(err->msg, want);
        bv_error_free(err);
    }
    static const char *const good[] = { "a", "Z", "drive0", "a-b.c_d", "x1.2-3_" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(bv_job_id_check(eng->ctx, good[i], NULL), 0);
    assert_int_equal(h_count(&eng->rec), 0);  /* refusals emit nothing */
    /* in use while live, free again once null */
    char seqbuf[1024];
    struct fake *f = fake_new(false, 0);
    struct bv_job *job = start("busy", f);
    bv_error *err = NULL;
    assert_int_equal(bv_job_id_check(eng->ctx, "busy", &err), -EEXIST);
    assert_string_equal(err->msg, "Job ID 'busy' already in use");
    bv_error_free(err);
    fake_release(f, 0);
    WAIT("busy", "null");
    assert_int_equal(bv_job_id_check(eng->ctx, "busy", NULL), 0);
    assert_string_equal(SEQ("busy"), "created running waiting pending COMPLETED concluded null");
    bv_job_unref(job);
}

/* ---- grouped transactions ------------------------------------------------------ */

static struct bv_job_txn *group(struct bv_job **jobs, size_t n)
{
    struct bv_job_txn *txn = bv_job_txn_new(eng->ctx);
    assert_non_null(txn);
    for (size_t i = 0; i < n; i++)
        bv_job_txn_add(txn, jobs[i]);
    return txn;
}

/* One job fails after the other already waits: the waiting one is cancelled. */
static void test_txn_failure_cancels_waiting(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *fa = fake_new(true, 0);
    struct fake *fb = fake_new(false, 0);
    struct bv_job *j[2] = { create("drive0", fa, true, true), create("drive1", fb, true, true) };
    struct bv_job_txn *txn = group(j, 2);
    bv_job_start(j[0]);
    bv_job_start(j[1]);
    bv_job_txn_unref(txn);
    WAIT("drive0", "waiting");
    assert_true(fake_wait_started(fb, 1));
    assert_int_equal(info_of(j[0]).status, BV_JOB_WAITING);
    bv_error *err = NULL;
    refused(bv_job_pause(j[0], &err), &err,
            "Job 'drive0' in state 'waiting' cannot accept command verb 'pause'");
    fake_release(fb, -EIO);
    WAIT("drive0", "null");
    WAIT("drive1", "null");
    assert_string_equal(SEQ("drive0"), "created running waiting aborting CANCELLED concluded null");
    assert_string_equal(SEQ("drive1"),
                        "created running aborting COMPLETED(Input/output error) concluded null");
    /* the waiting job finished its work: offset == len even though cancelled */
    struct h_event c = h_get(&eng->rec, h_find(&eng->rec, "drive0", "CANCELLED", 1));
    assert_int_equal(c.job.offset, c.job.len);
    assert_int_equal(fa->aborts, 1);
    assert_int_equal(fb->aborts, 1);
    assert_int_equal(fa->commits + fb->commits, 0);
    assert_int_equal(fa->cleans + fb->cleans, 2);
    bv_job_unref(j[0]);
    bv_job_unref(j[1]);
}

/* Cancelling a waiting job cancels the running rest of its transaction. */
static void test_txn_cancel_waiting(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *fa = fake_new(true, 0);
    struct fake *fb = fake_new(false, 0);
    struct fake *fc = fake_new(false, 0);
    struct bv_job *j[3] = { create("w0", fa, true, true), create("w1", fb, true, true),
                            create("w2", fc, true, true) };
    struct bv_job_txn *txn = group(j, 3);
    bv_job_txn_unref(txn);
    for (int i = 0; i < 3; i++)
        bv_job_start(j[i]);
    WAIT("w0", "waiting");
    assert_true(fake_wait_started(fb, 1));
    assert_int_equal(bv_job_pause(j[1], NULL), 0);
    WAIT("w1", "paused");
    assert_int_equal(bv_job_cancel(j[0], NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_true(h_wait(&eng->rec, bv_job_id(j[i]), "null"));
    assert_string_equal(SEQ("w0"), "created running waiting aborting CANCELLED concluded null");
    assert_string_equal(SEQ("w1"), "created running paused running aborting CANCELLED "
                                   "concluded null");
    assert_string_equal(SEQ("w2"), "created running aborting CANCELLED concluded null");
    for (int i = 0; i < 3; i++)
        bv_job_unref(j[i]);
}

/* All succeed: nobody is pending before all have finished; then all go
 * pending together, then each completes. */
static void test_txn_all_succeed(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *fa = fake_new(true, 0);
    struct fake *fb = fake_new(false, 0);
    struct bv_job *j[2] = { create("s0", fa, true, true), create("s1", fb, true, true) };
    struct bv_job_txn *txn = group(j, 2);
    bv_job_txn_unref(txn);
    bv_job_start(j[0]);
    bv_job_start(j[1]);
    WAIT("s0", "waiting");
    assert_true(fake_wait_started(fb, 1));
    assert_int_equal(h_find(&eng->rec, "s0", "pending", 1), -1);
    fake_release(fb, 0);
    WAIT("s0", "null");
    WAIT("s1", "null");
    assert_string_equal(SEQ("s0"), "created running waiting pending COMPLETED concluded null");
    assert_string_equal(SEQ("s1"), "created running waiting pending COMPLETED concluded null");
    long p0 = h_find(&eng->rec, "s0", "pending", 1), p1 = h_find(&eng->rec, "s1", "pending", 1);
    long w1 = h_find(&eng->rec, "s1", "waiting", 1);
    long c0 = h_find(&eng->rec, "s0", "COMPLETED", 1), c1 = h_find(&eng->rec, "s1", "COMPLETED", 1);
    assert_true(p0 > w1 && p1 > w1);
    assert_true(c0 > p0 && c0 > p1 && c1 > p0 && c1 > p1);
    assert_int_equal(fa->commits + fb->commits, 2);
    bv_job_unref(j[0]);
    bv_job_unref(j[1]);
}

/* Grouped, one without auto_finalize: all wait in pending for finalize;
 * finalize of one finalizes the whole transaction. */
static void test_txn_finalize_together(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *fa = fake_new(true, 0);
    struct fake *fb = fake_new(true, 0);
    struct bv_job *j[2] = { create("g0", fa, false, true), create("g1", fb, false, false) };
    struct bv_job_txn *txn = group(j, 2);
    bv_job_txn_unref(txn);
    bv_job_start(j[0]);
    bv_job_start(j[1]);
    WAIT("g0", "PENDING");
    WAIT("g1", "PENDING");
    assert_int_equal(bv_job_finalize(j[1], NULL), 0);
    assert_string_equal(SEQ("g0"),
                        "created running waiting pending PENDING COMPLETED concluded null");
    assert_string_equal(SEQ("g1"), "created running waiting pending PENDING COMPLETED concluded");
    assert_int_equal(bv_job_dismiss(j[1], NULL), 0);
    bv_job_unref(j[0]);
    bv_job_unref(j[1]);
}

/* More jobs than executor threads (one here): a waiting job has returned
 * its thread, so the last job of the transaction still gets to run. */
static void test_txn_more_jobs_than_threads(void **state)
{
    (void)state;
    char seqbuf[1024];
    enum { N = 5 };
    struct fake *f[N];
    struct bv_job *j[N];
    char ids[N][8];
    for (int i = 0; i < N; i++) {
        f[i] = fake_new(i < N - 1, 0);
        snprintf(ids[i], sizeof(ids[i]), "m%d", i);
        j[i] = create(ids[i], f[i], true, true);
    }
    struct bv_job_txn *txn = group(j, N);
    bv_job_txn_unref(txn);
    for (int i = 0; i < N; i++)
        bv_job_start(j[i]);
    for (int i = 0; i < N - 1; i++)
        WAIT(ids[i], "waiting");
    /* the last one runs on the only thread while the others wait */
    assert_true(fake_wait_started(f[N - 1], 1));
    fake_release(f[N - 1], 0);
    for (int i = 0; i < N; i++) {
        WAIT(ids[i], "null");
        assert_string_equal(SEQ(ids[i]),
                            "created running waiting pending COMPLETED concluded null");
    }
    pthread_mutex_lock(&eng->pool.mu);
    unsigned max_running = eng->pool.max_running;
    pthread_mutex_unlock(&eng->pool.mu);
    assert_int_equal(max_running, 1);
    for (int i = 0; i < N; i++)
        bv_job_unref(j[i]);
}

/* The executor refuses the run function: the job fails with that error. */
static void test_submit_refused(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *f = fake_new(true, 0);
    struct bv_job *job = create("r0", f, true, true);
    pthread_mutex_lock(&eng->pool.mu);
    eng->pool.stop = true;                    /* refuses, keeps the threads */
    pthread_mutex_unlock(&eng->pool.mu);
    bv_job_start(job);
    WAIT("r0", "null");
    char want[128];
    snprintf(want, sizeof(want),
             "created running aborting COMPLETED(%s) concluded null", strerror(ESHUTDOWN));
    assert_string_equal(SEQ("r0"), want);
    assert_int_equal(f->started, 0);
    bv_job_unref(job);
}

/* Shutdown cancels every live job in whatever status it is and waits for
 * the run functions; concluded jobs are left for the caller. */
static void test_shutdown(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *fr = fake_new(false, 0);
    struct fake *fp = fake_new(false, 0);
    struct fake *fc = fake_new(true, 0);
    struct fake *fw = fake_new(true, 0);
    struct fake *fx = fake_new(true, 0);
    struct bv_job *running = start("run", fr);
    struct bv_job *paused = start("pau", fp);
    struct bv_job *created = create("cre", fc, true, true);
    struct bv_job *pending = create("pen", fw, false, true);
    struct bv_job *concluded = create("con", fx, true, false);
    bv_job_start(pending);
    bv_job_start(concluded);
    assert_true(fake_wait_started(fr, 1));
    assert_true(fake_wait_started(fp, 1));
    assert_int_equal(bv_job_pause(paused, NULL), 0);
    WAIT("pau", "paused");
    WAIT("pen", "PENDING");
    WAIT("con", "concluded");
    bv_job_ctx_shutdown(eng->ctx, H_WAIT_S * 1000);
    assert_string_equal(SEQ("run"), "created running aborting CANCELLED concluded null");
    assert_string_equal(SEQ("pau"),
                        "created running paused running aborting CANCELLED concluded null");
    assert_string_equal(SEQ("cre"), "created aborting CANCELLED concluded null");
    assert_string_equal(SEQ("pen"),
                        "created running waiting pending PENDING aborting CANCELLED concluded null");
    assert_string_equal(SEQ("con"), "created running waiting pending COMPLETED concluded");
    /* no run function is left queued (a worker may still be on its way
     * out of the pool's loop: the engine is done with it) */
    pthread_mutex_lock(&eng->pool.mu);
    bool queued = eng->pool.head != NULL;
    pthread_mutex_unlock(&eng->pool.mu);
    assert_false(queued);
    struct bv_job *j[] = { running, paused, created, pending, concluded };
    for (size_t i = 0; i < 5; i++)
        bv_job_unref(j[i]);
    assert_int_equal(fr->frees + fp->frees + fc->frees + fw->frees, 4);
    assert_int_equal(fx->frees, 0);            /* concluded, live: freed with the engine */
    h_engine_stop(eng);
    assert_int_equal(fx->frees, 1);
    free(eng);
    eng = NULL;
    assert_int_equal(setup_engine(2), 0);     /* for the teardown */
}

/* Queued run functions that the pool drops at its stop cancel their jobs. */
static void test_pool_drops_queued(void **state)
{
    (void)state;
    char seqbuf[1024];

    struct fake *fa = fake_new(false, 0);
    struct fake *fb = fake_new(true, 0);
    struct bv_job *a = start("q0", fa);      /* holds the only thread */
    assert_true(fake_wait_started(fa, 1));
    struct bv_job *b = start("q1", fb);      /* queued behind it */
    pthread_mutex_lock(&eng->pool.mu);
    eng->pool.stop = true;
    pthread_cond_broadcast(&eng->pool.cv);
    pthread_mutex_unlock(&eng->pool.mu);
    fake_release(fa, 0);
    h_pool_stop(&eng->pool);                  /* joins q0's worker, drops q1 */
    WAIT("q0", "null");
    WAIT("q1", "null");
    assert_string_equal(SEQ("q0"), "created running waiting pending COMPLETED concluded null");
    assert_string_equal(SEQ("q1"), "created running aborting CANCELLED concluded null");
    assert_int_equal(fb->started, 0);
    bv_job_unref(a);
    bv_job_unref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transition_table),
        cmocka_unit_test(test_verb_table),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_success, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_failure, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_created, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_start_after_txn_abort, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_before_yield, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_paused, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_error_stop_then_resume, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_error_report_and_ignore, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_auto_finalize_off, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_pending, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_auto_dismiss_off, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_job_ids, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_txn_failure_cancels_waiting, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_txn_cancel_waiting, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_txn_all_succeed, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_txn_finalize_together, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_txn_more_jobs_than_threads, setup1, teardown),
        cmocka_unit_test_setup_teardown(test_submit_refused, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown, setup2, teardown),
        cmocka_unit_test_setup_teardown(test_pool_drops_queued, setup1, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
