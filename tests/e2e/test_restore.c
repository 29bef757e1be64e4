/*
 * test_restore: restore jobs (POST /api/v1/backups/{bid}/restore, issue 11
 * item 3), through the REST API only.
 *
 *  - every point of a three-link chain (full, incremental, incremental;
 *    data, zeroes over data, write-zeroes, discard, a partial last cluster)
 *    restored to a file (qcow2 and raw) and to a new drive equals the drive
 *    as it was at backup time: the reference is a plain POST /jobs full
 *    backup taken right after each chain backup, before the next write.
 *    Equality by POST /images/compare and `qemu-img compare`; every restored
 *    image passes `qemu-img check` and has no backing file (flattened); a
 *    compressed restore holds compressed clusters (`qemu-img check`'s
 *    statistics); the job is type "restore", id "restore-N", device the
 *    backup, with the events of any successful job;
 *  - refusals before anything is created: unknown backup 404; target exists,
 *    drive id taken, a failed backup, a running one 409; a bad drive id,
 *    both or neither of drive/file, compress into raw, a name outside the
 *    storage directory 400;
 *  - a byte flipped outside the service in a data cluster of an incremental
 *    link (found with `qemu-img map --output=json`): restoring that point
 *    or a later one fails with the checksum error ("checksum mismatch"),
 *    to a file and to a drive, and leaves no image and no drive behind;
 *    "force": true does not bypass the digest check (it only lifts the
 *    damaged refusal); the point before the damaged link still restores.
 *    When the checksum verify exists (POST /jobs type verify), the damaged
 *    point is refused with 409 without force.
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

#define WAIT_S   60.0
#define NLINKS   3

static struct bvh H;

/* ---- small calls ---- */

static const char *str_or(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : dflt;
}

static cJSON *vcall(long want, const char *method, const char *path, const char *fmt,
                    va_list ap)
{
    char *body = NULL;
    if (fmt && vasprintf(&body, fmt, ap) < 0)
        body = NULL;
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

/* A call whose status is checked softly; the JSON (caller frees) or NULL. */
static cJSON *call(long want, const char *method, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static cJSON *call(long want, const char *method, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cJSON *j = vcall(want, method, path, fmt, ap);
    va_end(ap);
    return j;
}

/* The contract's error envelope with this status; desc_part (may be NULL)
 * must occur in its text. */
static void expect_error(const char *what, long status, const char *desc_part,
                         const char *path, const char *body)
{
    struct bvh_resp r;
    int rc = bvh_request(&H, "POST", path, body, strlen(body), NULL, NULL, &r);
    ju_check(rc == 0 && r.status == status, "%s: expected HTTP %ld, got %ld: %s", what, status,
             rc == 0 ? r.status : -1L, r.body ? r.body : "");
    const char *desc = str_or(cJSON_GetObjectItem(r.json, "error"), "desc", NULL);
    ju_check(desc != NULL, "%s: no error.desc in %s", what, r.body ? r.body : "");
    if (desc && desc_part)
        ju_check(strstr(desc, desc_part) != NULL, "%s: error '%s' should mention '%s'", what,
                 desc, desc_part);
    bvh_resp_free(&r);
}

static void io(const char *drive, const char *cmds)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON *j = call(200, "POST", path, "{\"commands\":%s}", cmds);
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "results"))
        ju_check(cJSON_IsTrue(cJSON_GetObjectItem(it, "ok")), "io on %s: '%s' failed", drive,
                 str_or(it, "command", "?"));
    cJSON_Delete(j);
}

static long long head_seq(void)
{
    cJSON *j = call(200, "GET", "/api/v1/events?after=latest", NULL);
    const cJSON *n = cJSON_GetObjectItem(j, "next");
    long long v = cJSON_IsNumber(n) ? (long long)n->valuedouble : 0;
    cJSON_Delete(j);
    return v;
}

/* Waits for the job's `null`; its BLOCK_JOB_COMPLETED/CANCELLED (caller frees). */
static cJSON *wait_end(struct ju_events *ev, const char *job, long long after)
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
        const cJSON *seq = cJSON_GetObjectItem(e, "seq");
        const char *name = str_or(e, "event", "");
        if (!cJSON_IsNumber(seq) || seq->valuedouble <= (double)after)
            continue;
        if ((strcmp(name, "BLOCK_JOB_COMPLETED") == 0 ||
             strcmp(name, "BLOCK_JOB_CANCELLED") == 0) &&
            strcmp(str_or(cJSON_GetObjectItem(e, "data"), "device", ""), job) == 0)
            return cJSON_Duplicate(e, true);
    }
    ju_check(false, "job %s: reached null without BLOCK_JOB_COMPLETED/CANCELLED", job);
    return NULL;
}

/* The COMPLETED event's error text, or NULL. */
static const char *event_error(const cJSON *fin)
{
    return str_or(cJSON_GetObjectItem(fin, "data"), "error", NULL);
}

/* A chain backup of drive; waits for its end; the backup id in bid. */
static void chain_backup(const char *drive, const char *kind, char *bid, size_t n)
{
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", drive);
    cJSON *j = call(201, "POST", path, "{\"kind\":\"%s\"}", kind);
    snprintf(bid, n, "%s", str_or(cJSON_GetObjectItem(j, "backup"), "id", "?"));
    const char *job = str_or(cJSON_GetObjectItem(j, "job"), "id", drive);
    cJSON *fin = wait_end(&ev, job, after);
    ju_check(fin && !event_error(fin), "chain backup %s of %s failed: %s", kind, drive,
             fin && event_error(fin) ? event_error(fin) : "(no event)");
    cJSON_Delete(fin);
    cJSON_Delete(j);
    ju_events_free(&ev);
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    j = call(200, "GET", path, NULL);
    ju_check_str_member("chain backup status", j, "status", "complete");
    cJSON_Delete(j);
}

/* A plain full backup of drive into target (the reference image). */
static void reference_backup(const char *drive, const char *job, const char *target)
{
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    cJSON_Delete(call(201, "POST", "/api/v1/jobs",
                      "{\"type\":\"backup\",\"device\":\"%s\",\"job_id\":\"%s\",\"sync\":"
                      "\"full\",\"target\":\"%s\",\"format\":\"qcow2\"}", drive, job, target));
    cJSON *fin = wait_end(&ev, job, after);
    ju_check(fin && !event_error(fin), "reference backup %s failed", job);
    cJSON_Delete(fin);
    ju_events_free(&ev);
}

/* Starts a restore of bid with body; waits for its end.  Returns the final
 * event (caller frees; NULL if the restore was refused), checks the job
 * object and the event trace (ok: success, else failure without an I/O
 * error). */
static cJSON *restore(const char *bid, const char *body, bool ok)
{
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", bid);
    cJSON *j = call(201, "POST", path, "%s", body);
    cJSON *fin = NULL;
    if (j) {
        char job[128];
        snprintf(job, sizeof(job), "%s", str_or(j, "id", "?"));
        ju_check(strncmp(job, "restore-", 8) == 0, "restore job id '%s' is not restore-N", job);
        ju_check_str_member("restore job type", j, "type", "restore");
        ju_check_str_member("restore job device", j, "device", bid);
        ju_check_str_member("restore job backup", j, "backup", bid);
        fin = wait_end(&ev, job, after);
        static const char *const t_ok[] = {
            "created running waiting pending COMPLETED concluded null", NULL };
        static const char *const t_fail[] = {
            "created running aborting COMPLETED concluded null", NULL };
        ju_check_trace(&ev, job, after, ok ? t_ok : t_fail);
        ju_check(fin && strcmp(str_or(cJSON_GetObjectItem(fin, "data"), "type", ""),
                               "restore") == 0, "restore %s: BLOCK_JOB_COMPLETED.type", job);
        if (ok)
            ju_check(fin && !event_error(fin), "restore %s of %s (%s) failed: %s", job, bid,
                     body, fin && event_error(fin) ? event_error(fin) : "(no event)");
        snprintf(path, sizeof(path), "/api/v1/jobs/%s", job);
        cJSON *after_j = call(200, "GET", path, NULL);
        ju_check_str_member("restore job status at the end", after_j, "status", "null");
        if (fin && event_error(fin))
            ju_check_str_member("the job's error = the event's", after_j, "error",
                                event_error(fin));
        cJSON_Delete(after_j);
    }
    cJSON_Delete(j);
    ju_events_free(&ev);
    return fin;
}

static bool images_identical(const char *what, const char *a, const char *b)
{
    cJSON *j = call(200, "POST", "/api/v1/images/compare",
                    "{\"a\":{\"file\":\"%s\"},\"b\":{\"file\":\"%s\"}}", a, b);
    bool same = cJSON_IsTrue(cJSON_GetObjectItem(j, "identical"));
    ju_check(same, "%s: POST /images/compare %s %s: not identical", what, a, b);
    cJSON_Delete(j);
    int rc = bvh_sh("cd '%s' && qemu-img compare -U '%s' '%s' >/dev/null 2>&1", H.images, a, b);
    ju_check(rc == 0, "%s: qemu-img compare %s %s: exit status %d", what, a, b, rc);
    return same && rc == 0;
}

/* qemu-img check clean, no backing file; compressed: some compressed clusters. */
static void image_sound(const char *what, const char *file, bool qcow2, bool compressed)
{
    char cmd[1024];
    if (qcow2) {
        int rc = bvh_sh("cd '%s' && qemu-img check -U '%s' >/dev/null 2>&1", H.images, file);
        ju_check(rc == 0, "%s: qemu-img check %s: exit status %d", what, file, rc);
    }
    snprintf(cmd, sizeof(cmd), "cd '%s' && qemu-img info -U '%s' | grep -q '^backing file'",
             H.images, file);
    ju_check(bvh_sh("%s", cmd) != 0, "%s: %s has a backing file (not flattened)", what, file);
    if (compressed) {
        int rc = bvh_sh("cd '%s' && qemu-img check -U '%s' | grep -Eq "
                        "'[1-9][0-9.]*%% compressed clusters|0\\.[0-9]*[1-9][0-9]*%% compressed'",
                        H.images, file);
        ju_check(rc == 0, "%s: %s has no compressed clusters", what, file);
    }
}

static void expect_absent(const char *what, const char *file, const char *drive)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/images/%s", file);
    cJSON_Delete(call(404, "GET", path, NULL));
    if (drive) {
        snprintf(path, sizeof(path), "/api/v1/drives/%s", drive);
        cJSON_Delete(call(404, "GET", path, NULL));
    }
    (void)what;
}

static int setup(void **state)
{
    (void)state;
    ju_reset();
    if (!bvh_have("qemu-img")) {
        fprintf(stderr, "test_restore: qemu-img not found; skipping\n");
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

/* ---- (a) every point of a chain, to files and drives ---- */

/* What changes before each link: data, zeroes over data, write-zeroes,
 * discard, partial clusters, the disk's last cluster. */
static const char *const writes[NLINKS] = {
    "[\"write -P 0x11 0 1M\",\"write -P 0x22 5M 192k\",\"write -P 0x33 63M 1M\","
    "\"write -P 0x44 20M 4k\",\"flush\"]",
    "[\"write -P 0x55 512k 64k\",\"write -P 0 5M 64k\",\"write -P 0x66 40M 2M\","
    "\"write -P 0x67 64956k 512\",\"flush\"]",
    "[\"write -P 0x77 20M 512\",\"write -z 0 128k\",\"discard 40M 1M\","
    "\"write -P 0x78 33M 3M\",\"flush\"]",
};

static void test_restore_chain(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"src\",\"format\":\"qcow2\",\"size\":\"64M\"}"));
    char bids[NLINKS][32], ref[64], job[64];
    for (int k = 0; k < NLINKS; k++) {
        io("src", writes[k]);
        chain_backup("src", k ? "incremental" : "full", bids[k], sizeof(bids[k]));
        snprintf(job, sizeof(job), "ref%d", k);
        snprintf(ref, sizeof(ref), "ref%d.qcow2", k);
        reference_backup("src", job, ref);
    }
    for (int k = 0; k < NLINKS; k++) {
        char file[64], drive[32], what[128], body[256];
        snprintf(ref, sizeof(ref), "ref%d.qcow2", k);

        snprintf(file, sizeof(file), "rf%d.qcow2", k);
        snprintf(body, sizeof(body), "{\"file\":\"%s\"}", file);
        cJSON_Delete(restore(bids[k], body, true));
        snprintf(what, sizeof(what), "point %s to file", bids[k]);
        images_identical(what, file, ref);
        image_sound(what, file, true, false);

        snprintf(drive, sizeof(drive), "rd%d", k);
        snprintf(body, sizeof(body), "{\"drive\":\"%s\"}", drive);
        cJSON_Delete(restore(bids[k], body, true));
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/drives/%s", drive);
        cJSON *d = call(200, "GET", path, NULL);
        snprintf(file, sizeof(file), "%s.qcow2", drive);
        ju_check_str_member("restored drive file", d, "file", file);
        ju_check_str_member("restored drive format", d, "format", "qcow2");
        cJSON_Delete(d);
        snprintf(what, sizeof(what), "point %s to drive", bids[k]);
        images_identical(what, file, ref);
        image_sound(what, file, true, false);
    }
    /* the drive restored from the newest point reads as the source does */
    io("rd2", "[\"read -P 0x78 33M 3M\",\"read -P 0 0 128k\",\"read -P 0 40M 1M\"]");

    /* raw and compressed */
    cJSON_Delete(restore(bids[1], "{\"file\":\"rr1.raw\",\"format\":\"raw\"}", true));
    images_identical("point to raw", "rr1.raw", "ref1.qcow2");
    image_sound("point to raw", "rr1.raw", false, false);
    cJSON_Delete(restore(bids[2], "{\"file\":\"rc2.qcow2\",\"compress\":true}", true));
    images_identical("compressed", "rc2.qcow2", "ref2.qcow2");
    image_sound("compressed", "rc2.qcow2", true, true);
    cJSON_Delete(restore(bids[0], "{\"drive\":\"rdc\",\"compress\":true}", true));
    images_identical("compressed drive", "rdc.qcow2", "ref0.qcow2");
    image_sound("compressed drive", "rdc.qcow2", true, true);
    ju_end();
}

/* ---- (b) refusals ---- */

static void test_refusals(void **state)
{
    (void)state;
    char bid[32], path[128];
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"ref\",\"format\":\"qcow2\",\"size\":\"16M\"}"));
    io("ref", "[\"write -P 0x5a 0 1M\",\"flush\"]");
    chain_backup("ref", "full", bid, sizeof(bid));
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", bid);
    cJSON_Delete(restore(bid, "{\"file\":\"taken.qcow2\"}", true));

    expect_error("unknown backup", 404, "b999", "/api/v1/backups/b999/restore",
                 "{\"file\":\"x.qcow2\"}");
    expect_error("target exists", 409, "taken.qcow2", path, "{\"file\":\"taken.qcow2\"}");
    expect_error("drive id taken", 409, "ref", path, "{\"drive\":\"ref\"}");
    expect_error("drive image exists", 409, "taken.qcow2", path, "{\"drive\":\"taken\"}");
    expect_error("bad drive id", 400, NULL, path, "{\"drive\":\"9x\"}");
    expect_error("drive and file", 400, NULL, path, "{\"drive\":\"n1\",\"file\":\"n1.qcow2\"}");
    expect_error("neither", 400, NULL, path, "{}");
    expect_error("compress raw", 400, NULL, path,
                 "{\"file\":\"n2.raw\",\"format\":\"raw\",\"compress\":true}");
    expect_error("bad format", 400, NULL, path, "{\"file\":\"n3\",\"format\":\"vmdk\"}");
    expect_error("outside", 400, NULL, path, "{\"file\":\"../n4.qcow2\"}");
    expect_error("absolute", 400, NULL, path, "{\"file\":\"/tmp/n5.qcow2\"}");
    expect_error("unknown field", 400, NULL, path, "{\"file\":\"n6.qcow2\",\"speed\":1}");
    expect_absent("refused", "n1.qcow2", "n1");
    expect_absent("refused", "n2.raw", NULL);
    expect_absent("refused", "9x.qcow2", NULL);

    /* a failed backup has no data: a drive whose every read fails */
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"flaky\",\"format\":\"qcow2\",\"size\":\"16M\",\"blkdebug\":"
                      "{\"inject_error\":[{\"event\":\"read_aio\",\"errno\":5}]}}"));
    io("flaky", "[\"write -P 0x5a 0 1M\",\"flush\"]");
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    cJSON *j = call(201, "POST", "/api/v1/drives/flaky/backups", "{\"kind\":\"full\"}");
    char fbid[32];
    snprintf(fbid, sizeof(fbid), "%s", str_or(cJSON_GetObjectItem(j, "backup"), "id", "?"));
    cJSON_Delete(j);
    cJSON_Delete(wait_end(&ev, "flaky", after));
    ju_events_free(&ev);
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", fbid);
    expect_error("failed backup", 409, "failed", path, "{\"file\":\"f.qcow2\"}");
    expect_absent("failed backup", "f.qcow2", NULL);

    /* a running one (when the pause lands before the copy ends) */
    io("ref", "[\"write -P 0x5b 2M 8M\",\"flush\"]");
    after = head_seq();
    ju_events_init(&ev, &H, after);
    j = call(201, "POST", "/api/v1/drives/ref/backups", "{\"kind\":\"incremental\"}");
    snprintf(fbid, sizeof(fbid), "%s", str_or(cJSON_GetObjectItem(j, "backup"), "id", "?"));
    cJSON_Delete(j);
    struct bvh_resp r;
    if (bvh_request(&H, "POST", "/api/v1/jobs/ref/pause", NULL, 0, NULL, NULL, &r) == 0 &&
        r.status == 200) {
        snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", fbid);
        expect_error("running backup", 409, "running", path, "{\"file\":\"run.qcow2\"}");
        cJSON_Delete(call(200, "POST", "/api/v1/jobs/ref/resume", NULL));
    } else {
        fprintf(stderr, "test_restore: the backup ended before it could be paused; the "
                        "running refusal was not exercised\n");
    }
    bvh_resp_free(&r);
    cJSON_Delete(wait_end(&ev, "ref", after));
    ju_events_free(&ev);
    expect_absent("running backup", "run.qcow2", NULL);
    ju_end();
}

/* ---- (c) a damaged link: the digest check ---- */

/* Host offset of a data cluster of file (depth 0), or -1. */
static long long data_cluster(const char *file)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cd '%s' && qemu-img map -U --output=json '%s'", H.images, file);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char *text = malloc(1 << 20);
    size_t n = text ? fread(text, 1, (1 << 20) - 1, p) : 0;
    pclose(p);
    if (!text)
        return -1;
    text[n] = '\0';
    cJSON *map = cJSON_Parse(text);
    free(text);
    long long off = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        const cJSON *o = cJSON_GetObjectItem(e, "offset");
        const cJSON *depth = cJSON_GetObjectItem(e, "depth");
        if (off < 0 && cJSON_IsTrue(cJSON_GetObjectItem(e, "data")) && cJSON_IsNumber(o) &&
            cJSON_IsNumber(depth) && depth->valuedouble == 0)
            off = (long long)o->valuedouble;
    }
    cJSON_Delete(map);
    return off;
}

static bool flip_byte(const char *file, long long off)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", H.images, file);
    int fd = open(path, O_RDWR);
    unsigned char b;
    bool ok = fd >= 0 && pread(fd, &b, 1, off) == 1;
    b ^= 0xff;
    ok = ok && pwrite(fd, &b, 1, off) == 1 && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void expect_checksum_failure(const char *what, const char *bid, const char *body,
                                    const char *file, const char *drive)
{
    cJSON *fin = restore(bid, body, false);
    const char *err = event_error(fin);
    ju_check(err && strstr(err, "checksum mismatch") && strstr(err, bid),
             "%s: expected the checksum error naming %s, got %s", what, bid,
             err ? err : "(no error)");
    cJSON_Delete(fin);
    expect_absent(what, file, drive);
}

static void test_digest_mismatch(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"cor\",\"format\":\"qcow2\",\"size\":\"32M\"}"));
    char b0[32], b1[32], b2[32];
    io("cor", "[\"write -P 0x31 0 2M\",\"flush\"]");
    chain_backup("cor", "full", b0, sizeof(b0));
    reference_backup("cor", "cref0", "cref0.qcow2");
    io("cor", "[\"write -P 0x32 8M 1M\",\"flush\"]");
    chain_backup("cor", "incremental", b1, sizeof(b1));
    io("cor", "[\"write -P 0x33 16M 1M\",\"flush\"]");
    chain_backup("cor", "incremental", b2, sizeof(b2));

    char path[128], link[512];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", b1);
    cJSON *j = call(200, "GET", path, NULL);
    snprintf(link, sizeof(link), "%s", str_or(j, "file", "?"));
    cJSON_Delete(j);
    long long off = data_cluster(link);
    ju_check(off > 0, "no data cluster found in %s", link);
    if (off <= 0) {
        ju_end();
        return;
    }
    ju_check(flip_byte(link, off + 4096), "cannot flip a byte of %s", link);

    expect_checksum_failure("damaged link to file", b1, "{\"file\":\"c1.qcow2\"}", "c1.qcow2",
                            NULL);
    expect_checksum_failure("damaged link to drive", b1, "{\"drive\":\"cd1\"}", "cd1.qcow2",
                            "cd1");
    expect_checksum_failure("later point", b2, "{\"file\":\"c2.qcow2\",\"compress\":true}",
                            "c2.qcow2", NULL);
    /* force lifts the damaged refusal only: the digest is still checked */
    expect_checksum_failure("forced", b1, "{\"file\":\"c1f.qcow2\",\"force\":true}",
                            "c1f.qcow2", NULL);
    /* the point before the damaged link is whole */
    cJSON_Delete(restore(b0, "{\"file\":\"c0.qcow2\"}", true));
    images_identical("point before the damage", "c0.qcow2", "cref0.qcow2");

    /* with a checksum verify, the point is marked damaged and refused */
    struct ju_events ev;
    long long after = head_seq();
    ju_events_init(&ev, &H, after);
    char *body = NULL;
    if (asprintf(&body, "{\"type\":\"verify\",\"mode\":\"checksum\",\"backup\":\"%s\"}", b1) < 0)
        body = NULL;
    struct bvh_resp r;
    if (body && bvh_request(&H, "POST", "/api/v1/jobs", body, strlen(body), NULL, NULL, &r) ==
                    0 && r.status == 201) {
        cJSON_Delete(wait_end(&ev, str_or(r.json, "id", "?"), after));
        snprintf(path, sizeof(path), "/api/v1/backups/%s", b2);
        j = call(200, "GET", path, NULL);
        ju_check(cJSON_IsTrue(cJSON_GetObjectItem(j, "damaged")),
                 "%s depends on a corrupt link: expected damaged", b2);
        cJSON_Delete(j);
        snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", b2);
        expect_error("damaged point", 409, "force", path, "{\"file\":\"d2.qcow2\"}");
        expect_absent("damaged point", "d2.qcow2", NULL);
        expect_checksum_failure("damaged point forced", b2,
                                "{\"file\":\"d2.qcow2\",\"force\":true}", "d2.qcow2", NULL);
    } else {
        fprintf(stderr, "test_restore: no checksum verify (POST /jobs type verify answered "
                        "%ld); the damaged refusal was not exercised\n", body ? r.status : -1L);
    }
    if (body)
        bvh_resp_free(&r);
    free(body);
    ju_events_free(&ev);
    ju_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_chain),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_digest_mismatch),
    };
    if (getenv("BV_TEST_FILTER"))
        cmocka_set_test_filter(getenv("BV_TEST_FILTER"));
    return cmocka_run_group_tests_name("restore", tests, setup, teardown);
}
