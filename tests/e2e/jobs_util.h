/*
 * Helpers for job-engine end-to-end tests, over the harness (harness.h).
 *
 * Events: QEMU's iotests read QMP events through a queue (python/qemu
 * machine.py): event_wait() takes the first queued event that matches and
 * leaves the others queued, and get_qmp_events(wait=False) returns
 * everything still queued plus whatever has arrived, emptying the queue.
 * A port of an iotest must consume events the same way, or its "no other
 * events" assertions mean something else.  struct ju_events is that queue,
 * filled from GET /api/v1/events?after=SEQ&wait=S long polls (never
 * sleeps), plus a log of every event fetched so that a job's whole status
 * sequence can be checked after the fact.  Every fetched event is checked
 * against the contract's exact field lists (api.md, Events).
 *
 * Soft checks: ju_check*() print "CHECK FAILED: what: expected X, got Y",
 * count the failure and let the scenario go on, so one run lists every
 * mismatch; ju_end() fails the test if any check failed.  Use cmocka's
 * hard asserts where going on makes no sense (a call that did not answer,
 * an event that never came).
 *
 * BV_E2E_VERBOSE=1 prints every event fetched and every job's sequence.
 */
#ifndef BV_E2E_JOBS_UTIL_H
#define BV_E2E_JOBS_UTIL_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "harness.h"

/* --- soft checks --- */
void ju_check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ju_check_int(const char *what, long long want, long long got);
void ju_check_str(const char *what, const char *want, const char *got);
/* The member `key` of o is a number equal to want. */
void ju_check_num_member(const char *what, const cJSON *o, const char *key, long long want);
/* The member `key` of o is a string equal to want. */
void ju_check_str_member(const char *what, const cJSON *o, const char *key, const char *want);
/* o has exactly these members (NULL-terminated list); `optional` may be NULL. */
void ju_check_keys(const char *what, const cJSON *o, const char *const *keys,
                   const char *optional);
/* got equals the JSON text want (objects compared regardless of member order). */
void ju_check_json(const char *what, const char *want, const cJSON *got);
int ju_failures(void);
/* Fails the test (cmocka) if a soft check failed since the last ju_end(); resets. */
void ju_end(void);
/* Forgets failures counted by a test that ended early (call in setup). */
void ju_reset(void);

/* --- calls --- */
/* printf body (fmt NULL: none); fills r, returns 0 or -1 (no answer). */
int ju_call(struct bvh *h, struct bvh_resp *r, const char *method, const char *path,
            const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The same as a soft check that the status is `want`: the reply's JSON (caller deletes; NULL
 * without one), also when the status differs (the check has failed then). */
cJSON *ju_json(struct bvh *h, long want, const char *method, const char *path, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
/* o's string member key, or dflt. */
const char *ju_str_or(const cJSON *o, const char *key, const char *dflt);

/* --- the event queue --- */
struct ju_events {
    struct bvh *h;
    long long next;     /* `after` for the next poll */
    cJSON *queue;       /* fetched, not consumed (array) */
    cJSON *log;         /* every event fetched, oldest first (array) */
};

void ju_events_init(struct ju_events *ev, struct bvh *h, long long after);
void ju_events_free(struct ju_events *ev);
/* One long poll of up to wait_s seconds (0: no wait); returns the number fetched. */
int ju_events_poll(struct ju_events *ev, double wait_s);
/* QEMU's event_wait: the first queued event named `name` (NULL: any) whose
 * data member `key` (NULL: no condition) is the string `val`, removed from
 * the queue; polls until timeout_s, then fails the test listing the queue.
 * Caller frees. */
cJSON *ju_event_wait(struct ju_events *ev, const char *name, const char *key,
                     const char *val, double timeout_s);
/* QEMU's get_qmp_events(wait=False): the queue plus what the daemon has now;
 * the queue is emptied.  Caller frees the array. */
cJSON *ju_events_drain(struct ju_events *ev);
/* Compact one-line rendering of an array of events (caller frees). */
char *ju_events_text(const cJSON *events);

/* A job's events since seq `after`, from the log, as words:
 * JOB_STATUS_CHANGE{id=job} → its status; BLOCK_JOB_COMPLETED/CANCELLED/
 * ERROR{device=job} → COMPLETED/CANCELLED/ERROR; BLOCK_JOB_PENDING{id=job}
 * → PENDING.  E.g. "created running waiting pending COMPLETED concluded
 * null".  Caller frees. */
char *ju_job_trace(const struct ju_events *ev, const char *job, long long after);
/* The trace with every "paused running" pair removed (extra pause/resume
 * blips are allowed by the contract).  Caller frees. */
char *ju_trace_normalize(const char *trace);
/* Soft check: the normalized trace of job is one of the NULL-terminated
 * alternatives. */
void ju_check_trace(const struct ju_events *ev, const char *job, long long after,
                    const char *const *alternatives);

#endif
