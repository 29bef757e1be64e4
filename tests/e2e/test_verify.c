/*
 * test_verify: verify jobs (POST /api/v1/jobs type verify, issue 11 items 5
 * and 6), reports, CORRUPTION_DETECTED and healing, through the REST API
 * only.
 *
 *  - checksum: a chain full -> b2 -> b3 verifies clean (a clean report, job
 *    "verify-N" of type verify naming its report); one byte flipped outside
 *    the service in a data cluster of b2 (found with `qemu-img map
 *    --output=json`) -> the verify of b3 reports the 64 KiB block that holds
 *    it by guest offset (first_mismatch_offset = the block's start, sector =
 *    /512, mismatched_bytes 65536, one extent, a sample with the flipped
 *    byte and reference_hex null: b2 is not the newest link), status
 *    corrupt, affected_backups [b2, b3], CORRUPTION_DETECTED with the
 *    report, job and drive; b2 is corrupt, b2 and b3 damaged, the full is
 *    not; restoring b3 is refused (409) unless forced (when the restore
 *    endpoint exists); the chain's bitmap marks exactly that block;
 *  - heal: the next incremental b4 copies the block again: b4 is not
 *    damaged (b3 still is), b4 verifies clean by checksum and by compare
 *    against the drive;
 *  - heal in place: a byte flipped in the newest link (b4) while the drive
 *    has not changed: the report has reference_hex (the drive's bytes) at
 *    the exact flipped byte, and the link is rewritten from the drive: it is
 *    complete and not damaged again, the next checksum verify is clean and
 *    `qemu-img check` finds nothing;
 *  - compare: a drive against its backup (clean: no mismatch, no extents);
 *    a raw copy modified outside the service (3 bytes at 1 MiB + 1000, 5000
 *    bytes at 20 MiB + 512) against the drive: first_mismatch_offset
 *    1049576 (sector 2049), mismatched_bytes 5003, sector extents
 *    [{1049088,512},{20972032,5120}], a sample of both sides, the event;
 *  - "verify": true on a chain backup starts a checksum verify of that link
 *    alone after it (its fields name the one link) that files a clean report;
 *  - refusals (400): no mode, compare without a reference, a side with two
 *    names, checksum with both backup and drive, unknown backup/drive/file,
 *    an unknown field; metrics count verified bytes and durations.
 *
 * Checks are soft (jobs_util.h).  Needs qemu-img (exit 77 without it).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "jobs_util.h"

#define WAIT_S 60.0
#define BLK    65536LL

static struct bvh H;

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

static cJSON *call(long want, const char *method, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static cJSON *call(long want, const char *method, const char *path, const char *fmt, ...)
{
    char *body = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (fmt && vasprintf(&body, fmt, ap) < 0)
        body = NULL;
    va_end(ap);
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

static void io(const char *drive, const char *cmds)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON_Delete(call(200, "POST", path, "{\"commands\":%s}", cmds));
}

static long long head_seq(void)
{
    cJSON *j = call(200, "GET", "/api/v1/events?after=latest", NULL);
    long long v = num_or(j, "next", 0);
    cJSON_Delete(j);
    return v;
}

/* Waits for the job's null; true if it completed without error. */
static bool wait_ok(struct ju_events *ev, const char *job)
{
    for (;;) {
        cJSON *e = ju_event_wait(ev, "JOB_STATUS_CHANGE", "id", job, WAIT_S);
        bool done = strcmp(str_or(cJSON_GetObjectItem(e, "data"), "status", ""), "null") == 0;
        cJSON_Delete(e);
        if (done)
            break;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, ev->log) {
        const cJSON *d = cJSON_GetObjectItem(e, "data");
        if (strcmp(str_or(e, "event", ""), "BLOCK_JOB_COMPLETED") == 0 &&
            strcmp(str_or(d, "device", ""), job) == 0)
            return str_or(d, "error", NULL) == NULL;
    }
    return false;
}

static void chain_backup(const char *drive, const char *kind, bool verify, char *bid, size_t n)
{
    struct ju_events ev;
    ju_events_init(&ev, &H, head_seq());
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", drive);
    cJSON *j = call(201, "POST", path, "{\"kind\":\"%s\",\"verify\":%s}", kind,
                    verify ? "true" : "false");
    snprintf(bid, n, "%s", str_or(cJSON_GetObjectItem(j, "backup"), "id", "?"));
    const char *job = str_or(cJSON_GetObjectItem(j, "job"), "id", drive);
    ju_check(wait_ok(&ev, job), "chain backup %s of %s failed", kind, drive);
    cJSON_Delete(j);
    ju_events_free(&ev);
}

/* Runs a verify (body without the type); returns its report (caller frees)
 * and, if ev_out, the CORRUPTION_DETECTED event data's copy. */
static cJSON *verify(const char *body, cJSON **corruption)
{
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    cJSON *j = call(201, "POST", "/api/v1/jobs", "{\"type\":\"verify\",%s}", body);
    cJSON *rep = NULL;
    if (corruption)
        *corruption = NULL;
    if (j) {
        const char *id = str_or(j, "id", "?");
        ju_check(strncmp(id, "verify-", 7) == 0, "verify job id '%s' is not verify-N", id);
        ju_check_str_member("verify job type", j, "type", "verify");
        ju_check(wait_ok(&ev, id), "verify %s (%s) failed", id, body);
        char path[256];
        snprintf(path, sizeof(path), "/api/v1/reports/%s", str_or(j, "report_id", "?"));
        rep = call(200, "GET", path, NULL);
        ju_check_str_member("report job_id", rep, "job_id", id);
        const cJSON *e;
        cJSON_ArrayForEach(e, ev.log) {
            const cJSON *d = cJSON_GetObjectItem(e, "data");
            if (corruption && !*corruption &&
                strcmp(str_or(e, "event", ""), "CORRUPTION_DETECTED") == 0 &&
                strcmp(str_or(d, "job_id", ""), id) == 0)
                *corruption = cJSON_Duplicate(d, true);
        }
    }
    cJSON_Delete(j);
    ju_events_free(&ev);
    return rep;
}

static void expect_clean(const char *what, const cJSON *rep, const char *kind)
{
    static const char *const keys[] = {
        "id", "job_id", "drive", "kind", "status", "test", "reference", "first_mismatch_sector",
        "first_mismatch_offset", "mismatched_bytes", "extents", "extents_total", "samples",
        "affected_backups", "created_at", NULL };
    ju_check_keys(what, rep, keys, NULL);
    ju_check_str_member(what, rep, "kind", kind);
    ju_check_str_member(what, rep, "status", "clean");
    ju_check(cJSON_IsNull(cJSON_GetObjectItem(rep, "first_mismatch_offset")),
             "%s: first_mismatch_offset should be null", what);
    ju_check_num_member(what, rep, "mismatched_bytes", 0);
    ju_check_num_member(what, rep, "extents_total", 0);
    ju_check_json(what, "[]", cJSON_GetObjectItem(rep, "extents"));
    ju_check_json(what, "[]", cJSON_GetObjectItem(rep, "affected_backups"));
}

static void backup_state(const char *bid, const char *status, bool damaged)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    cJSON *j = call(200, "GET", path, NULL);
    char what[64];
    snprintf(what, sizeof(what), "backup %s status", bid);
    ju_check_str_member(what, j, "status", status);
    ju_check(cJSON_IsBool(cJSON_GetObjectItem(j, "damaged")) &&
             cJSON_IsTrue(cJSON_GetObjectItem(j, "damaged")) == damaged,
             "backup %s: expected damaged %s", bid, damaged ? "true" : "false");
    cJSON_Delete(j);
}

static void link_file(const char *bid, char *out, size_t n)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    cJSON *j = call(200, "GET", path, NULL);
    snprintf(out, n, "%s", str_or(j, "file", "?"));
    cJSON_Delete(j);
}

/* Flip the byte at guest offset `at` of the first data extent the link
 * itself holds (depth 0) — at = its start + skew (skew < its length).
 * Returns the guest offset flipped, or -1. */
static long long flip_in_link(const char *file, long long skew)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cd '%s' && qemu-img map -U --output=json '%s'", H.images, file);
    FILE *p = popen(cmd, "r");
    char *text = malloc(1 << 20);
    size_t n = p && text ? fread(text, 1, (1 << 20) - 1, p) : 0;
    if (p)
        pclose(p);
    if (!text)
        return -1;
    text[n] = '\0';
    cJSON *map = cJSON_Parse(text);
    free(text);
    long long host = -1, guest = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (host < 0 && cJSON_IsTrue(cJSON_GetObjectItem(e, "data")) &&
            num_or(e, "depth", -1) == 0 && num_or(e, "length", 0) > skew) {
            host = num_or(e, "offset", -1) + skew;
            guest = num_or(e, "start", -1) + skew;
        }
    }
    cJSON_Delete(map);
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", H.images, file);
    int fd = host >= 0 ? open(path, O_RDWR) : -1;
    unsigned char b;
    bool ok = fd >= 0 && pread(fd, &b, 1, host) == 1;
    b ^= 0xff;
    ok = ok && pwrite(fd, &b, 1, host) == 1 && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    return ok ? guest : -1;
}

static long long bitmap_count(const char *drive)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps", drive);
    cJSON *j = call(200, "GET", path, NULL);
    long long c = num_or(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "bitmaps"), 0), "count", -1);
    cJSON_Delete(j);
    return c;
}

static int setup(void **state)
{
    (void)state;
    ju_reset();
    if (!bvh_have("qemu-img")) {
        fprintf(stderr, "test_verify: qemu-img not found; skipping\n");
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

/* ---- checksum, damage and healing ---- */

static void flipped_in_b2(const char *b2, const char *b3, const char *full)
{
    char file[512];
    link_file(b2, file, sizeof(file));
    long long at = flip_in_link(file, BLK + 7);     /* the link's second block */
    ju_check(at == 8 * 1048576LL + BLK + 7, "flipped guest offset %lld (want 8M+64k+7)", at);
    long long block = at / BLK * BLK;
    cJSON *ev = NULL;
    char body[128];
    snprintf(body, sizeof(body), "\"mode\":\"checksum\",\"backup\":\"%s\"", b3);
    cJSON *rep = verify(body, &ev);
    ju_check_str_member("damaged b2: kind", rep, "kind", "checksum");
    ju_check_str_member("damaged b2: status", rep, "status", "corrupt");
    ju_check_num_member("damaged b2: first offset", rep, "first_mismatch_offset", block);
    ju_check_num_member("damaged b2: first sector", rep, "first_mismatch_sector", block / 512);
    ju_check_num_member("damaged b2: mismatched", rep, "mismatched_bytes", BLK);
    char want[256];
    snprintf(want, sizeof(want), "[{\"offset\":%lld,\"length\":65536}]", block);
    ju_check_json("damaged b2: extents", want, cJSON_GetObjectItem(rep, "extents"));
    ju_check_num_member("damaged b2: extents_total", rep, "extents_total", 1);
    snprintf(want, sizeof(want), "[\"%s\",\"%s\"]", b2, b3);
    ju_check_json("damaged b2: affected", want, cJSON_GetObjectItem(rep, "affected_backups"));
    const cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(rep, "samples"), 0);
    ju_check_num_member("damaged b2: sample offset", s0, "offset", block);
    ju_check_str_member("damaged b2: sample", s0, "test_hex", "22222222222222dd2222222222222222");
    ju_check(cJSON_IsNull(cJSON_GetObjectItem(s0, "reference_hex")),
             "damaged b2: reference_hex should be null (a newer link exists)");
    ju_check(ev != NULL, "damaged b2: no CORRUPTION_DETECTED for the verify");
    static const char *const ev_keys[] = { "report_id", "job_id", "drive",
                                           "first_mismatch_offset", NULL };
    ju_check_keys("CORRUPTION_DETECTED", ev, ev_keys, NULL);
    ju_check_str_member("CORRUPTION_DETECTED report", ev, "report_id", str_or(rep, "id", "?"));
    ju_check_str_member("CORRUPTION_DETECTED drive", ev, "drive", "d");
    ju_check_num_member("CORRUPTION_DETECTED offset", ev, "first_mismatch_offset", block);
    cJSON_Delete(ev);
    cJSON_Delete(rep);
    backup_state(full, "complete", false);
    backup_state(b2, "corrupt", true);
    backup_state(b3, "complete", true);
    ju_check_int("chain bitmap marks the damaged block", BLK, bitmap_count("d"));

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", b3);
    struct bvh_resp r;
    const char *rb = "{\"file\":\"r3.qcow2\"}";
    if (bvh_request(&H, "POST", path, rb, strlen(rb), NULL, NULL, &r) == 0 &&
        r.status != 404 && r.status != 405)
        ju_check(r.status == 409 && strstr(r.body ? r.body : "", "force"),
                 "restore of damaged %s: expected 409 naming force, got %ld %s", b3, r.status,
                 r.body ? r.body : "");
    bvh_resp_free(&r);
}

static void heal_in_place(const char *b4)
{
    char file[512];
    link_file(b4, file, sizeof(file));
    long long at = flip_in_link(file, 300);
    long long block = at / BLK * BLK;
    char body[128];
    snprintf(body, sizeof(body), "\"mode\":\"checksum\",\"backup\":\"%s\"", b4);
    cJSON *ev = NULL;
    cJSON *rep = verify(body, &ev);
    ju_check_str_member("newest damaged: status", rep, "status", "corrupt");
    ju_check_num_member("newest damaged: first offset", rep, "first_mismatch_offset", block);
    const cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(rep, "samples"), 0);
    ju_check_num_member("newest damaged: sample at the flipped byte", s0, "offset", at);
    ju_check_str_member("newest damaged: test_hex", s0, "test_hex",
                        "dd222222222222222222222222222222");
    ju_check_str_member("newest damaged: reference_hex (the drive)", s0, "reference_hex",
                        "22222222222222222222222222222222");
    char want[64];
    snprintf(want, sizeof(want), "[\"%s\"]", b4);
    ju_check_json("newest damaged: affected", want, cJSON_GetObjectItem(rep, "affected_backups"));
    cJSON_Delete(ev);
    cJSON_Delete(rep);
    backup_state(b4, "complete", false);             /* rewritten from the drive */
    expect_clean("healed in place: checksum", rep = verify(body, NULL), "checksum");
    cJSON_Delete(rep);
    int rc = bvh_sh("cd '%s' && qemu-img check -U '%s' >/dev/null 2>&1", H.images, file);
    ju_check(rc == 0, "qemu-img check %s after the in-place heal: %d", file, rc);
}

static void test_checksum_heal(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d\",\"format\":\"qcow2\",\"size\":\"64M\"}"));
    char full[32], b2[32], b3[32], b4[32], body[160];
    io("d", "[\"write -P 0x11 0 1M\",\"flush\"]");
    chain_backup("d", "full", false, full, sizeof(full));
    io("d", "[\"write -P 0x22 8M 128k\",\"flush\"]");
    chain_backup("d", "incremental", false, b2, sizeof(b2));
    io("d", "[\"write -P 0x33 16M 64k\",\"flush\"]");
    chain_backup("d", "incremental", false, b3, sizeof(b3));

    snprintf(body, sizeof(body), "\"mode\":\"checksum\",\"backup\":\"%s\"", b3);
    cJSON *rep = verify(body, NULL);
    expect_clean("clean chain", rep, "checksum");
    cJSON_Delete(rep);
    expect_clean("clean drive", rep = verify("\"mode\":\"checksum\",\"drive\":\"d\"", NULL),
                 "checksum");
    cJSON_Delete(rep);

    flipped_in_b2(b2, b3, full);

    chain_backup("d", "incremental", false, b4, sizeof(b4));
    backup_state(b4, "complete", false);
    backup_state(b3, "complete", true);
    snprintf(body, sizeof(body), "\"mode\":\"checksum\",\"backup\":\"%s\"", b4);
    expect_clean("healed point: checksum", rep = verify(body, NULL), "checksum");
    cJSON_Delete(rep);
    snprintf(body, sizeof(body), "\"mode\":\"compare\",\"test\":{\"backup\":\"%s\"},"
             "\"reference\":{\"drive\":\"d\"}", b4);
    expect_clean("healed point: compare with the drive", rep = verify(body, NULL), "compare");
    cJSON_Delete(rep);

    heal_in_place(b4);
    ju_end();
}

/* ---- compare ---- */

static void test_compare(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"c\",\"format\":\"qcow2\",\"size\":\"32M\"}"));
    io("c", "[\"write -P 0x11 0 1M\",\"write -P 0x5a 12M 3M\",\"flush\"]");
    char full[32];
    chain_backup("c", "full", false, full, sizeof(full));
    char body[256];
    snprintf(body, sizeof(body), "\"mode\":\"compare\",\"test\":{\"drive\":\"c\"},"
             "\"reference\":{\"backup\":\"%s\"}", full);
    cJSON *rep = verify(body, NULL);
    expect_clean("drive vs its backup", rep, "compare");
    ju_check_str_member("drive vs its backup: test", rep, "test", "drive c");
    cJSON_Delete(rep);

    struct ju_events ev;
    ju_events_init(&ev, &H, head_seq());
    cJSON_Delete(call(201, "POST", "/api/v1/jobs",
                      "{\"type\":\"backup\",\"device\":\"c\",\"job_id\":\"cp\",\"sync\":\"full\","
                      "\"target\":\"copy.raw\",\"format\":\"raw\"}"));
    ju_check(wait_ok(&ev, "cp"), "raw copy of c failed");
    ju_events_free(&ev);
    char path[512];
    snprintf(path, sizeof(path), "%s/copy.raw", H.images);
    int fd = open(path, O_RDWR);
    unsigned char three[3] = { 0xee, 0xee, 0xee }, many[5000];
    memset(many, 0x77, sizeof(many));
    bool ok = fd >= 0 && pwrite(fd, three, 3, 1048576 + 1000) == 3 &&
              pwrite(fd, many, sizeof(many), 20 * 1048576 + 512) == (ssize_t)sizeof(many);
    if (fd >= 0)
        close(fd);
    ju_check(ok, "cannot modify copy.raw");

    cJSON *cev = NULL;
    rep = verify("\"mode\":\"compare\",\"test\":{\"file\":\"copy.raw\",\"format\":\"raw\"},"
                 "\"reference\":{\"drive\":\"c\"}", &cev);
    ju_check_str_member("modified copy: kind", rep, "kind", "compare");
    ju_check_str_member("modified copy: status", rep, "status", "corrupt");
    ju_check_num_member("modified copy: first offset", rep, "first_mismatch_offset", 1049576);
    ju_check_num_member("modified copy: first sector", rep, "first_mismatch_sector", 2049);
    ju_check_num_member("modified copy: mismatched", rep, "mismatched_bytes", 5003);
    ju_check_json("modified copy: extents",
                  "[{\"offset\":1049088,\"length\":512},{\"offset\":20972032,\"length\":5120}]",
                  cJSON_GetObjectItem(rep, "extents"));
    ju_check_num_member("modified copy: extents_total", rep, "extents_total", 2);
    ju_check_json("modified copy: samples",
                  "[{\"offset\":1049576,\"test_hex\":\"eeeeee00000000000000000000000000\","
                  "\"reference_hex\":\"00000000000000000000000000000000\"}]",
                  cJSON_GetObjectItem(rep, "samples"));
    ju_check_str_member("modified copy: test", rep, "test", "file copy.raw");
    ju_check(cev != NULL, "modified copy: no CORRUPTION_DETECTED");
    ju_check_num_member("modified copy: event offset", cev, "first_mismatch_offset", 1049576);
    ju_check_str_member("modified copy: event report", cev, "report_id", str_or(rep, "id", ""));
    cJSON_Delete(cev);
    cJSON_Delete(rep);
    ju_end();
}

/* ---- verify after a backup, refusals, metrics ---- */

static void test_after_backup_and_refusals(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"v\",\"format\":\"qcow2\",\"size\":\"16M\"}"));
    io("v", "[\"write -P 0x42 0 256k\",\"flush\"]");
    char full[32], inc[32];
    chain_backup("v", "full", false, full, sizeof(full));
    io("v", "[\"write -P 0x43 4M 64k\",\"flush\"]");
    struct ju_events ev;
    ju_events_init(&ev, &H, head_seq());
    chain_backup("v", "incremental", true, inc, sizeof(inc));
    /* the verify job starts after the backup's end: find it in the events */
    char job[64] = "";
    for (int tries = 0; tries < 20 && !job[0]; tries++) {
        cJSON *e = ju_event_wait(&ev, "JOB_STATUS_CHANGE", NULL, NULL, WAIT_S);
        const char *id = str_or(cJSON_GetObjectItem(e, "data"), "id", "");
        if (strncmp(id, "verify-", 7) == 0)
            snprintf(job, sizeof(job), "%s", id);
        cJSON_Delete(e);
    }
    ju_check(job[0] != 0, "no verify job after a backup with verify: true");
    if (job[0]) {
        ju_check(wait_ok(&ev, job), "the verify after the backup failed");
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/jobs/%s", job);
        cJSON *j = call(200, "GET", path, NULL);
        ju_check_str_member("after-backup verify: mode", j, "mode", "checksum");
        ju_check_str_member("after-backup verify: backup", j, "backup", inc);
        char want[64];
        snprintf(want, sizeof(want), "[\"%s\"]", inc);
        ju_check_json("after-backup verify: only the new link", want,
                      cJSON_GetObjectItem(j, "links"));
        ju_check_num_member("after-backup verify: its cost is the link's data", j, "len", BLK);
        snprintf(path, sizeof(path), "/api/v1/reports/%s", str_or(j, "report_id", "?"));
        cJSON *rep = call(200, "GET", path, NULL);
        expect_clean("after-backup verify", rep, "checksum");
        cJSON_Delete(rep);
        cJSON_Delete(j);
    }
    ju_events_free(&ev);

    static const char *const bad[] = {
        "{\"type\":\"verify\"}",
        "{\"type\":\"verify\",\"mode\":\"compare\",\"test\":{\"drive\":\"v\"}}",
        "{\"type\":\"verify\",\"mode\":\"compare\",\"test\":{\"drive\":\"v\",\"file\":\"x\"},"
        "\"reference\":{\"drive\":\"v\"}}",
        "{\"type\":\"verify\",\"mode\":\"checksum\",\"backup\":\"b1\",\"drive\":\"v\"}",
        "{\"type\":\"verify\",\"mode\":\"checksum\"}",
        "{\"type\":\"verify\",\"mode\":\"checksum\",\"backup\":\"b999\"}",
        "{\"type\":\"verify\",\"mode\":\"checksum\",\"drive\":\"nope\"}",
        "{\"type\":\"verify\",\"mode\":\"compare\",\"test\":{\"file\":\"missing.qcow2\"},"
        "\"reference\":{\"drive\":\"v\"}}",
        "{\"type\":\"verify\",\"mode\":\"compare\",\"test\":{\"file\":\"../x\"},"
        "\"reference\":{\"drive\":\"v\"}}",
        "{\"type\":\"verify\",\"mode\":\"checksum\",\"drive\":\"v\",\"speed\":1}",
        "{\"type\":\"verify\",\"mode\":\"sha\",\"drive\":\"v\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct bvh_resp r;
        int rc = bvh_request(&H, "POST", "/api/v1/jobs", bad[i], strlen(bad[i]), NULL, NULL, &r);
        ju_check(rc == 0 && r.status == 400, "%s: expected 400, got %ld %s", bad[i],
                 rc == 0 ? r.status : -1L, r.body ? r.body : "");
        bvh_resp_free(&r);
    }

    struct bvh_resp m;
    ju_check(bvh_request(&H, "GET", "/metrics", NULL, 0, NULL, NULL, &m) == 0 && m.status == 200,
             "GET /metrics");
    const char *bytes = m.body ? strstr(m.body, "\nblockvault_verify_bytes_total ") : NULL;
    ju_check(bytes && atoll(bytes + strlen("\nblockvault_verify_bytes_total ")) >= BLK,
             "metrics: blockvault_verify_bytes_total");
    const char *cnt = m.body ? strstr(m.body, "blockvault_verify_duration_seconds_count ") : NULL;
    ju_check(cnt && atoll(cnt + strlen("blockvault_verify_duration_seconds_count ")) >= 1,
             "metrics: blockvault_verify_duration_seconds_count");
    bvh_resp_free(&m);
    ju_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum_heal),
        cmocka_unit_test(test_compare),
        cmocka_unit_test(test_after_backup_and_refusals),
    };
    if (getenv("BV_TEST_FILTER"))
        cmocka_set_test_filter(getenv("BV_TEST_FILTER"));
    return cmocka_run_group_tests_name("verify", tests, setup, teardown);
}
