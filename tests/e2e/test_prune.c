/*
 * test_prune: DELETE /api/v1/backups/{bid} (issue 11, items 4 and 8),
 * through the REST API only.
 *
 * Every scenario builds a five-link chain on a fresh 8 MiB qcow2 drive with
 * the same writes between the links (data, zero writes hiding older data,
 * partial clusters, the disk's last MiB), so point k of any chain reads as
 * reference k: five full backups (POST /jobs) of a first drive taken right
 * after each of its chain backups.
 *
 *  - prune at each position 1..5 of a fresh chain: the job (type prune, a
 *    generated id, BLOCK_JOB_COMPLETED without error), every other point
 *    equal to its reference (`qemu-img compare` of the link file, and spot
 *    reads of GET /backups/{bid}/data against the reference's bytes), the
 *    catalog's new parents, kinds and files (the child rewritten as a new
 *    link file, its checksum unchanged), `qemu-img check` clean on every
 *    link, the chain's directory holding exactly the catalog's files; the
 *    newest link of the live chain is 409 until a new chain closes it;
 *    after pruning position 4 the next incremental extends the merged link;
 *    position 2's chain is compressed (the merged link is written compressed);
 *  - crash at each step (BV_TEST_CRASH_AT=1..7 makes the daemon _exit in
 *    the middle of pruning link 3 of 5), restart: the chain is the old one
 *    (steps 1-3) or the new one (4-7), never a mix, with the same checks;
 *    an undone prune then runs to the end.
 *
 * Needs qemu-img (exit 77 without it).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "jobs_util.h"

#define KiB      1024LL
#define MiB      (1024LL * 1024)
#define SIZE     (8 * MiB)
#define LINKS    5
#define WAIT_S   30.0
#define CRASH_EXIT 86

/* Writes before link k (k = 0 is the full). */
static const char *const writes[LINKS] = {
    "[\"write -P 0x11 0 2M\",\"write -P 0x12 3M 512k\",\"write -P 0x13 6M 64k\",\"flush\"]",
    "[\"write -P 0x21 64k 128k\",\"write -z 3M 64k\",\"write -P 0x22 5M 4k\",\"flush\"]",
    "[\"write -P 0x31 1M 64k\",\"write -P 0x32 5M 64k\",\"write -z 0 64k\",\"flush\"]",
    "[\"write -P 0x41 68k 4k\",\"write -P 0x42 7M 1M\",\"write -P 0x43 3M 4k\",\"flush\"]",
    "[\"write -z 1M 1M\",\"write -P 0x51 6M 4k\",\"write -P 0x52 5M 64k\",\"flush\"]",
};

/* Spot reads: every written area and its edges. */
static const struct { long long off, len; } spots[] = {
    { 0, 64 * KiB }, { 64 * KiB, 128 * KiB }, { 1 * MiB - 4 * KiB, 72 * KiB },
    { 2 * MiB - 4 * KiB, 8 * KiB }, { 3 * MiB, 68 * KiB }, { 5 * MiB, 64 * KiB },
    { 6 * MiB, 64 * KiB }, { 7 * MiB - 512, 1024 }, { 8 * MiB - 4 * KiB, 4 * KiB },
};

static struct bvh H;
static struct ju_events EV;
static unsigned char *ref_bytes[LINKS];    /* reference k, read back as raw */

/* A chain as built: ids, files and checksums of its links, oldest first. */
struct chain {
    char drive[32], id[32];
    char bid[LINKS][32], file[LINKS][256], checksum[LINKS][40];
};

/* ---- calls ---- */

static const char *str_or(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : dflt;
}

/* A string member, or null/absent when want is NULL. */
static void check_str_or_null(const char *what, const cJSON *o, const char *key,
                              const char *want)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    char w[256];
    snprintf(w, sizeof(w), "%s: '%s'", what, key);
    ju_check_str(w, want, cJSON_IsString(it) ? it->valuestring : NULL);
    ju_check(cJSON_IsString(it) || cJSON_IsNull(it) || !it, "%s: not a string or null", w);
}

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

static void events_restart(void)
{
    ju_events_free(&EV);
    cJSON *j = call(200, "GET", "/api/v1/events?after=latest", NULL);
    const cJSON *n = cJSON_GetObjectItem(j, "next");
    ju_events_init(&EV, &H, cJSON_IsNumber(n) ? (long long)n->valuedouble : 0);
    cJSON_Delete(j);
}

/* Waits for the job's BLOCK_JOB_COMPLETED and checks it carries no error. */
static void wait_done(const char *job, const char *type)
{
    cJSON *e = ju_event_wait(&EV, "BLOCK_JOB_COMPLETED", "device", job, WAIT_S);
    const cJSON *d = cJSON_GetObjectItem(e, "data");
    ju_check(!cJSON_GetObjectItem(d, "error"), "job %s failed: %s", job,
             str_or(d, "error", ""));
    ju_check_str_member("BLOCK_JOB_COMPLETED", d, "type", type);
    cJSON_Delete(e);
}

/* A chain backup; its id into bid. */
static void chain_backup(const char *drive, const char *kind, bool compress, char bid[32])
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", drive);
    cJSON *j = call(201, "POST", path, "{\"kind\":\"%s\",\"compress\":%s}", kind,
                    compress ? "true" : "false");
    assert_non_null(j);
    snprintf(bid, 32, "%s", str_or(cJSON_GetObjectItem(j, "backup"), "id", ""));
    wait_done(str_or(cJSON_GetObjectItem(j, "job"), "id", drive), "backup");
    cJSON_Delete(j);
}

static cJSON *backup_get(const char *bid)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    return call(200, "GET", path, NULL);
}

/* A fresh drive with five links (compressed ones with compress); refs: also
 * reference k after link k. */
static void build_chain(const char *drive, struct chain *c, bool refs, bool compress)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->drive, sizeof(c->drive), "%s", drive);
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"%s\",\"format\":\"qcow2\",\"size\":\"8M\"}", drive));
    for (int k = 0; k < LINKS; k++) {
        io(drive, writes[k]);
        chain_backup(drive, k ? "incremental" : "full", compress, c->bid[k]);
        if (refs) {
            char job[32];
            snprintf(job, sizeof(job), "ref%d", k);
            cJSON_Delete(call(201, "POST", "/api/v1/jobs",
                              "{\"type\":\"backup\",\"device\":\"%s\",\"job_id\":\"%s\","
                              "\"sync\":\"full\",\"target\":\"ref%d.qcow2\",\"format\":\"qcow2\"}",
                              drive, job, k));
            wait_done(job, "backup");
        }
        cJSON *b = backup_get(c->bid[k]);
        assert_non_null(b);
        ju_check_str_member("new link kind", b, "kind", k ? "incremental" : "full");
        check_str_or_null("new link parent", b, "parent", k ? c->bid[k - 1] : NULL);
        snprintf(c->file[k], sizeof(c->file[k]), "%s", str_or(b, "file", ""));
        snprintf(c->checksum[k], sizeof(c->checksum[k]), "%s", str_or(b, "checksum", ""));
        snprintf(c->id, sizeof(c->id), "%s", str_or(b, "chain", ""));
        cJSON_Delete(b);
    }
}

/* ---- checks ---- */

/* Point k (backup bid) reads as reference k: qemu-img compare of its link
 * file with its chain, and spot reads through the API. */
static void check_point(const char *bid, int k)
{
    cJSON *b = backup_get(bid);
    const char *file = str_or(b, "file", "");
    int rc = bvh_sh("qemu-img compare -U -q -f qcow2 -F qcow2 '%s/%s' '%s/ref%d.qcow2'",
                    H.images, file, H.images, k);
    ju_check(rc == 0, "point %d (%s, %s): qemu-img compare with ref%d: exit %d", k, bid, file,
             k, rc);
    cJSON_Delete(b);
    for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=%lld&length=%lld", bid,
                 spots[i].off, spots[i].len);
        struct bvh_resp r;
        int q = bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r);
        bool same = q == 0 && r.status == 200 && r.len == (size_t)spots[i].len &&
                    memcmp(r.body, ref_bytes[k] + spots[i].off, r.len) == 0;
        ju_check(same, "point %d (%s): bytes at [%lld, +%lld) differ from ref%d (HTTP %ld)", k,
                 bid, spots[i].off, spots[i].len, k, q == 0 ? r.status : -1L);
        bvh_resp_free(&r);
    }
}

/* The catalog's chain: ids into out (oldest first); returns the count. */
static int chain_links(const struct chain *c, char out[LINKS + 2][32], cJSON **chain_json)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", c->drive);
    cJSON *j = call(200, "GET", path, NULL);
    const cJSON *ch, *b;
    int n = 0;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItem(j, "chains")) {
        if (strcmp(str_or(ch, "id", ""), c->id) != 0)
            continue;
        cJSON_ArrayForEach(b, cJSON_GetObjectItem(ch, "backups"))
            if (n < LINKS + 2 && strcmp(str_or(b, "status", ""), "failed") != 0)
                snprintf(out[n++], 32, "%s", str_or(b, "id", ""));
        *chain_json = cJSON_Duplicate(ch, true);
    }
    cJSON_Delete(j);
    return n;
}

static const cJSON *find_backup(const cJSON *chain, const char *bid)
{
    const cJSON *b;
    cJSON_ArrayForEach(b, cJSON_GetObjectItem(chain, "backups"))
        if (strcmp(str_or(b, "id", ""), bid) == 0)
            return b;
    return NULL;
}

/* Every link file checks clean, and the chain's directory holds exactly
 * the catalog's link files. */
static void check_files(const struct chain *c, const cJSON *chain)
{
    char listed[LINKS + 2][256];
    int n = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, cJSON_GetObjectItem(chain, "backups")) {
        if (strcmp(str_or(b, "status", ""), "failed") == 0 || n >= LINKS + 2)
            continue;
        const char *file = str_or(b, "file", "");
        int rc = bvh_sh("qemu-img check -U -q -f qcow2 '%s/%s' >/dev/null", H.images, file);
        ju_check(rc == 0, "qemu-img check of %s: exit %d", file, rc);
        const char *slash = strrchr(file, '/');
        snprintf(listed[n++], sizeof(listed[0]), "%s", slash ? slash + 1 : file);
    }
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/chains/%s/%s", H.images, c->drive, c->id);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int seen = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        bool known = false;
        for (int i = 0; i < n; i++)
            known = known || strcmp(listed[i], de->d_name) == 0;
        ju_check(known, "%s: file %s is not a link of the catalog", dir, de->d_name);
        seen++;
    }
    closedir(d);
    ju_check_int("files in the chain's directory", n, seen);
}

/* After link `gone` (0-based) was pruned: the other four links, in order,
 * with the new parents and kinds; the child rewritten as a new file with
 * its checksum; every point equal to its reference; files clean. */
static void check_pruned(const struct chain *c, int gone)
{
    char ids[LINKS + 2][32];
    cJSON *chain = NULL;
    int n = chain_links(c, ids, &chain);
    ju_check_int("links left", LINKS - 1, n);
    int i = 0;
    for (int k = 0; k < LINKS; k++) {
        if (k == gone)
            continue;
        ju_check(i < n && strcmp(ids[i], c->bid[k]) == 0, "link %d: expected %s, got %s", i,
                 c->bid[k], i < n ? ids[i] : "(none)");
        const cJSON *b = find_backup(chain, c->bid[k]);
        const char *parent = i ? c->bid[k - 1 == gone ? k - 2 : k - 1] : NULL;
        check_str_or_null(c->bid[k], b, "parent", parent);
        ju_check_str_member(c->bid[k], b, "kind", i ? "incremental" : "full");
        ju_check_str_member(c->bid[k], b, "checksum", c->checksum[k]);
        bool child = k == gone + 1;
        const char *file = str_or(b, "file", "");
        ju_check(child ? strcmp(file, c->file[k]) != 0 && strstr(file, ".m") != NULL
                       : strcmp(file, c->file[k]) == 0,
                 "%s: file %s (was %s)", c->bid[k], file, c->file[k]);
        check_point(c->bid[k], k);
        i++;
    }
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", c->bid[gone]);
    cJSON_Delete(call(404, "GET", path, NULL));
    check_files(c, chain);
    cJSON_Delete(chain);
}

/* The chain as built, untouched. */
static void check_intact(const struct chain *c)
{
    char ids[LINKS + 2][32];
    cJSON *chain = NULL;
    int n = chain_links(c, ids, &chain);
    ju_check_int("links", LINKS, n);
    for (int k = 0; k < LINKS && k < n; k++) {
        const cJSON *b = find_backup(chain, c->bid[k]);
        check_str_or_null(c->bid[k], b, "parent", k ? c->bid[k - 1] : NULL);
        ju_check_str_member(c->bid[k], b, "file", c->file[k]);
        check_point(c->bid[k], k);
    }
    check_files(c, chain);
    cJSON_Delete(chain);
}

/* DELETE → 201 prune job; its id. */
static void start_prune(const char *bid, char job[64])
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    cJSON *j = call(201, "DELETE", path, NULL);
    assert_non_null(j);
    ju_check_str_member("prune job", j, "type", "prune");
    snprintf(job, 64, "%s", str_or(j, "id", ""));
    ju_check(strncmp(job, "prune-", 6) == 0, "prune job id '%s' is not prune-N", job);
    ju_check_str_member("prune job", j, "backup", bid);
    cJSON_Delete(j);
}

static void prune(const char *bid)
{
    char job[64];
    start_prune(bid, job);
    wait_done(job, "prune");
}

/* ---- setup ---- */

static int setup(void **state)
{
    (void)state;
    ju_reset();
    if (!bvh_have("qemu-img")) {
        fprintf(stderr, "test_prune: qemu-img not found; skipping\n");
        exit(77);
    }
    if (bvh_start(&H, NULL) < 0)
        return -1;
    ju_events_init(&EV, &H, 0);
    events_restart();
    struct chain c;
    build_chain("ref", &c, true, false);
    for (int k = 0; k < LINKS; k++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/ref%d.raw", H.images, k);
        if (bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s/ref%d.qcow2' '%s'", H.images, k,
                   path) != 0)
            return -1;
        FILE *f = fopen(path, "rb");
        ref_bytes[k] = malloc(SIZE);
        if (!f || !ref_bytes[k] || fread(ref_bytes[k], 1, SIZE, f) != SIZE)
            return -1;
        fclose(f);
    }
    ju_end();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ju_events_free(&EV);
    int rc = bvh_stop(&H);                       /* a clean stop: 0, no sanitizer report */
    for (int k = 0; k < LINKS; k++)
        free(ref_bytes[k]);
    if (rc != 0)
        fprintf(stderr, "test_prune: the daemon stopped with status %d\n", rc);
    return rc == 0 ? 0 : -1;
}

/* ---- prune at every position ---- */

static void prune_position(int pos, bool compress)
{
    char drive[32];
    snprintf(drive, sizeof(drive), "p%d", pos);
    struct chain c;
    build_chain(drive, &c, false, compress);
    int gone = pos - 1;
    if (gone == LINKS - 1) {
        char path[256];
        snprintf(path, sizeof(path), "/api/v1/backups/%s", c.bid[gone]);
        struct bvh_resp r;
        assert_int_equal(bvh_request(&H, "DELETE", path, NULL, 0, NULL, NULL, &r), 0);
        bvh_assert_error(&r, 409, "GenericError");
        bvh_resp_free(&r);
        check_intact(&c);
        char full[32];
        chain_backup(drive, "full", false, full);          /* a new chain closes this one */
    }
    prune(c.bid[gone]);
    check_pruned(&c, gone);
    if (compress) {                                 /* the merged child is compressed too */
        cJSON *b = backup_get(c.bid[gone + 1]);
        int rc = bvh_sh("qemu-img check -U -f qcow2 --output=json '%s/%s' | "
                        "grep -q '\"compressed-clusters\": [1-9]'", H.images, str_or(b, "file", ""));
        ju_check(rc == 0, "merged link %s has no compressed cluster", str_or(b, "file", ""));
        cJSON_Delete(b);
    }
    if (pos == 4) {                                 /* the merged newest link is extended */
        char next[32];
        io(drive, "[\"write -P 0x61 2M 64k\",\"flush\"]");
        chain_backup(drive, "incremental", false, next);
        cJSON *b = backup_get(next);
        ju_check_str_member("incremental after prune", b, "parent", c.bid[LINKS - 1]);
        ju_check_str_member("incremental after prune", b, "kind", "incremental");
        int rc = bvh_sh("qemu-img check -U -q -f qcow2 '%s/%s' >/dev/null", H.images,
                        str_or(b, "file", ""));
        ju_check(rc == 0, "qemu-img check of %s: exit %d", str_or(b, "file", ""), rc);
        rc = bvh_sh("qemu-img compare -U -q -f qcow2 -F qcow2 '%s/%s' '%s/%s.qcow2'", H.images,
                    str_or(b, "file", ""), H.images, drive);
        ju_check(rc == 0, "the incremental after the prune differs from the drive: exit %d", rc);
        cJSON_Delete(b);
    }
}

static void test_prune_1(void **state) { (void)state; prune_position(1, false); ju_end(); }
static void test_prune_2(void **state) { (void)state; prune_position(2, true); ju_end(); }
static void test_prune_3(void **state) { (void)state; prune_position(3, false); ju_end(); }
static void test_prune_4(void **state) { (void)state; prune_position(4, false); ju_end(); }
static void test_prune_5(void **state) { (void)state; prune_position(5, false); ju_end(); }

static void test_refusals(void **state)
{
    (void)state;
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "DELETE", "/api/v1/backups/b999999", NULL, 0, NULL, NULL,
                                 &r), 0);
    ju_check_int("DELETE of an unknown backup", 404, r.status);
    bvh_resp_free(&r);
    ju_end();
}

/* ---- crash at every step ---- */

/* The daemon exits by itself (the crash knob); reap it. */
static void wait_crash(void)
{
    int st = 0;
    pid_t p = 0;
    for (int i = 0; i < 1000 && p == 0; i++) {
        p = waitpid(H.pid, &st, WNOHANG);
        if (p == 0)
            usleep(20 * 1000);
    }
    assert_int_equal(p, H.pid);
    ju_check(WIFEXITED(st) && WEXITSTATUS(st) == CRASH_EXIT,
             "the daemon should have exited with %d at the crash point (status 0x%x)",
             CRASH_EXIT, st);
    H.pid = 0;
}

static void crash_at(int step)
{
    char drive[32];
    snprintf(drive, sizeof(drive), "k%d", step);
    struct chain c;
    build_chain(drive, &c, false, false);
    char n[8];
    snprintf(n, sizeof(n), "%d", step);
    setenv("BV_TEST_CRASH_AT", n, 1);
    assert_int_equal(bvh_restart(&H), 0);
    unsetenv("BV_TEST_CRASH_AT");
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", c.bid[2]);
    struct bvh_resp r;
    bvh_request(&H, "DELETE", path, NULL, 0, NULL, NULL, &r);   /* may die before answering */
    bvh_resp_free(&r);
    wait_crash();
    assert_int_equal(bvh_restart(&H), 0);
    events_restart();
    if (step <= 3) {                               /* before the switch: the old chain */
        check_intact(&c);
        prune(c.bid[2]);                           /* and the prune can be done again */
    }
    check_pruned(&c, 2);
}

static void test_crash_steps(void **state)
{
    (void)state;
    for (int step = 1; step <= 7; step++) {
        crash_at(step);
        if (ju_failures())
            fprintf(stderr, "test_prune: failures after crash step %d\n", step);
    }
    ju_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_prune_1),
        cmocka_unit_test(test_prune_2),
        cmocka_unit_test(test_prune_3),
        cmocka_unit_test(test_prune_4),
        cmocka_unit_test(test_prune_5),
        cmocka_unit_test(test_crash_steps),
    };
    if (getenv("BV_TEST_FILTER"))
        cmocka_set_test_filter(getenv("BV_TEST_FILTER"));
    return cmocka_run_group_tests_name("prune", tests, setup, teardown);
}
