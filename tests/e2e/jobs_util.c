/* Job-engine e2e helpers: see jobs_util.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "jobs_util.h"

#define POLL_SLICE_S 10.0   /* one long poll; a wait is several until its deadline */

static int failures;

/* --- soft checks --- */

void ju_check(bool ok, const char *fmt, ...)
{
    if (ok)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "CHECK FAILED: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    failures++;
}

void ju_check_int(const char *what, long long want, long long got)
{
    ju_check(want == got, "%s: expected %lld, got %lld", what, want, got);
}

void ju_check_str(const char *what, const char *want, const char *got)
{
    bool ok = (!want && !got) || (want && got && strcmp(want, got) == 0);
    ju_check(ok, "%s: expected %s%s%s, got %s%s%s", what, want ? "'" : "",
             want ? want : "(absent)", want ? "'" : "", got ? "'" : "",
             got ? got : "(absent)", got ? "'" : "");
}

void ju_check_num_member(const char *what, const cJSON *o, const char *key, long long want)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) {
        char *s = o ? cJSON_PrintUnformatted(o) : NULL;
        ju_check(false, "%s: '%s' expected %lld, missing or not a number in %s", what, key,
                 want, s ? s : "(null)");
        free(s);
        return;
    }
    char w[256];
    snprintf(w, sizeof(w), "%s: '%s'", what, key);
    ju_check_int(w, want, (long long)it->valuedouble);
}

void ju_check_str_member(const char *what, const cJSON *o, const char *key, const char *want)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    char w[256];
    snprintf(w, sizeof(w), "%s: '%s'", what, key);
    if (it && !cJSON_IsString(it)) {
        char *s = cJSON_PrintUnformatted(it);
        ju_check(false, "%s: expected '%s', got non-string %s", w, want ? want : "(absent)",
                 s ? s : "?");
        free(s);
        return;
    }
    ju_check_str(w, want, it ? it->valuestring : NULL);
}

void ju_check_keys(const char *what, const cJSON *o, const char *const *keys,
                   const char *optional)
{
    if (!cJSON_IsObject(o)) {
        ju_check(false, "%s: not an object", what);
        return;
    }
    for (int i = 0; keys[i]; i++)
        ju_check(cJSON_HasObjectItem(o, keys[i]), "%s: member '%s' missing", what, keys[i]);
    const cJSON *it;
    cJSON_ArrayForEach(it, o) {
        bool known = optional && strcmp(it->string, optional) == 0;
        for (int i = 0; keys[i] && !known; i++)
            known = strcmp(it->string, keys[i]) == 0;
        ju_check(known, "%s: unexpected member '%s'", what, it->string);
    }
}

void ju_check_json(const char *what, const char *want, const cJSON *got)
{
    cJSON *w = cJSON_Parse(want);
    assert_non_null(w);
    if (!got || !cJSON_Compare(w, got, true)) {
        char *g = got ? cJSON_PrintUnformatted(got) : NULL;
        ju_check(false, "%s: expected %s, got %s", what, want, g ? g : "(absent)");
        free(g);
    }
    cJSON_Delete(w);
}

int ju_failures(void)
{
    return failures;
}

void ju_reset(void)
{
    failures = 0;
}

void ju_end(void)
{
    int n = failures;
    failures = 0;
    if (n)
        fail_msg("%d check(s) failed (see CHECK FAILED lines above)", n);
}

/* --- calls --- */

/* The request with a printf body (fmt NULL: none); fills r, returns 0 or -1 (no answer). */
static int vcall(struct bvh *h, struct bvh_resp *r, const char *method, const char *path,
                 const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static int vcall(struct bvh *h, struct bvh_resp *r, const char *method, const char *path,
                 const char *fmt, va_list ap)
{
    char *body = NULL;
    if (fmt && vasprintf(&body, fmt, ap) < 0)
        body = NULL;
    int rc = bvh_request(h, method, path, body, body ? strlen(body) : 0, NULL, NULL, r);
    free(body);
    return rc;
}

int ju_call(struct bvh *h, struct bvh_resp *r, const char *method, const char *path,
            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vcall(h, r, method, path, fmt, ap);
    va_end(ap);
    return rc;
}

cJSON *ju_json(struct bvh *h, long want, const char *method, const char *path, const char *fmt,
               ...)
{
    struct bvh_resp r;
    va_list ap;
    va_start(ap, fmt);
    int rc = vcall(h, &r, method, path, fmt, ap);
    va_end(ap);
    ju_check(rc == 0 && r.status == want, "%s %s: expected HTTP %ld, got %ld: %s", method, path,
             want, rc == 0 ? r.status : -1L, rc == 0 && r.body ? r.body : "");
    if (rc != 0)
        return NULL;
    cJSON *j = r.json;
    r.json = NULL;
    bvh_resp_free(&r);
    return j;
}

const char *ju_str_or(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* --- events --- */

struct shape {
    const char *name;
    const char *keys[6];
    const char *optional;
};

/* api.md, Events: "these field lists are exact (no extra fields)". */
static const struct shape shapes[] = {
    { "JOB_STATUS_CHANGE", { "id", "status", NULL }, NULL },
    { "BLOCK_JOB_COMPLETED", { "type", "device", "len", "offset", "speed", NULL }, "error" },
    { "BLOCK_JOB_CANCELLED", { "type", "device", "len", "offset", "speed", NULL }, NULL },
    { "BLOCK_JOB_ERROR", { "device", "operation", "action", NULL }, NULL },
    { "BLOCK_JOB_PENDING", { "type", "id", NULL }, NULL },
};

static const char *const envelope_keys[] = { "seq", "event", "timestamp", "data", NULL };
static const char *const number_keys[] = { "len", "offset", "speed", NULL };

static bool is_number_key(const char *k)
{
    for (int i = 0; number_keys[i]; i++)
        if (strcmp(k, number_keys[i]) == 0)
            return true;
    return false;
}

static void check_shape(const cJSON *e)
{
    ju_check_keys("event envelope", e, envelope_keys, NULL);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "event");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
    if (!cJSON_IsString(name))
        return;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        if (strcmp(shapes[i].name, name->valuestring) != 0)
            continue;
        char what[96];
        snprintf(what, sizeof(what), "%s data", shapes[i].name);
        ju_check_keys(what, data, shapes[i].keys, shapes[i].optional);
        const cJSON *it;
        cJSON_ArrayForEach(it, data) {
            bool num = is_number_key(it->string);
            ju_check(num ? cJSON_IsNumber(it) : cJSON_IsString(it), "%s: '%s' should be a %s",
                     what, it->string, num ? "number" : "string");
        }
    }
}

void ju_events_init(struct ju_events *ev, struct bvh *h, long long after)
{
    ev->h = h;
    ev->next = after;
    ev->queue = cJSON_CreateArray();
    ev->log = cJSON_CreateArray();
}

void ju_events_free(struct ju_events *ev)
{
    cJSON_Delete(ev->queue);
    cJSON_Delete(ev->log);
    ev->queue = ev->log = NULL;
}

int ju_events_poll(struct ju_events *ev, double wait_s)
{
    char path[128];
    if (wait_s > 0)
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld&wait=%.3f", ev->next, wait_s);
    else
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld", ev->next);
    struct bvh_resp r;
    int rc = bvh_request(ev->h, "GET", path, NULL, 0, NULL, NULL, &r);
    assert_int_equal(rc, 0);
    if (r.status != 200)
        fprintf(stderr, "GET %s -> %ld: %s\n", path, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 200);
    const cJSON *events = cJSON_GetObjectItemCaseSensitive(r.json, "events");
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(r.json, "next");
    assert_true(cJSON_IsArray(events));
    assert_true(cJSON_IsNumber(next));
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, events) {
        check_shape(e);
        long long seq = (long long)bvh_num(e, "seq");
        ju_check(seq > ev->next, "event seq %lld not after %lld", seq, ev->next);
        ev->next = seq;
        if (getenv("BV_E2E_VERBOSE")) {
            char *d = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(e, "data"));
            fprintf(stderr, "event %lld %s %s\n", seq, bvh_str(e, "event"), d ? d : "");
            free(d);
        }
        cJSON_AddItemToArray(ev->queue, cJSON_Duplicate(e, 1));
        cJSON_AddItemToArray(ev->log, cJSON_Duplicate(e, 1));
        n++;
    }
    ju_check_int("events 'next'", ev->next, (long long)next->valuedouble);
    bvh_resp_free(&r);
    return n;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool matches(const cJSON *e, const char *name, const char *key, const char *val)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "event");
    if (name && !(cJSON_IsString(n) && strcmp(n->valuestring, name) == 0))
        return false;
    if (!key)
        return true;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "data"),
                                                      key);
    return cJSON_IsString(v) && strcmp(v->valuestring, val) == 0;
}

static cJSON *take_match(struct ju_events *ev, const char *name, const char *key,
                         const char *val)
{
    int i = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, ev->queue) {
        if (matches(e, name, key, val))
            return cJSON_DetachItemFromArray(ev->queue, i);
        i++;
    }
    return NULL;
}

cJSON *ju_event_wait(struct ju_events *ev, const char *name, const char *key,
                     const char *val, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    for (;;) {
        cJSON *e = take_match(ev, name, key, val);
        if (e)
            return e;
        double left = deadline - now_s();
        if (left <= 0)
            break;
        ju_events_poll(ev, left < POLL_SLICE_S ? left : POLL_SLICE_S);
    }
    char *q = ju_events_text(ev->queue);
    fail_msg("no event %s%s%s%s%s within %.0f s; still queued: %s", name ? name : "(any)",
             key ? " with " : "", key ? key : "", key ? "=" : "", key ? val : "", timeout_s,
             q);
    free(q);
    return NULL;
}

cJSON *ju_events_drain(struct ju_events *ev)
{
    ju_events_poll(ev, 0);
    cJSON *all = ev->queue;
    ev->queue = cJSON_CreateArray();
    return all;
}

char *ju_events_text(const cJSON *events)
{
    size_t cap = 256, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = '\0';
    const cJSON *e;
    cJSON_ArrayForEach(e, events) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "event");
        char *d = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(e, "data"));
        size_t need = len + strlen(d ? d : "") + 128;
        if (need > cap) {
            cap = need * 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%s %s", len ? "; " : "",
                                cJSON_IsString(n) ? n->valuestring : "?", d ? d : "");
        free(d);
    }
    if (!len)
        snprintf(out, cap, "(none)");
    return out;
}

/* --- job traces --- */

static const char *trace_word(const cJSON *e, const char *job)
{
    const char *name = cJSON_GetObjectItemCaseSensitive(e, "event")->valuestring;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
    static const struct { const char *event, *key, *word; } words[] = {
        { "BLOCK_JOB_COMPLETED", "device", "COMPLETED" },
        { "BLOCK_JOB_CANCELLED", "device", "CANCELLED" },
        { "BLOCK_JOB_ERROR", "device", "ERROR" },
        { "BLOCK_JOB_PENDING", "id", "PENDING" },
    };
    if (strcmp(name, "JOB_STATUS_CHANGE") == 0) {
        if (!matches(e, NULL, "id", job))
            return NULL;
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(data, "status");
        return cJSON_IsString(st) ? st->valuestring : "?";
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcmp(name, words[i].event) == 0 && matches(e, NULL, words[i].key, job))
            return words[i].word;
    return NULL;
}

char *ju_job_trace(const struct ju_events *ev, const char *job, long long after)
{
    size_t cap = 1024, len = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    const cJSON *e;
    cJSON_ArrayForEach(e, ev->log) {
        if ((long long)bvh_num(e, "seq") <= after)
            continue;
        const char *w = trace_word(e, job);
        if (!w)
            continue;
        if (len + strlen(w) + 2 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? " " : "", w);
    }
    return out;
}

char *ju_trace_normalize(const char *trace)
{
    char *s = strdup(trace);
    assert_non_null(s);
    static const char pair[] = " paused running";
    char *p;
    while ((p = strstr(s, pair)) != NULL) {
        char *after = p + strlen(pair);
        if (*after && *after != ' ')
            break;  /* "paused runningX" cannot happen: statuses are words */
        memmove(p, after, strlen(after) + 1);
    }
    return s;
}

void ju_check_trace(const struct ju_events *ev, const char *job, long long after,
                    const char *const *alternatives)
{
    char *raw = ju_job_trace(ev, job, after);
    char *norm = ju_trace_normalize(raw);
    bool ok = false;
    if (getenv("BV_E2E_VERBOSE"))
        fprintf(stderr, "job '%s' events: %s\n", job, raw);
    for (int i = 0; alternatives[i] && !ok; i++)
        ok = strcmp(norm, alternatives[i]) == 0;
    if (!ok) {
        fprintf(stderr, "CHECK FAILED: job '%s' events: expected", job);
        for (int i = 0; alternatives[i]; i++)
            fprintf(stderr, "%s '%s'", i ? " or" : "", alternatives[i]);
        fprintf(stderr, " (extra 'paused running' pairs allowed), got '%s'\n", raw);
        failures++;
    }
    free(norm);
    free(raw);
}
