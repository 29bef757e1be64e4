/*
 * Remote operations against a real single-node Ceph RADOS Gateway (the ctest fixture
 * rgw/start, tests/support/ceph-rgw.sh; skipped, 77, when none can be had):
 *   - policies' "replicate": validation (unknown remote, lock_days on a bucket without object
 *     lock, bad lock_mode, unknown field: 400), shown in GET;
 *   - tiering: a policy with replicate + keep_local=1 run three times leaves only the newest
 *     link on local disk (the older files are gone, "local":false), the remote holds every
 *     link and a manifest listing the three; an incremental over the tiered chain still works;
 *   - retention over a tiered chain (keep_last=2, keep_local=1): the full is pruned into its
 *     tiered child, which is uploaded merged and stays off local disk;
 *   - a kill between the tiering's catalog commit and its unlinks: the next start removes
 *     the files (backups.local read from the catalog with SQLite, read-only);
 *   - object lock: a policy with lock_days on a bucket made with object lock: the uploaded
 *     links carry a retention (S3 GET ?retention shows it, "locked_until" in the backup's
 *     remotes), a prune that would delete a locked object and the deletion of the remote are
 *     409 naming the date it unlocks;
 *   - prune of a replicated middle link: the merged child is on the remote under its new
 *     name, byte for byte the local file, the manifest lists it (and not the pruned link),
 *     the old objects are gone, the grandchild's object equals its rebased local file;
 *   - the same prune cut by a crash (BV_TEST_CRASH_AT=3: merged object uploaded, catalog not
 *     switched; =4: switched): after the restart the bucket holds the old chain exactly, or
 *     the new one (manifest rewritten, old objects deleted);
 *   - import on a fresh data directory: the drives come back "remote-only" with the same
 *     chains (ids, parents, kinds, checksums), local=false, copies present; a second import
 *     and an import into the original appliance are 409 naming the drives; a remote-only
 *     drive refuses I/O and backups (409); every imported point reads (GET …/data, from the
 *     bucket) exactly as the original appliance reads it, and the newest restores into a raw
 *     file equal to those bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include "../support/rgw_env.h"
#include "harness.h"
#include "jobs_util.h"
#include "s3_util.h"

#define WAIT_S 120

static struct rgw_env G;
static struct bvh H;
static struct ju_events EV;
static char bucket[64];


#define callh ju_json
#define call(...) callh(&H, __VA_ARGS__)

static const char *err_desc(const cJSON *j)
{
    return ju_str_or(cJSON_GetObjectItem(j, "error"), "desc", "");
}

/* ---- the bucket, directly (libcurl's SigV4) ---- */

/* GET (or HEAD) endpoint/path (path: "bucket/key?query"): the status; body (GET) into *out
 * (caller frees), size into *len. */
static long s3_raw(const char *path, bool head, char **out, size_t *len)
{
    return s3u_request(&G, head ? "HEAD" : "GET", path, NULL, 0, out, len);
}

static long s3_call(const char *bkt, const char *key, bool head, char **out, size_t *len)
{
    char path[900];
    snprintf(path, sizeof(path), "%s/%s", bkt, key);
    return s3_raw(path, head, out, len);
}

/* ---- helpers ---- */

static int setup(void **state)
{
    (void)state;
    ju_reset();
    if (rgw_env_start(&G) == 77)
        exit(77);
    snprintf(bucket, sizeof(bucket), "bv-ops-%d", (int)getpid());
    if (bvh_start(&H, NULL) < 0)
        return -1;
    ju_events_init(&EV, &H, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ju_events_free(&EV);
    int rc = bvh_stop(&H);
    rgw_env_stop(&G);
    return rc == 0 ? 0 : -1;
}

static void create_remote(struct bvh *h, const char *name, const char *bkt, bool create,
                          bool lock)
{
    cJSON_Delete(callh(h, 201, "POST", "/api/v1/remotes",
                       "{\"name\":\"%s\",\"endpoint\":\"%s\",\"bucket\":\"%s\",\"access_key\":"
                       "\"%s\",\"secret_key\":\"%s\",\"create_bucket\":%s,\"object_lock\":%s}",
                       name, G.endpoint, bkt, G.access_key, G.secret_key,
                       create ? "true" : "false", lock ? "true" : "false"));
}

static void wait_job(struct ju_events *ev, const char *job, const char *type)
{
    cJSON *e = ju_event_wait(ev, "BLOCK_JOB_COMPLETED", "device", job, WAIT_S);
    const cJSON *d = cJSON_GetObjectItem(e, "data");
    ju_check(e && !cJSON_GetObjectItem(d, "error"), "job %s failed: %s", job,
             ju_str_or(d, "error", "(no event)"));
    ju_check_str_member("BLOCK_JOB_COMPLETED", d, "type", type);
    cJSON_Delete(e);
}

static void backup(const char *drive, const char *kind, char bid[32])
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", drive);
    cJSON_Delete(ju_events_drain(&EV));     /* a policy run's backup job had the same id */
    cJSON *j = call(201, "POST", path, "{\"kind\":\"%s\"}", kind);
    snprintf(bid, 32, "%s", ju_str_or(cJSON_GetObjectItem(j, "backup"), "id", ""));
    wait_job(&EV, ju_str_or(cJSON_GetObjectItem(j, "job"), "id", ""), "backup");
    cJSON_Delete(j);
}

static void io(const char *drive, const char *cmds)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON_Delete(call(200, "POST", path, "{\"commands\":%s}", cmds));
}

/* Run the policy now and wait for its outcome. */
static void run_policy(const char *name, const char *want_outcome)
{
    cJSON *j = call(200, "GET", "/api/v1/events?after=latest", NULL);
    long long after = (long long)bvh_num(j, "next");
    cJSON_Delete(j);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/policies/%s/run", name);
    cJSON_Delete(call(202, "POST", path, NULL));
    char outcome[32] = "";
    for (int i = 0; i < 60 && !outcome[0]; i++) {
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld&name=POLICY_RUN&wait=5", after);
        j = call(200, "GET", path, NULL);
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "events")) {
            after = (long long)bvh_num(e, "seq");
            const cJSON *d = cJSON_GetObjectItem(e, "data");
            if (!strcmp(ju_str_or(d, "policy", ""), name) &&
                strcmp(ju_str_or(d, "status", ""), "started") != 0)
                snprintf(outcome, sizeof(outcome), "%s", ju_str_or(d, "status", ""));
        }
        cJSON_Delete(j);
    }
    if (strcmp(outcome, want_outcome) != 0) {
        snprintf(path, sizeof(path), "/api/v1/policies/%s/runs", name);
        j = call(200, "GET", path, NULL);
        char *t = cJSON_PrintUnformatted(j);
        ju_check(false, "policy %s: outcome '%s', expected '%s': %s", name, outcome,
                 want_outcome, t ? t : "");
        free(t);
        cJSON_Delete(j);
    }
}

static cJSON *get_backup(struct bvh *h, const char *bid)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    return callh(h, 200, "GET", path, NULL);
}

/* The object key of a backup (its file's name in <drive>/<chain>/). */
static void key_of(const cJSON *b, char *out, size_t len)
{
    const char *file = ju_str_or(b, "file", "");
    const char *base = strrchr(file, '/');
    snprintf(out, len, "%s/%s/%s", ju_str_or(b, "drive", ""), ju_str_or(b, "chain", ""),
             base ? base + 1 : file);
}

static bool local_exists(const cJSON *b)
{
    char path[1500];
    snprintf(path, sizeof(path), "%s/%s", H.images, ju_str_or(b, "file", ""));
    struct stat st;
    return stat(path, &st) == 0;
}

static char *read_local(const cJSON *b, size_t *len)
{
    char path[1500];
    snprintf(path, sizeof(path), "%s/%s", H.images, ju_str_or(b, "file", ""));
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, got, m);
    fclose(f);
    fclose(m);
    *len = n;
    return buf;
}

static cJSON *manifest(const char *bkt, const char *drive, const char *chain)
{
    char key[300], *text = NULL;
    size_t len = 0;
    snprintf(key, sizeof(key), "%s/%s/manifest.json", drive, chain);
    long st = s3_call(bkt, key, false, &text, &len);
    ju_check(st == 200, "manifest %s: HTTP %ld", key, st);
    cJSON *m = st == 200 && text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    return m;
}

/* backups.local of bid in h's catalog (read-only): 1, 0, or -1 when unreadable. */
static int catalog_local(struct bvh *h, const char *bid)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/catalog.db", h->dir);
    sqlite3 *db = NULL;
    int v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "SELECT local FROM backups WHERE id = ?1", -1, &st, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_text(st, 1, bid, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

/* Download the objects of full and mid into a temporary folder beside a copy of the local
 * link top, and read top's point there with qemu-io: the zeros written at 0 (over the full's
 * 0x11), the full's data after them, the new data at 2M.  Skipped without qemu-io. */
static void check_chain_folder(const char *full, const char *mid, const char *top)
{
    if (system("qemu-io --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "check_chain_folder: NOTE: no qemu-io: the folder is not read\n");
        return;
    }
    char dir[] = "/tmp/bv-fold-XXXXXX";
    ju_check(mkdtemp(dir) != NULL, "mkdtemp");
    const char *ids[3] = { full, mid, top };
    char topfile[900] = "";
    for (int i = 0; i < 3; i++) {
        cJSON *b = get_backup(&H, ids[i]);
        char key[600], *data = NULL, path[900];
        size_t len = 0;
        const char *file = ju_str_or(b, "file", "");
        const char *base = strrchr(file, '/');
        snprintf(path, sizeof(path), "%s/%s", dir, base ? base + 1 : file);
        if (i < 2) {
            key_of(b, key, sizeof(key));
            ju_check(s3_call(bucket, key, false, &data, &len) == 200, "GET %s", key);
        } else {
            data = read_local(b, &len);
            snprintf(topfile, sizeof(topfile), "%s", path);
        }
        FILE *f = fopen(path, "wb");
        ju_check(f && data && fwrite(data, 1, len, f) == len, "cannot write %s", path);
        if (f)
            fclose(f);
        free(data);
        cJSON_Delete(b);
    }
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "qemu-io -r -f qcow2 -c 'read -P 0 0 64k' -c 'read -P 0x11 64k "
             "64k' -c 'read -P 0x41 2M 64k' -c 'read -P 0x31 6M 64k' '%s' 2>&1", topfile);
    FILE *p = popen(cmd, "r");
    char out[4096] = "";
    size_t n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    ju_check(st == 0 && !strstr(out, "failed") && !strstr(out, "Could not"),
             "qemu-io over the chain folder (%s): %s", topfile, out);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

/* ---- tests ---- */

static void test_policy_validation(void **state)
{
    (void)state;
    create_remote(&H, "r1", bucket, true, false);
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":\"8M\"}"));
    static const char *const bad[][2] = {
        { "{\"remote\":\"nope\"}", "unknown remote 'nope'" },
        { "{\"remote\":\"r1\",\"lock_days\":3}", "not made with object lock" },
        { "{\"remote\":\"r1\",\"lock_mode\":\"forever\"}", "lock_mode" },
        { "{\"remote\":\"r1\",\"keep_local\":-1}", "keep_local" },
        { "{\"remote\":\"r1\",\"x\":1}", "x" },
        { "{\"keep_local\":1}", "remote" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *j = call(400, "POST", "/api/v1/policies",
                        "{\"name\":\"bad\",\"drives\":[\"d0\"],\"schedule\":\"0 0 1 1 *\","
                        "\"retention\":{\"keep_last\":9},\"replicate\":%s}", bad[i][0]);
        ju_check(strstr(err_desc(j), bad[i][1]) != NULL, "replicate %s: desc '%s' lacks '%s'",
                 bad[i][0], err_desc(j), bad[i][1]);
        cJSON_Delete(j);
    }
    cJSON_Delete(call(404, "GET", "/api/v1/policies/bad", NULL));
    ju_end();
}

static char chain0[32], ids0[3][32], sums0[3][80];

static void test_tiering(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/policies",
                      "{\"name\":\"tier\",\"drives\":[\"d0\"],\"schedule\":\"0 0 1 1 *\","
                      "\"retention\":{\"keep_last\":9},\"replicate\":{\"remote\":\"r1\","
                      "\"keep_local\":1}}"));
    cJSON *j = call(200, "GET", "/api/v1/policies/tier", NULL);
    const cJSON *rp = cJSON_GetObjectItem(j, "replicate");
    ju_check_str_member("policy replicate", rp, "remote", "r1");
    ju_check_num_member("policy replicate", rp, "keep_local", 1);
    ju_check(!cJSON_GetObjectItem(rp, "lock_days"), "lock_days shown although not set");
    cJSON_Delete(j);

    static const char *const writes[3] = {
        "[\"write -P 0x11 0 1M\",\"write -P 0x12 4M 64k\"]",
        "[\"write -P 0x21 1M 128k\"]",
        "[\"write -P 0x31 6M 256k\"]",
    };
    for (int i = 0; i < 3; i++) {
        io("d0", writes[i]);
        run_policy("tier", "ok");
    }
    j = call(200, "GET", "/api/v1/drives/d0/backups", NULL);
    const cJSON *chains = cJSON_GetObjectItem(j, "chains");
    ju_check_int("chains of d0", 1, cJSON_GetArraySize(chains));
    const cJSON *bs = cJSON_GetObjectItem(cJSON_GetArrayItem(chains, 0), "backups");
    ju_check_int("backups of d0", 3, cJSON_GetArraySize(bs));
    for (int i = 0; i < 3 && i < cJSON_GetArraySize(bs); i++) {
        const cJSON *b = cJSON_GetArrayItem(bs, i);
        snprintf(ids0[i], sizeof(ids0[i]), "%s", ju_str_or(b, "id", ""));
        snprintf(sums0[i], sizeof(sums0[i]), "%s", ju_str_or(b, "checksum", ""));
        snprintf(chain0, sizeof(chain0), "%s", ju_str_or(b, "chain", ""));
        bool want_local = i == 2;
        ju_check_int("backups.local in the catalog", want_local, catalog_local(&H, ids0[i]));
        ju_check(bvh_bool(b, "local") == want_local, "%s: local is %d, expected %d", ids0[i],
                 bvh_bool(b, "local"), want_local);
        ju_check(local_exists(b) == want_local, "%s: local file %s", ids0[i],
                 want_local ? "missing" : "still there");
        const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(b, "remotes"), 0);
        ju_check_str_member("remotes[0]", r0, "remote", "r1");
        ju_check_str_member("remotes[0]", r0, "state", "present");
        char key[600];
        key_of(b, key, sizeof(key));
        size_t len = 0;
        ju_check(s3_call(bucket, key, true, NULL, &len) == 200 && len > 0,
                 "object %s is not on the remote", key);
    }
    cJSON_Delete(j);
    cJSON *m = manifest(bucket, "d0", chain0);
    const cJSON *links = cJSON_GetObjectItem(m, "links");
    ju_check_int("manifest links", 3, cJSON_GetArraySize(links));
    for (int i = 0; i < 3 && i < cJSON_GetArraySize(links); i++)
        ju_check_str_member("manifest link", cJSON_GetArrayItem(links, i), "id", ids0[i]);
    cJSON_Delete(m);

    /* the chain goes on over its tiered links: zeros written over the full's data must be
     * recorded in the new link (checked with qemu-io below) */
    char b4[32];
    io("d0", "[\"write -z 0 64k\",\"write -P 0x41 2M 64k\"]");
    backup("d0", "incremental", b4);
    j = get_backup(&H, b4);
    ju_check_str_member("incremental over tiered links", j, "status", "complete");
    ju_check_str_member("incremental over tiered links", j, "parent", ids0[2]);
    cJSON_Delete(j);

    /* prune of the tiered middle link: L and its ancestor are fetched back for the merge,
     * the merged child goes up before the old objects are deleted, the fetched files leave */
    char oldkey[2][600];
    for (int i = 1; i <= 2; i++) {
        j = get_backup(&H, ids0[i]);
        key_of(j, oldkey[i - 1], sizeof(oldkey[i - 1]));
        cJSON_Delete(j);
    }
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", ids0[1]);
    j = call(201, "DELETE", path, NULL);
    wait_job(&EV, ju_str_or(j, "id", ""), "prune");
    cJSON_Delete(j);
    cJSON_Delete(call(404, "GET", path, NULL));
    j = get_backup(&H, ids0[2]);
    ju_check_str_member("merged child of a tiered link", j, "parent", ids0[0]);
    ju_check_str_member("merged child of a tiered link", j, "checksum", sums0[2]);
    ju_check(bvh_bool(j, "local") && local_exists(j), "the merged child %s is not local",
             ids0[2]);
    char newkey[600];
    key_of(j, newkey, sizeof(newkey));
    size_t llen = 0, olen = 0;
    char *want = read_local(j, &llen), *obj = NULL;
    ju_check(s3_call(bucket, newkey, false, &obj, &olen) == 200 && want && olen == llen &&
             memcmp(obj, want, llen) == 0, "merged object %s differs from the local file",
             newkey);
    free(want);
    free(obj);
    cJSON_Delete(j);
    j = get_backup(&H, ids0[0]);
    ju_check(!local_exists(j), "the fetched full %s stayed on local disk", ids0[0]);
    ju_check_int("backups.local of the full after the prune", 0, catalog_local(&H, ids0[0]));
    cJSON_Delete(j);
    for (int i = 0; i < 2; i++)
        ju_check(s3_call(bucket, oldkey[i], true, NULL, NULL) == 404,
                 "old object %s is still on the remote", oldkey[i]);
    m = manifest(bucket, "d0", chain0);
    links = cJSON_GetObjectItem(m, "links");
    ju_check_int("manifest links after the prune", 2, cJSON_GetArraySize(links));
    ju_check_str_member("manifest link 0", cJSON_GetArrayItem(links, 0), "id", ids0[0]);
    ju_check_str_member("manifest link 1", cJSON_GetArrayItem(links, 1), "id", ids0[2]);
    ju_check_str_member("manifest link 1", cJSON_GetArrayItem(links, 1), "key", newkey);
    cJSON_Delete(m);
    /* what the import test expects of d0 */
    snprintf(ids0[1], sizeof(ids0[1]), "%s", ids0[2]);
    snprintf(sums0[1], sizeof(sums0[1]), "%s", sums0[2]);

    /* the chain as a folder, from the bucket plus the new local link, read by qemu-io */
    check_chain_folder(ids0[0], ids0[2], b4);

    /* the remote holds the only copy of two links */
    j = call(409, "DELETE", "/api/v1/remotes/r1", NULL);
    cJSON_Delete(j);
    ju_end();
}

/* Killed between the tiering's catalog commit and the unlinks: the next start removes the
 * files the catalog already says are remote-only. */
static void test_tiering_crash(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d3\",\"format\":\"qcow2\",\"size\":\"4M\"}"));
    cJSON_Delete(call(201, "POST", "/api/v1/policies",
                      "{\"name\":\"tier3\",\"drives\":[\"d3\"],\"schedule\":\"0 0 1 1 *\","
                      "\"retention\":{\"keep_last\":9},\"replicate\":{\"remote\":\"r1\","
                      "\"keep_local\":1}}"));
    io("d3", "[\"write -P 0x71 0 1M\"]");
    run_policy("tier3", "ok");                   /* one link: nothing to tier */
    cJSON *j = call(200, "GET", "/api/v1/drives/d3/backups", NULL);
    const cJSON *b0 = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "chains"), 0), "backups"),
        0);
    char first[32], local[1500];
    snprintf(first, sizeof(first), "%s", ju_str_or(b0, "id", ""));
    snprintf(local, sizeof(local), "%s/%s", H.images, ju_str_or(b0, "file", ""));
    cJSON_Delete(j);
    struct stat st;
    ju_check(stat(local, &st) == 0, "%s: the only link is not local", first);

    setenv("BV_TEST_TIER_CRASH", "1", 1);
    assert_int_equal(bvh_restart(&H), 0);
    unsetenv("BV_TEST_TIER_CRASH");
    io("d3", "[\"write -P 0x72 1M 1M\"]");
    struct bvh_resp r;
    bvh_request(&H, "POST", "/api/v1/policies/tier3/run", NULL, 0, NULL, NULL, &r);
    bvh_resp_free(&r);
    int status = 0;
    pid_t p = 0;
    for (int i = 0; i < 3000 && p == 0; i++) {
        p = waitpid(H.pid, &status, WNOHANG);
        if (p == 0)
            usleep(20 * 1000);
    }
    assert_int_equal(p, H.pid);
    ju_check(WIFEXITED(status) && WEXITSTATUS(status) == 86, "the daemon should have died in "
             "the tiering (status 0x%x)", status);
    H.pid = 0;
    ju_check_int("backups.local after the commit", 0, catalog_local(&H, first));
    ju_check(stat(local, &st) == 0, "%s: the file went before the crash point", first);
    assert_int_equal(bvh_restart(&H), 0);
    ju_events_free(&EV);
    ju_events_init(&EV, &H, 0);
    ju_check(stat(local, &st) != 0, "%s: the start did not finish the tiering (%s is there)",
             first, local);
    j = get_backup(&H, first);
    ju_check(!bvh_bool(j, "local"), "%s: local after the recovery", first);
    ju_check_str_member("remotes[0]", cJSON_GetArrayItem(cJSON_GetObjectItem(j, "remotes"), 0),
                        "state", "present");
    cJSON_Delete(j);
    cJSON_Delete(call(204, "DELETE", "/api/v1/policies/tier3", NULL));
    ju_end();
}

/* Retention over a tiered chain: keep_last=2 with keep_local=1; the third run prunes the
 * full (tiered) into its tiered child, which stays remote-only. */
static void test_retention_tiered(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d4\",\"format\":\"qcow2\",\"size\":\"4M\"}"));
    cJSON_Delete(call(201, "POST", "/api/v1/policies",
                      "{\"name\":\"ret\",\"drives\":[\"d4\"],\"schedule\":\"0 0 1 1 *\","
                      "\"retention\":{\"keep_last\":2},\"replicate\":{\"remote\":\"r1\","
                      "\"keep_local\":1}}"));
    char ids[3][32];
    for (int i = 0; i < 3; i++) {
        char cmd[120];
        snprintf(cmd, sizeof(cmd), "[\"write -P %d %dk 128k\"]", 0x81 + i, 512 * i);
        io("d4", cmd);
        run_policy("ret", "ok");
        cJSON *j = call(200, "GET", "/api/v1/policies/ret/runs", NULL);
        const cJSON *made = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "runs"),
                                                                   0), "backups_made");
        snprintf(ids[i], sizeof(ids[i]), "%s", cJSON_IsString(cJSON_GetArrayItem(made, 0))
                 ? cJSON_GetArrayItem(made, 0)->valuestring : "");
        if (i == 2) {
            const cJSON *pr = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "runs"),
                                                                     0), "backups_pruned");
            ju_check(cJSON_GetArraySize(pr) == 1 &&
                     !strcmp(cJSON_GetArrayItem(pr, 0)->valuestring, ids[0]),
                     "the third run did not prune %s", ids[0]);
        }
        cJSON_Delete(j);
    }
    cJSON *j = call(200, "GET", "/api/v1/drives/d4/backups", NULL);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "chains"), 0);
    const cJSON *bs = cJSON_GetObjectItem(ch, "backups");
    ju_check_int("backups of d4 after retention", 2, cJSON_GetArraySize(bs));
    const cJSON *b1 = cJSON_GetArrayItem(bs, 0), *b2 = cJSON_GetArrayItem(bs, 1);
    ju_check_str_member("merged full", b1, "id", ids[1]);
    ju_check_str_member("merged full", b1, "kind", "full");
    ju_check(!bvh_bool(b1, "local") && !local_exists(b1), "the merged full %s is on local disk",
             ids[1]);
    ju_check_int("backups.local of the merged full", 0, catalog_local(&H, ids[1]));
    ju_check_str_member("newest", b2, "id", ids[2]);
    ju_check(bvh_bool(b2, "local") && local_exists(b2), "the newest %s is not local", ids[2]);
    char k1[600], k2[600];
    key_of(b1, k1, sizeof(k1));
    key_of(b2, k2, sizeof(k2));
    cJSON *m = manifest(bucket, "d4", ju_str_or(b1, "chain", ""));
    const cJSON *links = cJSON_GetObjectItem(m, "links");
    ju_check_int("manifest links of d4", 2, cJSON_GetArraySize(links));
    ju_check_str_member("manifest link 0", cJSON_GetArrayItem(links, 0), "key", k1);
    ju_check_str_member("manifest link 1", cJSON_GetArrayItem(links, 1), "key", k2);
    cJSON_Delete(m);
    ju_check(s3_call(bucket, k1, true, NULL, NULL) == 200, "merged object %s missing", k1);
    /* the newest's object follows its rebased header */
    size_t llen = 0, olen = 0;
    char *want = read_local(b2, &llen), *obj = NULL;
    ju_check(s3_call(bucket, k2, false, &obj, &olen) == 200 && want && olen == llen &&
             memcmp(obj, want, llen) == 0, "object %s differs from its rebased file", k2);
    free(want);
    free(obj);
    cJSON_Delete(j);
    cJSON_Delete(call(204, "DELETE", "/api/v1/policies/ret", NULL));
    ju_end();
}

static void test_object_lock(void **state)
{
    (void)state;
    char lbucket[80];
    snprintf(lbucket, sizeof(lbucket), "%s-lock", bucket);
    create_remote(&H, "lk", lbucket, true, true);
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d1\",\"format\":\"qcow2\",\"size\":\"4M\"}"));
    cJSON_Delete(call(201, "POST", "/api/v1/policies",
                      "{\"name\":\"locked\",\"drives\":[\"d1\"],\"schedule\":\"0 0 1 1 *\","
                      "\"retention\":{\"keep_last\":9},\"replicate\":{\"remote\":\"lk\","
                      "\"lock_days\":2}}"));
    cJSON *j = call(200, "GET", "/api/v1/policies/locked", NULL);
    ju_check_str_member("policy replicate", cJSON_GetObjectItem(j, "replicate"), "lock_mode",
                        "governance");
    cJSON_Delete(j);
    io("d1", "[\"write -P 0x51 0 512k\"]");
    run_policy("locked", "ok");
    io("d1", "[\"write -P 0x52 1M 512k\"]");
    run_policy("locked", "ok");
    j = call(200, "GET", "/api/v1/drives/d1/backups", NULL);
    const cJSON *bs = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "chains"), 0),
                                          "backups");
    ju_check_int("backups of d1", 2, cJSON_GetArraySize(bs));
    char first[32], until[40] = "";
    snprintf(first, sizeof(first), "%s", ju_str_or(cJSON_GetArrayItem(bs, 0), "id", ""));
    time_t now = time(NULL);
    for (int i = 0; i < cJSON_GetArraySize(bs); i++) {
        const cJSON *b = cJSON_GetArrayItem(bs, i);
        const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(b, "remotes"), 0);
        const char *lu = ju_str_or(r0, "locked_until", "");
        struct tm tm = { 0 };
        ju_check(strptime(lu, "%Y-%m-%dT%H:%M:%S", &tm) != NULL, "%s: locked_until '%s'",
                 ju_str_or(b, "id", ""), lu);
        long long d = (long long)timegm(&tm) - (long long)now;
        ju_check(d > 2 * 86400 - 600 && d <= 2 * 86400 + 5, "%s: locked until %s, %lld s from "
                 "now (expected 2 days)", ju_str_or(b, "id", ""), lu, d);
        if (i == 0)
            snprintf(until, sizeof(until), "%s", lu);
        /* the gateway has the retention */
        char key[600], q[700], *ret = NULL;
        key_of(b, key, sizeof(key));
        snprintf(q, sizeof(q), "%s?retention=", key);
        size_t len = 0;
        long st = s3_call(lbucket, q, false, &ret, &len);
        ju_check(st == 200 && ret && strstr(ret, "GOVERNANCE") && strstr(ret, "RetainUntilDate"),
                 "%s: GET ?retention: HTTP %ld %s", key, st, ret ? ret : "");
        free(ret);
    }
    cJSON_Delete(j);

    /* the first link (the full) has a child: its prune would delete two locked objects */
    char b3[32];
    io("d1", "[\"write -P 0x53 2M 64k\"]");
    backup("d1", "incremental", b3);
    char path[128], date[11];
    snprintf(date, sizeof(date), "%.10s", until);
    snprintf(path, sizeof(path), "/api/v1/backups/%s", first);
    j = call(409, "DELETE", path, NULL);
    ju_check(strstr(err_desc(j), date) != NULL && strstr(err_desc(j), "object lock") != NULL,
             "prune of a locked link: desc '%s' lacks the date %s", err_desc(j), date);
    cJSON_Delete(j);
    j = get_backup(&H, first);
    ju_check_str_member("the locked link after the refused prune", j, "status", "complete");
    cJSON_Delete(j);
    j = call(409, "DELETE", "/api/v1/remotes/lk", NULL);
    ju_check(strstr(err_desc(j), "Policy 'locked'") != NULL, "delete of a remote a policy "
             "replicates to: desc '%s'", err_desc(j));
    cJSON_Delete(j);
    cJSON_Delete(call(204, "DELETE", "/api/v1/policies/locked", NULL));
    j = call(409, "DELETE", "/api/v1/remotes/lk", NULL);
    ju_check(strstr(err_desc(j), date) != NULL, "delete of a remote with locked objects: "
             "desc '%s' lacks the date %s", err_desc(j), date);
    cJSON_Delete(j);
    ju_end();
}

static char chain2[32], ids2[3][32], sums2[3][80];

/* GET ?retention of a key in bucket bkt: 1 with mode and date when it has one, else 0. */
static int retention_of(const char *bkt, const char *key, char *mode, size_t ml, char *until,
                        size_t ul)
{
    char q[800], *xml = NULL;
    size_t len = 0;
    snprintf(q, sizeof(q), "%s?retention=", key);
    long st = s3_call(bkt, q, false, &xml, &len);
    int got = 0;
    const char *m = xml ? strstr(xml, "<Mode>") : NULL;
    const char *u = xml ? strstr(xml, "<RetainUntilDate>") : NULL;
    if (st == 200 && m && u) {
        snprintf(mode, ml, "%.*s", (int)strcspn(m + 6, "<"), m + 6);
        snprintf(until, ul, "%.*s", (int)strcspn(u + 17, "<"), u + 17);
        got = 1;
    }
    free(xml);
    return got;
}

/* A prune whose removed link and child are not locked but whose grandchild is: the
 * grandchild is re-uploaded (its header names the merged link) as a new version of its key,
 * and that version carries the grandchild's retention (mode and date) as before. */
static void test_prune_locked_grandchild(void **state)
{
    (void)state;
    char lbucket[80];
    snprintf(lbucket, sizeof(lbucket), "%s-glock", bucket);
    create_remote(&H, "gl", lbucket, true, true);
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d5\",\"format\":\"qcow2\",\"size\":\"4M\"}"));
#define GL_POLICY "{\"name\":\"gl\",\"drives\":[\"d5\"],\"schedule\":\"0 0 1 1 *\"," \
                  "\"retention\":{\"keep_last\":9},\"replicate\":{\"remote\":\"gl\"%s}}"
    cJSON_Delete(call(201, "POST", "/api/v1/policies", GL_POLICY, ""));
    io("d5", "[\"write -P 0x61 0 512k\"]");
    run_policy("gl", "ok");                                 /* b0: full, not locked */
    io("d5", "[\"write -P 0x62 1M 512k\"]");
    run_policy("gl", "ok");                                 /* b1: not locked */
    cJSON_Delete(call(200, "PUT", "/api/v1/policies/gl", GL_POLICY,
                      ",\"lock_days\":1,\"lock_mode\":\"compliance\""));
    io("d5", "[\"write -P 0x63 2M 512k\"]");
    run_policy("gl", "ok");                                 /* b2: locked, compliance */
    char b3[32];
    io("d5", "[\"write -P 0x64 3M 64k\"]");
    backup("d5", "incremental", b3);                        /* the chain goes on */
    cJSON *j = call(200, "GET", "/api/v1/drives/d5/backups", NULL);
    const cJSON *bs = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "chains"), 0),
                                          "backups");
    ju_check_int("links of d5", 4, cJSON_GetArraySize(bs));
    char first[32], gkey[600], mode0[32] = "", until0[64] = "";
    snprintf(first, sizeof(first), "%s", ju_str_or(cJSON_GetArrayItem(bs, 0), "id", ""));
    key_of(cJSON_GetArrayItem(bs, 2), gkey, sizeof(gkey));
    cJSON_Delete(j);
    ju_check(retention_of(lbucket, gkey, mode0, sizeof(mode0), until0, sizeof(until0)) &&
             !strcmp(mode0, "COMPLIANCE"), "the grandchild %s is locked before the prune (%s)",
             gkey, mode0);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", first);
    j = call(201, "DELETE", path, NULL);
    wait_job(&EV, ju_str_or(j, "id", ""), "prune");
    cJSON_Delete(j);
    char mode1[32] = "", until1[64] = "";
    ju_check(retention_of(lbucket, gkey, mode1, sizeof(mode1), until1, sizeof(until1)),
             "the re-uploaded grandchild %s has no retention", gkey);
    ju_check_str("the re-uploaded grandchild's lock mode", mode0, mode1);
    ju_check_str("the re-uploaded grandchild's lock date", until0, until1);
    /* and it is the new version: its header names the merged link, not the removed one */
    char *obj = NULL;
    size_t olen = 0;
    ju_check(s3_call(lbucket, gkey, false, &obj, &olen) == 200 && olen > 0,
             "GET the grandchild %s", gkey);
    j = call(200, "GET", "/api/v1/drives/d5/backups", NULL);
    bs = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "chains"), 0), "backups");
    const char *merged = ju_str_or(cJSON_GetArrayItem(bs, 0), "file", "");
    const char *mbase = strrchr(merged, '/');
    mbase = mbase ? mbase + 1 : merged;
    ju_check(obj && memmem(obj, olen < 65536 ? olen : 65536, mbase, strlen(mbase)) != NULL,
             "the grandchild's object names the merged link '%s' as its backing file", mbase);
    free(obj);
    cJSON_Delete(j);
    ju_end();
}

static void test_prune_replicated(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d2\",\"format\":\"qcow2\",\"size\":\"8M\"}"));
    char b[4][32];
    io("d2", "[\"write -P 0x61 0 2M\"]");
    backup("d2", "full", b[0]);
    io("d2", "[\"write -P 0x62 1M 2M\"]");
    backup("d2", "incremental", b[1]);
    io("d2", "[\"write -P 0x63 2M 1M\"]");
    backup("d2", "incremental", b[2]);
    io("d2", "[\"write -P 0x64 5M 64k\"]");
    backup("d2", "incremental", b[3]);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/replicate", b[3]);
    cJSON *j = call(201, "POST", path, "{\"remote\":\"r1\"}");
    wait_job(&EV, ju_str_or(j, "id", ""), "replicate");
    cJSON_Delete(j);
    char oldkey[2][600];
    for (int i = 1; i <= 2; i++) {
        j = get_backup(&H, b[i]);
        key_of(j, oldkey[i - 1], sizeof(oldkey[i - 1]));
        snprintf(chain2, sizeof(chain2), "%s", ju_str_or(j, "chain", ""));
        cJSON_Delete(j);
    }

    /* prune the middle link b[1]: b[2] is merged (a new file), b[3] rebased onto it */
    snprintf(path, sizeof(path), "/api/v1/backups/%s", b[1]);
    j = call(201, "DELETE", path, NULL);
    wait_job(&EV, ju_str_or(j, "id", ""), "prune");
    cJSON_Delete(j);
    cJSON_Delete(call(404, "GET", path, NULL));

    cJSON *c = get_backup(&H, b[2]);
    ju_check_str_member("merged child", c, "parent", b[0]);
    char newkey[600];
    key_of(c, newkey, sizeof(newkey));
    ju_check(strcmp(newkey, oldkey[1]) != 0, "the merged child kept its old name %s", newkey);
    ju_check_str_member("merged child remotes[0]",
                        cJSON_GetArrayItem(cJSON_GetObjectItem(c, "remotes"), 0), "state",
                        "present");
    size_t llen = 0, olen = 0;
    char *want = read_local(c, &llen), *obj = NULL;
    ju_check(s3_call(bucket, newkey, false, &obj, &olen) == 200 && want && olen == llen &&
             memcmp(obj, want, llen) == 0, "the merged object %s differs from the local file "
             "(%zu vs %zu bytes)", newkey, olen, llen);
    free(want);
    free(obj);
    cJSON_Delete(c);
    /* the grandchild's object follows its rebased header */
    cJSON *g = get_backup(&H, b[3]);
    char gkey[600];
    key_of(g, gkey, sizeof(gkey));
    want = read_local(g, &llen);
    obj = NULL;
    ju_check(s3_call(bucket, gkey, false, &obj, &olen) == 200 && want && olen == llen &&
             memcmp(obj, want, llen) == 0, "the grandchild's object %s differs from its "
             "rebased local file", gkey);
    free(want);
    free(obj);
    cJSON_Delete(g);
    for (int i = 0; i < 2; i++)
        ju_check(s3_call(bucket, oldkey[i], true, NULL, NULL) == 404,
                 "old object %s is still on the remote", oldkey[i]);
    cJSON *m = manifest(bucket, "d2", chain2);
    const cJSON *links = cJSON_GetObjectItem(m, "links");
    ju_check_int("manifest links after the prune", 3, cJSON_GetArraySize(links));
    const char *want_ids[3] = { b[0], b[2], b[3] };
    for (int i = 0; i < 3 && i < cJSON_GetArraySize(links); i++) {
        const cJSON *l = cJSON_GetArrayItem(links, i);
        ju_check_str_member("manifest link", l, "id", want_ids[i]);
        if (i == 1) {
            ju_check_str_member("manifest merged link", l, "key", newkey);
            ju_check_str_member("manifest merged link", l, "parent", b[0]);
        }
    }
    cJSON_Delete(m);
    for (int i = 0; i < 3; i++) {
        snprintf(ids2[i], sizeof(ids2[i]), "%s", want_ids[i]);
        j = get_backup(&H, want_ids[i]);
        snprintf(sums2[i], sizeof(sums2[i]), "%s", ju_str_or(j, "checksum", ""));
        cJSON_Delete(j);
    }
    ju_end();
}

/* The keys under prefix in the test's bucket (ListObjectsV2), as one "\n"-joined text. */
static char *list_keys(const char *prefix)
{
    char q[400], *xml = NULL;
    size_t len = 0;
    char *esc = curl_easy_escape(NULL, prefix, 0);     /* SigV4 signs the query as given */
    snprintf(q, sizeof(q), "%s?list-type=2&prefix=%s", bucket, esc ? esc : "");
    curl_free(esc);
    long st = s3_raw(q, false, &xml, &len);
    ju_check(st == 200, "listing %s: HTTP %ld", prefix, st);
    char *out = calloc(1, len + 2);
    for (const char *p = xml ? strstr(xml, "<Key>") : NULL; p && out;
         p = strstr(p + 1, "<Key>")) {
        const char *e = strstr(p, "</Key>");
        if (!e)
            break;
        strncat(out, p + 5, (size_t)(e - p - 5));
        strcat(out, "\n");
    }
    free(xml);
    return out;
}

/* Prune of a replicated middle link cut by a crash: at step 3 (the merged file written and
 * uploaded, the catalog not switched) the next start deletes the uploaded merged object and
 * the remote holds the old chain; at step 4 (switched) the next start rewrites the manifest
 * and deletes the old objects. */
static void crash_prune(int step)
{
    char drive[16];
    snprintf(drive, sizeof(drive), "k%d", step);
    char path[160];
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"%s\",\"format\":\"qcow2\",\"size\":\"4M\"}", drive));
    char b[3][32];
    for (int i = 0; i < 3; i++) {
        char cmd[100];
        snprintf(cmd, sizeof(cmd), "[\"write -P %d %dk 256k\"]", 0x91 + i, 768 * i);
        io(drive, cmd);
        backup(drive, i ? "incremental" : "full", b[i]);
    }
    snprintf(path, sizeof(path), "/api/v1/backups/%s/replicate", b[2]);
    cJSON *j = call(201, "POST", path, "{\"remote\":\"r1\"}");
    wait_job(&EV, ju_str_or(j, "id", ""), "replicate");
    cJSON_Delete(j);
    char keys[3][600], chain[32];
    for (int i = 0; i < 3; i++) {
        j = get_backup(&H, b[i]);
        key_of(j, keys[i], sizeof(keys[i]));
        snprintf(chain, sizeof(chain), "%s", ju_str_or(j, "chain", ""));
        cJSON_Delete(j);
    }
    char prefix[100];
    snprintf(prefix, sizeof(prefix), "%s/%s/", drive, chain);
    char *before = list_keys(prefix);

    char n[8];
    snprintf(n, sizeof(n), "%d", step);
    setenv("BV_TEST_CRASH_AT", n, 1);
    assert_int_equal(bvh_restart(&H), 0);
    unsetenv("BV_TEST_CRASH_AT");
    snprintf(path, sizeof(path), "/api/v1/backups/%s", b[1]);
    struct bvh_resp r;
    bvh_request(&H, "DELETE", path, NULL, 0, NULL, NULL, &r);
    bvh_resp_free(&r);
    int status = 0;
    pid_t p = 0;
    for (int i = 0; i < 3000 && p == 0; i++) {
        p = waitpid(H.pid, &status, WNOHANG);
        if (p == 0)
            usleep(20 * 1000);
    }
    assert_int_equal(p, H.pid);
    ju_check(WIFEXITED(status) && WEXITSTATUS(status) == 86, "crash %d: daemon status 0x%x",
             step, status);
    H.pid = 0;
    if (step == 3) {
        char *mid = list_keys(prefix);
        ju_check(strlen(mid) > strlen(before), "crash 3: the merged object was not uploaded "
                 "before the crash point (%s)", mid);
        free(mid);
    }
    assert_int_equal(bvh_restart(&H), 0);
    ju_events_free(&EV);
    ju_events_init(&EV, &H, 0);
    char *after = list_keys(prefix);
    cJSON *m = manifest(bucket, drive, chain);
    const cJSON *links = cJSON_GetObjectItem(m, "links");
    if (step == 3) {
        ju_check(strcmp(after, before) == 0, "crash 3: the bucket holds\n%swhere it held\n%s",
                 after, before);
        ju_check_int("crash 3: manifest links", 3, cJSON_GetArraySize(links));
        j = get_backup(&H, b[1]);
        ju_check_str_member("crash 3: the link to prune", j, "status", "complete");
        cJSON_Delete(j);
    } else {
        ju_check_int("crash 4: manifest links", 2, cJSON_GetArraySize(links));
        cJSON_Delete(call(404, "GET", path, NULL));
        j = get_backup(&H, b[2]);
        char nk[600];
        key_of(j, nk, sizeof(nk));
        cJSON_Delete(j);
        ju_check_str_member("crash 4: manifest merged link", cJSON_GetArrayItem(links, 1), "key",
                            nk);
        ju_check(s3_call(bucket, nk, true, NULL, NULL) == 200, "crash 4: %s missing", nk);
        for (int i = 1; i < 3; i++)
            ju_check(s3_call(bucket, keys[i], true, NULL, NULL) == 404,
                     "crash 4: old object %s still there", keys[i]);
    }
    cJSON_Delete(m);
    free(before);
    free(after);
}

static void test_prune_crash(void **state)
{
    (void)state;
    crash_prune(3);
    crash_prune(4);
    ju_end();
}

static void check_imported_chain(struct bvh *h, const char *drive, const char *chain,
                                 char ids[3][32], char sums[3][80], int n)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", drive);
    cJSON *j = callh(h, 200, "GET", path, NULL);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "chains"), 0);
    ju_check_str_member("imported chain", ch, "id", chain);
    const cJSON *bs = cJSON_GetObjectItem(ch, "backups");
    ju_check_int("imported backups", n, cJSON_GetArraySize(bs));
    for (int i = 0; i < n && i < cJSON_GetArraySize(bs); i++) {
        const cJSON *b = cJSON_GetArrayItem(bs, i);
        ju_check_str_member("imported backup", b, "id", ids[i]);
        ju_check_str_member("imported backup", b, "checksum", sums[i]);
        ju_check_str_member("imported backup", b, "status", "complete");
        ju_check_str_member("imported backup", b, "kind", i == 0 ? "full" : "incremental");
        if (i == 0)
            ju_check(cJSON_IsNull(cJSON_GetObjectItem(b, "parent")), "%s has a parent", ids[i]);
        else
            ju_check_str_member("imported backup", b, "parent", ids[i - 1]);
        ju_check(!bvh_bool(b, "local"), "imported %s is local", ids[i]);
        ju_check_int("imported backups.local", 0, catalog_local(h, ids[i]));
        ju_check_str_member("imported remotes[0]",
                            cJSON_GetArrayItem(cJSON_GetObjectItem(b, "remotes"), 0), "state",
                            "present");
    }
    cJSON_Delete(j);
}

static void test_import(void **state)
{
    (void)state;
    /* the original refuses: its drives exist */
    cJSON *j = call(409, "POST", "/api/v1/remotes/r1/import", NULL);
    ju_check(strstr(err_desc(j), "'d0'") && strstr(err_desc(j), "'d2'"),
             "import into the original: desc '%s' does not name d0 and d2", err_desc(j));
    cJSON_Delete(j);
    cJSON_Delete(call(404, "POST", "/api/v1/remotes/none/import", NULL));

    struct bvh H2;
    memset(&H2, 0, sizeof(H2));
    assert_int_equal(bvh_start(&H2, NULL), 0);
    struct ju_events EV2;
    ju_events_init(&EV2, &H2, 0);
    create_remote(&H2, "r1", bucket, false, false);

    /* a manifest in the bucket that names a link file outside its chain's folder (here
     * another chain's link, which would be removed at start as a non-local link) makes
     * the import a 400 naming it, and nothing is recorded */
    char evil[700], ekey[128];
    snprintf(evil, sizeof(evil), "{\"drive\":\"ev\",\"chain\":\"c99\",\"links\":[{\"id\":"
             "\"b99\",\"key\":\"ev/c99/b99.qcow2\",\"kind\":\"full\",\"parent\":null,"
             "\"file\":\"chains/d2/%s/b1.qcow2\"}]}", chain2);
    snprintf(ekey, sizeof(ekey), "%s/ev/c99/manifest.json", bucket);
    char okey[128];
    snprintf(okey, sizeof(okey), "%s/ev/c99/b99.qcow2", bucket);    /* the object is there */
    ju_check(s3u_request(&G, "PUT", okey, "x", 1, NULL, NULL) == 200, "PUT the link object");
    ju_check(s3u_request(&G, "PUT", ekey, evil, strlen(evil), NULL, NULL) == 200,
             "PUT the crafted manifest");
    j = callh(&H2, 400, "POST", "/api/v1/remotes/r1/import", NULL);
    ju_check(strstr(err_desc(j), "outside its chain's folder") != NULL,
             "import of a crafted manifest: desc '%s'", err_desc(j));
    cJSON_Delete(j);
    j = callh(&H2, 200, "GET", "/api/v1/drives", NULL);
    ju_check_int("drives after the refused import", 0,
                 cJSON_GetArraySize(cJSON_GetObjectItem(j, "drives")));
    cJSON_Delete(j);
    ju_check(s3u_request(&G, "DELETE", ekey, NULL, 0, NULL, NULL) == 204 &&
             s3u_request(&G, "DELETE", okey, NULL, 0, NULL, NULL) == 204,
             "DELETE the crafted manifest and its object");

    j = callh(&H2, 201, "POST", "/api/v1/remotes/r1/import", NULL);
    ju_check_str_member("import job", j, "type", "import");
    wait_job(&EV2, ju_str_or(j, "id", ""), "import");
    cJSON_Delete(j);

    j = callh(&H2, 200, "GET", "/api/v1/drives", NULL);
    int seen = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(j, "drives")) {
        const char *id = ju_str_or(d, "id", "");
        if (!strcmp(id, "d0") || !strcmp(id, "d2")) {
            seen++;
            ju_check_str_member("imported drive", d, "format", "remote-only");
            ju_check_num_member("imported drive", d, "size", 8 << 20);
        }
    }
    ju_check_int("imported drives listed", 2, seen);
    cJSON_Delete(j);
    j = callh(&H2, 200, "GET", "/api/v1/drives/d2", NULL);
    ju_check_str_member("GET imported drive", j, "format", "remote-only");
    cJSON_Delete(j);
    check_imported_chain(&H2, "d0", chain0, ids0, sums0, 2);
    check_imported_chain(&H2, "d2", chain2, ids2, sums2, 3);

    /* everything but reading is refused */
    cJSON_Delete(callh(&H2, 409, "POST", "/api/v1/drives/d2/io",
                       "{\"commands\":[\"write -P 1 0 512\"]}"));
    cJSON_Delete(callh(&H2, 409, "POST", "/api/v1/drives/d2/backups", "{\"kind\":\"full\"}"));
    cJSON_Delete(callh(&H2, 409, "POST", "/api/v1/drives",
                       "{\"id\":\"d2\",\"format\":\"qcow2\",\"size\":\"1M\"}"));
    char ppath[128];
    snprintf(ppath, sizeof(ppath), "/api/v1/backups/%s", ids2[1]);
    j = callh(&H2, 409, "DELETE", ppath, NULL);
    ju_check(strstr(err_desc(j), "remote-only") != NULL, "prune of an imported backup: %s",
             err_desc(j));
    cJSON_Delete(j);
    j = callh(&H2, 409, "POST", "/api/v1/remotes/r1/import", NULL);
    ju_check(strstr(err_desc(j), "'d2'") != NULL, "second import: desc '%s'", err_desc(j));
    cJSON_Delete(j);
    /* new backups never reuse an imported id */
    cJSON_Delete(callh(&H2, 201, "POST", "/api/v1/drives",
                       "{\"id\":\"n0\",\"format\":\"qcow2\",\"size\":\"1M\"}"));
    j = callh(&H2, 201, "POST", "/api/v1/drives/n0/backups", "{\"kind\":\"full\"}");
    const char *nid = ju_str_or(cJSON_GetObjectItem(j, "backup"), "id", "");
    for (int i = 0; i < 3; i++)
        ju_check(strcmp(nid, ids0[i]) && strcmp(nid, ids2[i]), "new backup id %s reuses an "
                 "imported one", nid);
    wait_job(&EV2, ju_str_or(cJSON_GetObjectItem(j, "job"), "id", ""), "backup");
    cJSON_Delete(j);

    /* every imported point reads, from the bucket, as the original reads it, and one
     * restores into a file byte for byte (the restore checks the point's digest too) */
    char (*ids[2])[32] = { ids0, ids2 };
    const int nids[2] = { 2, 3 };
    uint8_t *newest = NULL;
    size_t newest_len = 0;
    for (int c = 0; c < 2; c++) {
        for (int i = 0; i < nids[c]; i++) {
            char path[160];
            snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=0&length=%d",
                     ids[c][i], 8 << 20);
            struct bvh_resp r1, r2;
            assert_int_equal(bvh_request(&H2, "GET", path, NULL, 0, NULL, NULL, &r2), 0);
            assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r1), 0);
            ju_check(r2.status == 200 && r1.status == 200 && r1.len == (size_t)(8 << 20) &&
                     r1.len == r2.len && memcmp(r1.body, r2.body, r1.len) == 0,
                     "imported point %s reads differently from the original (HTTP %ld)",
                     ids[c][i], r2.status);
            if (c == 1 && i == 2 && r2.status == 200) {
                newest = malloc(r2.len);
                assert_non_null(newest);
                memcpy(newest, r2.body, r2.len);
                newest_len = r2.len;
            }
            bvh_resp_free(&r1);
            bvh_resp_free(&r2);
        }
    }
    char rpath[160];
    snprintf(rpath, sizeof(rpath), "/api/v1/backups/%s/restore", ids2[2]);
    j = callh(&H2, 201, "POST", rpath, "{\"file\":\"imported.raw\",\"format\":\"raw\"}");
    wait_job(&EV2, ju_str_or(j, "id", ""), "restore");
    cJSON_Delete(j);
    char file[600];
    snprintf(file, sizeof(file), "%s/imported.raw", H2.images);
    FILE *f = fopen(file, "rb");
    ju_check(f != NULL, "the restore of imported point %s made no file", ids2[2]);
    if (f && newest) {
        uint8_t *got = malloc(newest_len + 1);
        assert_non_null(got);
        size_t n = fread(got, 1, newest_len + 1, f);
        ju_check(n == newest_len && memcmp(got, newest, n) == 0,
                 "the restore of imported point %s differs from its data (%zu bytes)", ids2[2],
                 n);
        free(got);
    }
    if (f)
        fclose(f);
    free(newest);
    ju_events_free(&EV2);
    assert_int_equal(bvh_stop(&H2), 0);
    ju_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_validation),
        cmocka_unit_test(test_tiering),
        cmocka_unit_test(test_tiering_crash),
        cmocka_unit_test(test_retention_tiered),
        cmocka_unit_test(test_object_lock),
        cmocka_unit_test(test_prune_locked_grandchild),
        cmocka_unit_test(test_prune_replicated),
        cmocka_unit_test(test_prune_crash),
        cmocka_unit_test(test_import),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
