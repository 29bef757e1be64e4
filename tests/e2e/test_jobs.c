/*
 * test_jobs: the job engine's contract beyond the seed (issue 10), through
 * the REST API only.
 *
 *  - every row of qemu-semantics §4.5's bitmap-mode table: sync bitmap
 *    (incremental with an explicit bitmap_mode), incremental and full, each
 *    bitmap_mode, each outcome: success, a blkdebug read failure (§7.4's
 *    state machine: the first data read after P1's flush fails once) and a
 *    cancel after the first cluster (held slow by `speed`, one 64 KiB write
 *    mid-job); bitmap0 holds P1 (458752) and the counts are QEMU 7.2's;
 *  - point in time (§4.4): a full backup held slow by `speed` while 200
 *    random writes land through /io equals the drive as it was at job start
 *    (POST /images/compare and `qemu-img compare`), and the drive then holds
 *    the new data (GET …/data);
 *  - kill -9 mid-backup, restart on the same data directory: the job is
 *    failed ("interrupted by restart"), its target is not a backup, the
 *    persistent bitmap is merged back or `inconsistent` (never silently
 *    wrong), the catalog is sound and the next backup is correct;
 *  - the verbs and their 409 texts (§5.2, §10), auto_finalize=false
 *    (BLOCK_JOB_PENDING, then finalize), auto_dismiss=false (concluded, then
 *    dismiss), a job id reused once `null`, GET /jobs?history=true.
 *
 * Checks are soft (jobs_util.h): a run lists every mismatch as "CHECK
 * FAILED: what: expected X, got Y" and each test fails at its end.
 * Needs qemu-img (exit 77 without it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "jobs_util.h"

#define MiB         (1024LL * 1024)
#define SIZE_64M    (64 * MiB)
#define P1_COUNT    458752LL
#define WAIT_S      30.0
#define IOERR       "Input/output error"
#define SLOW        16384          /* bytes/s: the first cluster, then ~4 s per cluster */

#define SEED_PATTERN "[\"write -P 0x41 0 512\",\"write -P 0xd5 1M 32k\",\"write -P 0xdc 32M 124k\"]"
#define P1 "[\"write -P 0xab 0 512\",\"write -P 0xfe 16M 256k\",\"write -P 0x64 32736k 64k\",\"flush\"]"
#define BLKDEBUG                                                                        \
    "{\"set_state\":[{\"event\":\"flush_to_disk\",\"state\":1,\"new_state\":2}],"     \
    "\"inject_error\":[{\"event\":\"read_aio\",\"errno\":5,\"state\":2,"              \
    "\"immediately\":false,\"once\":true}]}"

static struct bvh H;

/* ---- small calls ---- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A call whose status is checked softly; returns the JSON (caller frees) or NULL. */
static cJSON *call(long want, const char *method, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static cJSON *call(long want, const char *method, const char *path, const char *fmt, ...)
{
    char *body = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&body, fmt, ap) < 0)
            body = NULL;
        va_end(ap);
    }
    struct bvh_resp r;
    int rc = bvh_request(&H, method, path, body, body ? strlen(body) : 0, NULL, NULL, &r);
    ju_check(rc == 0 && r.status == want, "%s %s %s: expected HTTP %ld, got %ld: %s", method,
             path, body ? body : "", want, rc == 0 ? r.status : -1L, r.body ? r.body : "");
    free(body);
    cJSON *j = (rc == 0 && r.status == want) ? r.json : NULL;
    if (j)
        r.json = NULL;
    bvh_resp_free(&r);
    return j;
}

/* The contract's error: status, class and (when desc is not NULL) exact text. */
static void expect_error(const char *what, long status, const char *cls, const char *desc,
                         const char *method, const char *path, const char *body)
{
    struct bvh_resp r;
    int rc = bvh_request(&H, method, path, body, body ? strlen(body) : 0, NULL, NULL, &r);
    ju_check(rc == 0 && r.status == status, "%s: expected HTTP %ld, got %ld: %s", what, status,
             rc == 0 ? r.status : -1L, r.body ? r.body : "");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r.json, "error");
    char w[300];
    snprintf(w, sizeof(w), "%s: error", what);
    ju_check_str_member(w, e, "class", cls);
    if (desc)
        ju_check_str_member(w, e, "desc", desc);
    bvh_resp_free(&r);
}

static void io(const char *drive, const char *cmds)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON *j = call(200, "POST", path, "{\"commands\":%s}", cmds);
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "results")) {
        const cJSON *ok = cJSON_GetObjectItem(it, "ok");
        const cJSON *err = cJSON_GetObjectItem(it, "error");
        ju_check(cJSON_IsTrue(ok), "io on %s: '%s' failed: %s", drive,
                 cJSON_GetStringValue(cJSON_GetObjectItem(it, "command")),
                 cJSON_IsString(err) ? err->valuestring : "?");
    }
    cJSON_Delete(j);
}

/* GET a bitmap; returns the object (caller frees) or NULL. */
static cJSON *bitmap(const char *drive, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps/%s", drive, name);
    return call(200, "GET", path, NULL);
}

static long long bitmap_count(const char *drive, const char *name)
{
    cJSON *b = bitmap(drive, name);
    const cJSON *c = cJSON_GetObjectItem(b, "count");
    long long n = cJSON_IsNumber(c) ? (long long)c->valuedouble : -1;
    cJSON_Delete(b);
    return n;
}

static cJSON *job_get(const char *id)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    struct bvh_resp r;
    if (bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r) != 0 || r.status != 200) {
        bvh_resp_free(&r);
        return NULL;
    }
    cJSON *j = r.json;
    r.json = NULL;
    bvh_resp_free(&r);
    return j;
}

static const char *str_or(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : dflt;
}

static long long num_or(const cJSON *o, const char *key, long long dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(it) ? (long long)it->valuedouble : dflt;
}

/* POST /api/v1/jobs; true when it answered 201 (soft check otherwise). */
static bool start_job(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool start_job(const char *fmt, ...)
{
    char *body = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&body, fmt, ap) < 0)
        body = NULL;
    va_end(ap);
    cJSON *j = call(201, "POST", "/api/v1/jobs", "%s", body);
    free(body);
    bool ok = j != NULL;
    cJSON_Delete(j);
    return ok;
}

/* Polls the job until its offset reaches min (progress has no event). */
static long long wait_offset(const char *id, long long min, double timeout_s)
{
    double dl = now_s() + timeout_s;
    long long off = -1;
    while (now_s() < dl) {
        cJSON *j = job_get(id);
        off = num_or(j, "offset", -1);
        const char *st = str_or(j, "status", "?");
        bool over = !j || strcmp(st, "concluded") == 0 || strcmp(st, "null") == 0 ||
                    strcmp(st, "aborting") == 0;
        cJSON_Delete(j);
        if (off >= min || over)
            return off;
        usleep(10 * 1000);
    }
    return off;
}

/* The job's final BLOCK_JOB_COMPLETED/CANCELLED from the log after seq
 * `after` (caller frees), or NULL. */
static cJSON *final_event(const struct ju_events *ev, const char *job, long long after)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, ev->log) {
        const char *name = str_or(e, "event", "");
        if (num_or(e, "seq", 0) <= after)
            continue;
        if ((strcmp(name, "BLOCK_JOB_COMPLETED") == 0 || strcmp(name, "BLOCK_JOB_CANCELLED") == 0) &&
            strcmp(str_or(cJSON_GetObjectItem(e, "data"), "device", ""), job) == 0)
            return cJSON_Duplicate(e, true);
    }
    return NULL;
}

/* Waits for JOB_STATUS_CHANGE {id: job, status: until} (hard-fails after WAIT_S). */
static void wait_status(struct ju_events *ev, const char *job, const char *until)
{
    for (;;) {
        cJSON *e = ju_event_wait(ev, "JOB_STATUS_CHANGE", "id", job, WAIT_S);
        bool hit = strcmp(str_or(cJSON_GetObjectItem(e, "data"), "status", ""), until) == 0;
        cJSON_Delete(e);
        if (hit)
            return;
    }
}

/* Waits for the job's `null` and returns its final event (caller frees). */
static cJSON *wait_end(struct ju_events *ev, const char *job, long long after)
{
    wait_status(ev, job, "null");
    cJSON *f = final_event(ev, job, after);
    ju_check(f != NULL, "job %s: reached null without BLOCK_JOB_COMPLETED/CANCELLED", job);
    return f;
}

static long long head_seq(void)
{
    cJSON *j = call(200, "GET", "/api/v1/events?after=latest", NULL);
    long long n = num_or(j, "next", 0);
    cJSON_Delete(j);
    return n;
}

/* A fresh 64 MiB qcow2 drive with the seed pattern (no flush: a blkdebug
 * drive stays in state 1), bitmap0, then P1 (its flush moves blkdebug to
 * state 2).  bitmap0 = P1 = 458752. */
static void make_p1_drive(const char *id, bool blkdebug)
{
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"%s\",\"format\":\"qcow2\",\"size\":\"64M\"%s%s}", id,
                      blkdebug ? ",\"blkdebug\":" : "", blkdebug ? BLKDEBUG : ""));
    io(id, SEED_PATTERN);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps", id);
    cJSON_Delete(call(201, "POST", path, "{\"name\":\"bitmap0\"}"));
    io(id, P1);
    ju_check_int("bitmap0 after P1", P1_COUNT, bitmap_count(id, "bitmap0"));
}

static int setup(void **state)
{
    (void)state;
    ju_reset();
    if (!bvh_have("qemu-img")) {
        fprintf(stderr, "test_jobs: qemu-img not found; skipping\n");
        exit(77);
    }
    return bvh_start(&H, NULL);
}

static int teardown(void **state)
{
    (void)state;
    bvh_stop(&H);
    return 0;
}

/* ---- (a) §4.5: every row of the bitmap-mode table ---- */

enum outcome { OK, FAIL, CANCEL };
static const char *const outcome_names[] = { "ok", "blkdebug failure", "cancel" };

struct row {
    const char *sync;              /* the REST sync value */
    const char *mode;              /* bitmap_mode, NULL: omitted (incremental) */
    long long len;                 /* the job's len */
    long long count[3];            /* bitmap0 after ok / fail / cancel; -1: len - offset */
};

static const struct row rows[] = {
    { "bitmap", "on-success", P1_COUNT, { 0, 458752, 524288 } },
    { "bitmap", "always", P1_COUNT, { 0, 65536, 458752 } },
    { "bitmap", "never", P1_COUNT, { 458752, 458752, 524288 } },
    { "incremental", NULL, P1_COUNT, { 0, 458752, 524288 } },
    { "full", "on-success", SIZE_64M, { 0, 458752, 524288 } },
    { "full", "always", SIZE_64M, { 0, -1, 67043328 } },
};

static void run_row(const struct row *rw, enum outcome oc, int n)
{
    char id[32], what[160], target[64], mode[64] = "", path[128];
    snprintf(id, sizeof(id), "r%d", n);
    snprintf(target, sizeof(target), "%s.bak.qcow2", id);
    snprintf(what, sizeof(what), "%s/%s %s (drive %s)", rw->sync, rw->mode ? rw->mode : "-",
             outcome_names[oc], id);
    if (rw->mode)
        snprintf(mode, sizeof(mode), ",\"bitmap_mode\":\"%s\"", rw->mode);
    make_p1_drive(id, oc == FAIL);
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    bool started = start_job("{\"type\":\"backup\",\"device\":\"%s\",\"sync\":\"%s\","
                             "\"bitmap\":\"bitmap0\"%s,\"target\":\"%s\",\"format\":\"qcow2\","
                             "\"speed\":%d}",
                             id, rw->sync, mode, target, oc == CANCEL ? SLOW : 0);
    if (!started) {
        ju_check(false, "%s: the job did not start", what);
        ju_events_free(&ev);
        return;
    }
    cJSON *b = NULL;
    if (oc == CANCEL) {
        /* held slow, so still running: the bitmap is frozen */
        b = bitmap(id, "bitmap0");
        char w[200];
        snprintf(w, sizeof(w), "%s: bitmap0 during the job", what);
        ju_check_str_member(w, b, "status", "frozen");
        ju_check(cJSON_IsTrue(cJSON_GetObjectItem(b, "busy")), "%s: busy expected true", w);
        cJSON_Delete(b);
        long long off = wait_offset(id, 65536, 15);
        ju_check(off == 65536, "%s: offset when cancelling: expected 65536 (one cluster), got %lld",
                 what, off);
        io(id, "[\"write -P 0x11 48M 64k\"]");
        snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", id);
        cJSON_Delete(call(200, "POST", path, NULL));
    }
    cJSON *fin = wait_end(&ev, id, after);
    const cJSON *d = cJSON_GetObjectItem(fin, "data");
    char w[320];
    snprintf(w, sizeof(w), "%s: final event", what);
    ju_check_str_member(w, fin, "event", oc == CANCEL ? "BLOCK_JOB_CANCELLED" : "BLOCK_JOB_COMPLETED");
    ju_check_str_member(w, d, "type", "backup");
    ju_check_num_member(w, d, "len", rw->len);
    ju_check_num_member(w, d, "speed", oc == CANCEL ? SLOW : 0);
    ju_check_str_member(w, d, "error", oc == FAIL ? IOERR : NULL);
    long long len = num_or(d, "len", -1), off = num_or(d, "offset", -1);
    if (oc == OK)
        ju_check_num_member(w, d, "offset", rw->len);
    else
        ju_check(off >= 0 && off < len, "%s: offset expected below len %lld, got %lld", w, len, off);
    static const char *const t_ok[] = { "created running waiting pending COMPLETED concluded null", NULL };
    static const char *const t_fail[] = { "created running ERROR aborting COMPLETED concluded null", NULL };
    static const char *const t_cancel[] = { "created running aborting CANCELLED concluded null", NULL };
    ju_check_trace(&ev, id, after, oc == OK ? t_ok : oc == FAIL ? t_fail : t_cancel);
    if (oc == FAIL) {
        const cJSON *e;
        bool seen = false;
        cJSON_ArrayForEach(e, ev.log) {
            if (strcmp(str_or(e, "event", ""), "BLOCK_JOB_ERROR") != 0)
                continue;
            seen = true;
            snprintf(w, sizeof(w), "%s: BLOCK_JOB_ERROR", what);
            char want[200];
            snprintf(want, sizeof(want),
                     "{\"device\":\"%s\",\"operation\":\"read\",\"action\":\"report\"}", id);
            ju_check_json(w, want, cJSON_GetObjectItem(e, "data"));
        }
        ju_check(seen, "%s: no BLOCK_JOB_ERROR", what);
    }
    long long want = rw->count[oc] >= 0 ? rw->count[oc] : len - off;
    b = bitmap(id, "bitmap0");
    snprintf(w, sizeof(w), "%s: bitmap0 after the job (job offset %lld of %lld)", what, off, len);
    ju_check_num_member(w, b, "count", want);
    ju_check_str_member(w, b, "status", "active");
    ju_check(cJSON_IsFalse(cJSON_GetObjectItem(b, "busy")), "%s: busy expected false", w);
    if (rw->count[oc] < 0)
        ju_check(want > 0 && want < SIZE_64M, "%s: not-copied part expected within (0, 64M), got %lld",
                 w, want);
    cJSON_Delete(b);
    cJSON_Delete(fin);
    snprintf(path, sizeof(path), "/api/v1/drives/%s?delete_file=true", id);
    cJSON_Delete(call(204, "DELETE", path, NULL));
    ju_events_free(&ev);
}

static void test_bitmap_mode_table(void **state)
{
    (void)state;
    int n = 0;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        for (int oc = OK; oc <= CANCEL; oc++)
            run_row(&rows[i], (enum outcome)oc, n++);
    /* the rows QEMU refuses (§10), and a refused job leaves no file */
    make_p1_drive("rx", false);
    static const struct { const char *sync, *mode, *desc; } bad[] = {
        { "incremental", "always", "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'" },
        { "incremental", "never", "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'" },
        { "full", "never", "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'full'" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char body[300], what[96];
        snprintf(body, sizeof(body), "{\"type\":\"backup\",\"device\":\"rx\",\"sync\":\"%s\","
                 "\"bitmap\":\"bitmap0\",\"bitmap_mode\":\"%s\",\"target\":\"rx.bad.qcow2\"}",
                 bad[i].sync, bad[i].mode);
        snprintf(what, sizeof(what), "%s + %s refused", bad[i].sync, bad[i].mode);
        expect_error(what, 400, "GenericError", bad[i].desc, "POST", "/api/v1/jobs", body);
        char f[400];
        snprintf(f, sizeof(f), "%s/rx.bad.qcow2", H.images);
        ju_check(access(f, F_OK) != 0, "%s: rx.bad.qcow2 expected absent, it exists", what);
    }
    ju_check_int("rx: bitmap0 after refused jobs", P1_COUNT, bitmap_count("rx", "bitmap0"));
    cJSON_Delete(call(204, "DELETE", "/api/v1/drives/rx?delete_file=true", NULL));
    ju_end();
}

/* ---- (b) §4.4: point in time ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static bool images_identical(const char *what, const char *a, const char *b)
{
    cJSON *j = call(200, "POST", "/api/v1/images/compare",
                    "{\"a\":{\"file\":\"%s\"},\"b\":{\"file\":\"%s\"}}", a, b);
    const cJSON *id = cJSON_GetObjectItem(j, "identical");
    bool same = cJSON_IsTrue(id);
    char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
    ju_check(same, "%s: POST /images/compare %s %s: expected identical, got %s", what, a, b,
             txt ? txt : "(no answer)");
    free(txt);
    cJSON_Delete(j);
    int rc = bvh_sh("cd '%s' && qemu-img compare -U '%s' '%s' >/dev/null 2>&1", H.images, a, b);
    ju_check(rc == 0, "%s: qemu-img compare %s %s: expected identical (0), exit status %d", what,
             a, b, rc);
    return same && rc == 0;
}

static void test_point_in_time(void **state)
{
    (void)state;
    /* a 64 MiB drive of random data; the raw file it came from is the
     * reference "as at job start" (no write reaches the drive before) */
    size_t size = (size_t)SIZE_64M;
    unsigned char *want = malloc(size);
    assert_non_null(want);
    for (size_t i = 0; i < size; i += 8) {
        uint64_t v = rng();
        memcpy(want + i, &v, 8);
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/pit.raw", H.images);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(want, 1, size, f), size);
    fclose(f);
    assert_int_equal(bvh_sh("cd '%s' && qemu-img convert -f raw -O qcow2 pit.raw pit.qcow2",
                            H.images), 0);
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"pit\",\"format\":\"qcow2\",\"file\":\"pit.qcow2\",\"existing\":true}"));
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    /* 16 MiB/s: about 4 s for the drive; the writes take well under that */
    bool started = start_job("{\"type\":\"backup\",\"device\":\"pit\",\"sync\":\"full\","
                             "\"target\":\"pit.bak.qcow2\",\"format\":\"qcow2\",\"speed\":%lld}",
                             16 * MiB);
    if (!started) {
        ju_events_free(&ev);
        free(want);
        ju_end();
        return;
    }
    /* 200 random writes in 20 calls, applied to the expected image too */
    for (int call_no = 0; call_no < 20; call_no++) {
        char cmds[4096];
        size_t len = 0;
        len += (size_t)snprintf(cmds + len, sizeof(cmds) - len, "[");
        for (int k = 0; k < 10; k++) {
            unsigned bytes = (unsigned)(1 + rng() % 256) * 512;              /* 512 B..128 KiB */
            uint64_t off = (rng() % ((uint64_t)size - bytes + 1)) & ~(uint64_t)511;
            unsigned pat = (unsigned)(rng() & 0xff);
            memset(want + off, (int)pat, bytes);
            len += (size_t)snprintf(cmds + len, sizeof(cmds) - len, "%s\"write -P 0x%02x %llu %u\"",
                                    k ? "," : "", pat, (unsigned long long)off, bytes);
        }
        snprintf(cmds + len, sizeof(cmds) - len, "]");
        io("pit", cmds);
    }
    cJSON *j = job_get("pit");
    const char *st = str_or(j, "status", "(gone)");
    ju_check(strcmp(st, "running") == 0,
             "point in time: the writes should land while the job runs; job status %s, offset %lld of %lld",
             st, num_or(j, "offset", -1), num_or(j, "len", -1));
    cJSON_Delete(j);
    cJSON *fin = wait_end(&ev, "pit", after);
    ju_check_str_member("point in time: final event", fin, "event", "BLOCK_JOB_COMPLETED");
    ju_check_str_member("point in time: final event", cJSON_GetObjectItem(fin, "data"), "error", NULL);
    ju_check_num_member("point in time: final event", cJSON_GetObjectItem(fin, "data"), "offset", SIZE_64M);
    cJSON_Delete(fin);
    images_identical("point in time: the backup is the drive at job start", "pit.bak.qcow2", "pit.raw");
    /* the drive holds the new data (read in 1 MiB pieces: the harness
     * grows its buffer per chunk, which costs the square of the size) */
    bool same = true;
    for (size_t base = 0; base < size && same; base += (size_t)MiB) {
        struct bvh_resp r;
        char q[128];
        snprintf(q, sizeof(q), "/api/v1/drives/pit/data?offset=%zu&length=%lld", base, MiB);
        int rc = bvh_request(&H, "GET", q, NULL, 0, NULL, NULL, &r);
        same = rc == 0 && r.status == 200 && r.len == (size_t)MiB;
        ju_check(same, "point in time: GET %s: expected 200 with %lld bytes, got %ld with %zu", q,
                 MiB, rc == 0 ? r.status : -1L, r.len);
        for (size_t i = 0; same && i < (size_t)MiB; i++)
            if ((unsigned char)r.body[i] != want[base + i]) {
                ju_check(false, "point in time: the drive after the job: first difference from "
                         "the writes at byte %zu (expected 0x%02x, got 0x%02x)", base + i,
                         want[base + i], (unsigned char)r.body[i]);
                same = false;
            }
        bvh_resp_free(&r);
    }
    free(want);
    cJSON_Delete(call(204, "DELETE", "/api/v1/drives/pit?delete_file=true", NULL));
    ju_events_free(&ev);
    ju_end();
}

/* ---- (c) kill -9 mid-backup, restart ---- */

static char *sql(const char *query)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sqlite3 -batch '%s/catalog.db' \"%s\" 2>&1", H.dir, query);
    FILE *p = popen(cmd, "r");
    if (!p)
        return strdup("(popen failed)");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    pclose(p);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return strdup(buf);
}

static void test_kill9_mid_backup(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"kd\",\"format\":\"qcow2\",\"size\":\"64M\"}"));
    io("kd", "[\"write -P 0x5a 0 8M\",\"write -P 0x3c 40M 4M\",\"flush\"]");
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    bool ok = start_job("{\"type\":\"backup\",\"device\":\"kd\",\"sync\":\"full\","
                        "\"target\":\"kd.full.qcow2\",\"format\":\"qcow2\"}");
    if (ok)
        cJSON_Delete(wait_end(&ev, "kd", after));
    cJSON_Delete(call(201, "POST", "/api/v1/drives/kd/bitmaps", "{\"name\":\"pb\",\"persistent\":true}"));
    io("kd", P1);
    ju_check_int("kill -9: pb after P1", P1_COUNT, bitmap_count("kd", "pb"));
    ok = ok && start_job("{\"type\":\"backup\",\"device\":\"kd\",\"job_id\":\"kj\","
                         "\"sync\":\"incremental\",\"bitmap\":\"pb\",\"target\":\"kd.inc0.qcow2\","
                         "\"format\":\"qcow2\",\"speed\":%d}", SLOW);
    ju_events_free(&ev);
    if (!ok) {
        ju_end();
        return;
    }
    long long off = wait_offset("kj", 65536, 15);
    ju_check(off >= 65536 && off < P1_COUNT, "kill -9: job kj mid-way expected, offset %lld", off);
    H.keep_dir = true;
    bvh_kill9(&H);
    assert_int_equal(bvh_restart(&H), 0);
    H.keep_dir = false;

    /* the job: failed, interrupted by restart, not live */
    cJSON *j = job_get("kj");
    ju_check(j != NULL, "kill -9: GET /api/v1/jobs/kj after restart: expected 200 with the job");
    ju_check_str_member("kill -9: job kj after restart", j, "error", "interrupted by restart");
    const char *st = str_or(j, "status", "(absent)");
    ju_check(strcmp(st, "null") == 0 || strcmp(st, "concluded") == 0,
             "kill -9: job kj status after restart: expected null (or concluded), got %s", st);
    cJSON_Delete(j);
    j = call(200, "GET", "/api/v1/jobs?history=true", NULL);
    bool in_history = false;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "jobs"))
        if (strcmp(str_or(it, "id", ""), "kj") == 0) {
            in_history = true;
            ju_check_str_member("kill -9: kj in history", it, "error", "interrupted by restart");
        }
    ju_check(in_history, "kill -9: kj expected in GET /jobs?history=true");
    cJSON_Delete(j);
    j = call(200, "GET", "/api/v1/jobs", NULL);
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "jobs"))
        ju_check(strcmp(str_or(it, "status", ""), "running") != 0,
                 "kill -9: no job expected running after restart, %s is", str_or(it, "id", "?"));
    cJSON_Delete(j);

    /* the catalog: sound, and the partial target is no backup */
    char *s = sql("PRAGMA integrity_check");
    ju_check_str("kill -9: catalog integrity_check", "ok", s);
    free(s);
    s = sql("SELECT count(*) FROM backups WHERE file LIKE '%kd.inc0%' AND status = 'complete'");
    ju_check_str("kill -9: complete backups recorded for kd.inc0.qcow2", "0", s);
    free(s);
    s = sql("SELECT count(*) FROM jobs WHERE status NOT IN ('null', 'concluded')");
    ju_check_str("kill -9: live jobs in the catalog after restart", "0", s);
    free(s);

    /* the bitmap: merged back (exactly P1, no write happened during the
     * job) or inconsistent; never anything else */
    cJSON *b = bitmap("kd", "pb");
    const char *bst = str_or(b, "status", "(absent)");
    bool merged = strcmp(bst, "active") == 0;
    fprintf(stderr, "test_jobs: after kill -9 the persistent bitmap came back %s\n", bst);
    ju_check(merged || strcmp(bst, "inconsistent") == 0,
             "kill -9: pb status expected active (merged back) or inconsistent, got %s", bst);
    ju_check(cJSON_IsFalse(cJSON_GetObjectItem(b, "busy")), "kill -9: pb busy expected false");
    if (merged) {
        ju_check_num_member("kill -9: pb merged back", b, "count", P1_COUNT);
        cJSON *x = call(200, "GET", "/api/v1/drives/kd/bitmaps/pb/extents", NULL);
        ju_check_json("kill -9: pb extents", "[{\"offset\":0,\"length\":65536},"
                      "{\"offset\":16777216,\"length\":262144},{\"offset\":33488896,\"length\":131072}]",
                      cJSON_GetObjectItem(x, "extents"));
        cJSON_Delete(x);
    }
    cJSON_Delete(b);
    j = call(200, "GET", "/api/v1/drives/kd", NULL);
    ju_check(cJSON_IsFalse(cJSON_GetObjectItem(j, "busy")), "kill -9: drive kd busy expected false");
    cJSON_Delete(j);

    /* the next backups are right: the id kj is free again */
    after = head_seq();
    ju_events_init(&ev, &H, after);
    if (merged) {
        cJSON_Delete(call(201, "POST", "/api/v1/images",
                          "{\"file\":\"kd.inc1.qcow2\",\"format\":\"qcow2\",\"backing\":\"kd.full.qcow2\","
                          "\"backing_format\":\"qcow2\"}"));
        if (start_job("{\"type\":\"backup\",\"device\":\"kd\",\"job_id\":\"kj\",\"sync\":\"incremental\","
                      "\"bitmap\":\"pb\",\"target\":\"kd.inc1.qcow2\",\"format\":\"qcow2\","
                      "\"mode\":\"existing\"}")) {
            cJSON *fin = wait_end(&ev, "kj", after);
            ju_check_num_member("kill -9: next incremental", cJSON_GetObjectItem(fin, "data"), "len", P1_COUNT);
            ju_check_str_member("kill -9: next incremental", cJSON_GetObjectItem(fin, "data"), "error", NULL);
            cJSON_Delete(fin);
            ju_check_int("kill -9: pb after the next incremental", 0, bitmap_count("kd", "pb"));
            images_identical("kill -9: full + next incremental equal the drive", "kd.inc1.qcow2", "kd.qcow2");
        }
    } else {
        cJSON_Delete(call(204, "DELETE", "/api/v1/drives/kd/bitmaps/pb", NULL));
    }
    after = head_seq();
    ju_events_free(&ev);
    ju_events_init(&ev, &H, after);
    if (start_job("{\"type\":\"backup\",\"device\":\"kd\",\"job_id\":\"kj\",\"sync\":\"full\","
                  "\"target\":\"kd.full2.qcow2\",\"format\":\"qcow2\"}")) {
        cJSON_Delete(wait_end(&ev, "kj", after));
        images_identical("kill -9: the next full equals the drive", "kd.full2.qcow2", "kd.qcow2");
    }
    ju_events_free(&ev);
    j = call(200, "POST", "/api/v1/images/check", "{\"file\":\"kd.qcow2\"}");
    ju_check_num_member("kill -9: check of the drive's image", j, "errors", 0);
    cJSON_Delete(j);
    cJSON_Delete(call(204, "DELETE", "/api/v1/drives/kd?delete_file=true", NULL));
    ju_end();
}

/* ---- verbs, auto_finalize, auto_dismiss, ids, history ---- */

static void verb(const char *job, const char *v, long status, const char *desc)
{
    char path[128], what[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/%s", job, v);
    snprintf(what, sizeof(what), "%s %s", v, job);
    if (status == 200)
        cJSON_Delete(call(200, "POST", path, NULL));
    else
        expect_error(what, status, status == 404 ? "DeviceNotFound" : "GenericError", desc,
                     "POST", path, NULL);
}

static void job_status_is(const char *what, const char *job, const char *want)
{
    cJSON *j = job_get(job);
    ju_check(j != NULL, "%s: GET /api/v1/jobs/%s expected 200", what, job);
    ju_check_str_member(what, j, "status", want);
    cJSON_Delete(j);
}

static void test_verbs(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives", "{\"id\":\"vd\",\"format\":\"qcow2\",\"size\":\"64M\"}"));
    cJSON_Delete(call(201, "POST", "/api/v1/drives", "{\"id\":\"vd2\",\"format\":\"qcow2\",\"size\":\"64M\"}"));
    io("vd", "[\"write -P 0x21 0 4M\",\"flush\"]");
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    if (!start_job("{\"type\":\"backup\",\"device\":\"vd\",\"job_id\":\"vj\",\"sync\":\"full\","
                   "\"target\":\"vj.qcow2\",\"speed\":%d}", SLOW)) {
        ju_events_free(&ev);
        ju_end();
        return;
    }
    wait_status(&ev, "vj", "running");
    verb("vj", "finalize", 409, "Job 'vj' in state 'running' cannot accept command verb 'finalize'");
    verb("vj", "dismiss", 409, "Job 'vj' in state 'running' cannot accept command verb 'dismiss'");
    verb("vj", "resume", 409, "Can't resume a job that was not paused");
    expect_error("second job on a busy drive", 409, "GenericError",
                 "Node 'vd' is busy: block device is in use by block job: backup", "POST", "/api/v1/jobs",
                 "{\"type\":\"backup\",\"device\":\"vd\",\"job_id\":\"other\",\"sync\":\"full\",\"target\":\"o.qcow2\"}");
    expect_error("job id in use", 409, "GenericError", "Job ID 'vj' already in use", "POST", "/api/v1/jobs",
                 "{\"type\":\"backup\",\"device\":\"vd2\",\"job_id\":\"vj\",\"sync\":\"full\",\"target\":\"o.qcow2\"}");
    expect_error("malformed job id", 400, "GenericError", "Invalid job ID '1bad'", "POST", "/api/v1/jobs",
                 "{\"type\":\"backup\",\"device\":\"vd2\",\"job_id\":\"1bad\",\"sync\":\"full\",\"target\":\"o.qcow2\"}");
    expect_error("negative speed", 400, "GenericError", "Parameter 'speed' expects a non-negative value",
                 "POST", "/api/v1/jobs",
                 "{\"type\":\"backup\",\"device\":\"vd2\",\"sync\":\"full\",\"target\":\"o.qcow2\",\"speed\":-1}");
    char f[400];
    snprintf(f, sizeof(f), "%s/o.qcow2", H.images);
    ju_check(access(f, F_OK) != 0, "refused jobs: o.qcow2 expected absent, it exists");

    verb("vj", "pause", 200, NULL);
    wait_status(&ev, "vj", "paused");
    cJSON *j = job_get("vj");
    ju_check_str_member("vj paused", j, "status", "paused");
    ju_check(cJSON_IsTrue(cJSON_GetObjectItem(j, "paused")), "vj paused: 'paused' expected true");
    ju_check_num_member("vj paused", j, "speed", SLOW);
    cJSON_Delete(j);
    verb("vj", "pause", 409, "Job is already paused");
    verb("vj", "resume", 200, NULL);
    wait_status(&ev, "vj", "running");
    verb("vj", "pause", 200, NULL);
    wait_status(&ev, "vj", "paused");
    verb("vj", "cancel", 200, NULL);          /* a paused job cancels without force */
    cJSON *fin = wait_end(&ev, "vj", after);
    ju_check_str_member("vj cancelled while paused", fin, "event", "BLOCK_JOB_CANCELLED");
    cJSON_Delete(fin);
    /* a paused job resumes to abort (paused -> aborting is not a transition) */
    static const char *const t_vj[] = { "created running aborting CANCELLED concluded null", NULL };
    ju_check_trace(&ev, "vj", after, t_vj);
    /* gone from the live list: verbs are 404; GET shows the dismissed job */
    verb("vj", "cancel", 404, NULL);
    job_status_is("vj after dismissal", "vj", "null");
    verb("nope", "pause", 404, NULL);
    expect_error("GET unknown job", 404, "DeviceNotFound", NULL, "GET", "/api/v1/jobs/nope", NULL);

    /* auto_finalize=false: pending, BLOCK_JOB_PENDING, finalize */
    after = head_seq();
    ju_events_free(&ev);
    ju_events_init(&ev, &H, after);
    if (start_job("{\"type\":\"backup\",\"device\":\"vd\",\"job_id\":\"af\",\"sync\":\"full\","
                  "\"target\":\"af.qcow2\",\"auto_finalize\":false}")) {
        cJSON *p = ju_event_wait(&ev, "BLOCK_JOB_PENDING", "id", "af", WAIT_S);
        ju_check_json("BLOCK_JOB_PENDING data", "{\"type\":\"backup\",\"id\":\"af\"}",
                      cJSON_GetObjectItem(p, "data"));
        cJSON_Delete(p);
        job_status_is("af before finalize", "af", "pending");
        ju_check(final_event(&ev, "af", after) == NULL, "af: COMPLETED expected only after finalize");
        verb("af", "dismiss", 409, "Job 'af' in state 'pending' cannot accept command verb 'dismiss'");
        verb("af", "pause", 409, "Job 'af' in state 'pending' cannot accept command verb 'pause'");
        verb("af", "finalize", 200, NULL);
        cJSON_Delete(wait_end(&ev, "af", after));
        static const char *const t_af[] = {
            "created running waiting pending PENDING COMPLETED concluded null", NULL };
        ju_check_trace(&ev, "af", after, t_af);
        images_identical("af: the backup equals the drive", "af.qcow2", "vd.qcow2");
    }

    /* auto_dismiss=false: concluded keeps the id, not the drive; dismiss */
    after = head_seq();
    ju_events_free(&ev);
    ju_events_init(&ev, &H, after);
    if (start_job("{\"type\":\"backup\",\"device\":\"vd\",\"job_id\":\"ad\",\"sync\":\"full\","
                  "\"target\":\"ad.qcow2\",\"auto_dismiss\":false}")) {
        wait_status(&ev, "ad", "concluded");
        cJSON *fin2 = final_event(&ev, "ad", after);
        ju_check(fin2 != NULL, "ad: BLOCK_JOB_COMPLETED expected before concluded");
        cJSON_Delete(fin2);
        job_status_is("ad concluded", "ad", "concluded");
        j = call(200, "GET", "/api/v1/jobs", NULL);
        bool live = false;
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "jobs"))
            live |= strcmp(str_or(it, "id", ""), "ad") == 0;
        ju_check(live, "ad concluded: expected in the live list GET /jobs");
        cJSON_Delete(j);
        verb("ad", "cancel", 409, "Job 'ad' in state 'concluded' cannot accept command verb 'cancel'");
        expect_error("id of a concluded job", 409, "GenericError", "Job ID 'ad' already in use", "POST",
                     "/api/v1/jobs",
                     "{\"type\":\"backup\",\"device\":\"vd2\",\"job_id\":\"ad\",\"sync\":\"full\",\"target\":\"o.qcow2\"}");
        /* the drive is free */
        if (start_job("{\"type\":\"backup\",\"device\":\"vd\",\"job_id\":\"ad2\",\"sync\":\"full\","
                      "\"target\":\"ad2.qcow2\"}"))
            cJSON_Delete(wait_end(&ev, "ad2", after));
        verb("ad", "dismiss", 200, NULL);
        wait_status(&ev, "ad", "null");
        static const char *const t_ad[] = { "created running waiting pending COMPLETED concluded null", NULL };
        ju_check_trace(&ev, "ad", after, t_ad);
        /* history: newest first, dismissed jobs included; the live list has none */
        j = call(200, "GET", "/api/v1/jobs", NULL);
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "jobs"))
            ju_check(false, "GET /jobs: no live job expected, got %s (%s)", str_or(it, "id", "?"),
                     str_or(it, "status", "?"));
        cJSON_Delete(j);
        j = call(200, "GET", "/api/v1/jobs?history=true", NULL);
        int pos_ad = -1, pos_ad2 = -1, pos_af = -1, i = 0;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "jobs")) {
            const char *id = str_or(it, "id", "");
            if (strcmp(id, "ad") == 0 && pos_ad < 0)
                pos_ad = i;
            if (strcmp(id, "ad2") == 0 && pos_ad2 < 0)
                pos_ad2 = i;
            if (strcmp(id, "af") == 0 && pos_af < 0)
                pos_af = i;
            ju_check_str_member("history entry", it, "status", "null");
            i++;
        }
        ju_check(pos_ad >= 0 && pos_ad2 >= 0 && pos_af >= 0,
                 "history: af, ad, ad2 expected, positions %d %d %d", pos_af, pos_ad, pos_ad2);
        ju_check(pos_ad2 < pos_ad && pos_ad < pos_af,
                 "history: newest first expected (ad2, ad, af), positions ad2=%d ad=%d af=%d",
                 pos_ad2, pos_ad, pos_af);
        cJSON_Delete(j);
        /* the id is free again once null */
        after = head_seq();
        if (start_job("{\"type\":\"backup\",\"device\":\"vd2\",\"job_id\":\"ad\",\"sync\":\"full\","
                      "\"target\":\"ad3.qcow2\"}"))
            cJSON_Delete(wait_end(&ev, "ad", after));
    }
    /* the default job id is the drive's, reusable once null */
    after = head_seq();
    for (int k = 0; k < 2; k++)
        if (start_job("{\"type\":\"backup\",\"device\":\"vd2\",\"sync\":\"full\",\"target\":\"d%d.qcow2\"}", k))
            cJSON_Delete(wait_end(&ev, "vd2", after));
    ju_events_free(&ev);
    ju_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs),
        cmocka_unit_test(test_bitmap_mode_table),
        cmocka_unit_test(test_point_in_time),
        cmocka_unit_test(test_kill9_mid_backup),
    };
    if (getenv("BV_TEST_FILTER"))                  /* e.g. BV_TEST_FILTER=test_verbs */
        cmocka_set_test_filter(getenv("BV_TEST_FILTER"));
    return cmocka_run_group_tests_name("jobs", tests, setup, teardown);
}
