/*
 * Remotes and replicate jobs against a real single-node Ceph RADOS Gateway (one per run,
 * tests/support/ceph-rgw.sh, shared by every case; skipped, 77, when none can be had):
 *   - POST /remotes: wrong keys are a 400 that says the remote refused the credentials, a
 *     missing bucket without create_bucket a 400, good keys with create_bucket a 201; the
 *     secret is never returned, lives in <data>/remotes/<name>.secret (0600) and not in the
 *     catalog; duplicate 409, unknown 404;
 *   - a three-link chain replicated: every link's object has the local file's size, the
 *     manifest lists the links in order with their checksums, the backups show the remote
 *     as present; a second replicate uploads nothing (len 0); unknown remote 400, unknown
 *     backup 404;
 *   - DELETE /remotes is 409 while a link lives only there, 204 otherwise;
 *   - the gateway stopped: the job fails saying it cannot reach the remote, the link is
 *     recorded failed; the gateway back, the next run uploads it;
 *   - kill -9 in the middle of a multipart upload: after the restart the next run uploads
 *     only the parts not yet acknowledged, and the object equals the link.
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
#include <unistd.h>

#include <curl/curl.h>

#include "../support/rgw_env.h"
#include "harness.h"
#include "jobs_util.h"
#include "s3_util.h"

#define WAIT_S 120

static struct rgw_env G;
static struct bvh H;
static struct ju_events EV;
static char bucket[64];


#define call(...) ju_json(&H, __VA_ARGS__)

/* ---- looking into the bucket directly (libcurl's SigV4) ---- */

/* GET (or HEAD) endpoint/path (path: "bucket/key?query"): the status; body (GET) into *out
 * (caller frees), size into *len. */
static long s3_raw(const char *path, bool head, char **out, size_t *len)
{
    return s3u_request(&G, head ? "HEAD" : "GET", path, NULL, 0, out, len);
}

/* The same for a key of the test's bucket. */
static long s3_call(const char *key, bool head, char **out, size_t *len)
{
    char path[800];
    snprintf(path, sizeof(path), "%s/%s", bucket, key);
    return s3_raw(path, head, out, len);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    (void)state;
    ju_reset();
    if (rgw_env_start(&G) == 77)
        exit(77);
    snprintf(bucket, sizeof(bucket), "bv-e2e-%d", (int)getpid());
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
    if (rc != 0)
        fprintf(stderr, "test_remotes: the daemon stopped with status %d\n", rc);
    return rc == 0 ? 0 : -1;
}

static void create_remote(long want, const char *name, const char *bkt, const char *secret,
                          bool create, const char *expect_desc)
{
    struct bvh_resp r;
    int rc = ju_call(&H, &r, "POST", "/api/v1/remotes",
                     "{\"name\":\"%s\",\"endpoint\":\"%s\",\"bucket\":\"%s\",\"access_key\":"
                     "\"%s\",\"secret_key\":\"%s\",\"path_style\":true,\"create_bucket\":%s}",
                     name, G.endpoint, bkt, G.access_key, secret, create ? "true" : "false");
    ju_check(rc == 0 && r.status == want, "POST /remotes %s: expected %ld, got %ld: %s", name,
             want, r.status, r.body ? r.body : "");
    if (expect_desc) {
        const cJSON *err = cJSON_GetObjectItem(r.json, "error");
        ju_check(strstr(ju_str_or(err, "desc", ""), expect_desc) != NULL,
                 "POST /remotes %s: desc '%s' lacks '%s'", name, ju_str_or(err, "desc", ""),
                 expect_desc);
    }
    if (r.body)
        ju_check(strstr(r.body, secret) == NULL, "the reply carries the secret key");
    bvh_resp_free(&r);
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    size_t n = strlen(needle), got = 0;
    bool found = false;
    int c;
    /* naive scan (the catalog is small) */
    char *win = calloc(1, n + 1);
    while (!found && (c = fgetc(f)) != EOF) {
        if (got < n) {
            win[got++] = (char)c;
        } else {
            memmove(win, win + 1, n - 1);
            win[n - 1] = (char)c;
        }
        found = got == n && memcmp(win, needle, n) == 0;
    }
    free(win);
    fclose(f);
    return found;
}

static void test_create_remote(void **state)
{
    (void)state;
    create_remote(400, "bad", bucket, "not-the-secret", true,
                  "the remote refused the credentials");
    create_remote(400, "nobucket", bucket, G.secret_key, false, "does not exist");
    create_remote(201, "r1", bucket, G.secret_key, true, NULL);
    create_remote(409, "r1", bucket, G.secret_key, false, "already exists");

    cJSON *j = call(200, "GET", "/api/v1/remotes/r1", NULL);
    ju_check_str_member("remote", j, "bucket", bucket);
    ju_check_str_member("remote", j, "endpoint", G.endpoint);
    ju_check_str_member("remote", j, "access_key", G.access_key);
    ju_check_str_member("remote", j, "region", "us-east-1");
    ju_check(!cJSON_GetObjectItem(j, "secret_key"), "GET /remotes/r1 shows secret_key");
    cJSON_Delete(j);
    j = call(200, "GET", "/api/v1/remotes", NULL);
    const cJSON *arr = cJSON_GetObjectItem(j, "remotes");
    ju_check_int("remotes listed", 1, cJSON_GetArraySize(arr));
    cJSON_Delete(j);
    cJSON_Delete(call(404, "GET", "/api/v1/remotes/none", NULL));

    /* a bucket made with Object Lock enabled */
    j = call(201, "POST", "/api/v1/remotes",
             "{\"name\":\"locked\",\"endpoint\":\"%s\",\"bucket\":\"%s-lock\",\"access_key\":"
             "\"%s\",\"secret_key\":\"%s\",\"create_bucket\":true,\"object_lock\":true}",
             G.endpoint, bucket, G.access_key, G.secret_key);
    ju_check(cJSON_IsTrue(cJSON_GetObjectItem(j, "object_lock")), "object_lock not recorded");
    cJSON_Delete(j);
    cJSON_Delete(call(204, "DELETE", "/api/v1/remotes/locked", NULL));
    char lockq[200], *lockcfg = NULL;
    size_t lockn = 0;
    snprintf(lockq, sizeof(lockq), "%s-lock?object-lock=", bucket);
    ju_check(s3_raw(lockq, false, &lockcfg, &lockn) == 200 && lockcfg &&
             strstr(lockcfg, "Enabled") != NULL, "bucket %s-lock has no Object Lock: %s",
             bucket, lockcfg ? lockcfg : "");
    free(lockcfg);

    char path[600];
    snprintf(path, sizeof(path), "%s/remotes/r1.secret", H.dir);
    struct stat st;
    ju_check(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600,
             "%s: missing or not mode 0600", path);
    ju_check(file_has(path, G.secret_key), "%s does not hold the secret", path);
    snprintf(path, sizeof(path), "%s/catalog.db", H.dir);
    ju_check(!file_has(path, G.secret_key), "the catalog holds the secret key");
    ju_end();
}

static void wait_done(const char *job, const char *type, long long want_len)
{
    cJSON *e = ju_event_wait(&EV, "BLOCK_JOB_COMPLETED", "device", job, WAIT_S);
    const cJSON *d = cJSON_GetObjectItem(e, "data");
    ju_check(!cJSON_GetObjectItem(d, "error"), "job %s failed: %s", job, ju_str_or(d, "error", ""));
    ju_check_str_member("BLOCK_JOB_COMPLETED", d, "type", type);
    if (want_len >= 0)
        ju_check_num_member("BLOCK_JOB_COMPLETED", d, "len", want_len);
    cJSON_Delete(e);
}

static void backup(const char *kind, char bid[32])
{
    cJSON *j = call(201, "POST", "/api/v1/drives/d0/backups", "{\"kind\":\"%s\"}", kind);
    assert_non_null(j);
    snprintf(bid, 32, "%s", ju_str_or(cJSON_GetObjectItem(j, "backup"), "id", ""));
    wait_done(ju_str_or(cJSON_GetObjectItem(j, "job"), "id", ""), "backup", -1);
    cJSON_Delete(j);
}

static void io(const char *cmds)
{
    cJSON_Delete(call(200, "POST", "/api/v1/drives/d0/io", "{\"commands\":%s}", cmds));
}

static char *replicate_to(const char *bid, const char *remote, long long want_len)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/replicate", bid);
    cJSON *j = call(201, "POST", path, "{\"remote\":\"%s\"}", remote);
    ju_check_str_member("replicate job", j, "type", "replicate");
    char *id = strdup(ju_str_or(j, "id", ""));
    cJSON_Delete(j);
    wait_done(id, "replicate", want_len);
    return id;
}

static char *replicate(const char *bid, long long want_len)
{
    return replicate_to(bid, "r1", want_len);
}

static void test_replicate(void **state)
{
    (void)state;
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":\"8M\"}"));
    char b[3][32];
    io("[\"write -P 0x11 0 1M\",\"write -P 0x12 4M 64k\"]");
    backup("full", b[0]);
    io("[\"write -P 0x21 1M 128k\"]");
    backup("incremental", b[1]);
    io("[\"write -P 0x31 6M 256k\"]");
    backup("incremental", b[2]);

    /* sizes of the local links: what the first run must upload, in total */
    char key[3][600], chain[64] = "";
    long long sizes[3], total = 0;
    char checksum[3][80];
    for (int i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/backups/%s", b[i]);
        cJSON *j = call(200, "GET", path, NULL);
        const char *file = ju_str_or(j, "file", "");
        snprintf(chain, sizeof(chain), "%s", ju_str_or(j, "chain", ""));
        snprintf(checksum[i], sizeof(checksum[i]), "%s", ju_str_or(j, "checksum", ""));
        const char *base = strrchr(file, '/');
        snprintf(key[i], sizeof(key[i]), "d0/%s/%s", chain, base ? base + 1 : file);
        char local[1500];
        snprintf(local, sizeof(local), "%s/%s", H.images, file);
        struct stat st;
        ju_check(stat(local, &st) == 0, "%s missing", local);
        sizes[i] = (long long)st.st_size;
        total += sizes[i];
        ju_check(cJSON_GetArraySize(cJSON_GetObjectItem(j, "remotes")) == 0,
                 "%s: remotes before any replicate", b[i]);
        ju_check(bvh_bool(j, "local"), "%s: not local", b[i]);
        cJSON_Delete(j);
    }

    free(replicate(b[2], total));
    for (int i = 0; i < 3; i++) {
        size_t len = 0;
        long st = s3_call(key[i], true, NULL, &len);
        ju_check(st == 200 && (long long)len == sizes[i], "object %s: HTTP %ld, %zu bytes, "
                 "expected %lld", key[i], st, len, sizes[i]);
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/backups/%s", b[i]);
        cJSON *j = call(200, "GET", path, NULL);
        const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "remotes"), 0);
        ju_check_str_member("remotes[0]", r0, "remote", "r1");
        ju_check_str_member("remotes[0]", r0, "state", "present");
        ju_check(bvh_bool(j, "local"), "%s: not local after replicate", b[i]);
        cJSON_Delete(j);
    }
    char mkey[200], *text = NULL;
    size_t mlen = 0;
    snprintf(mkey, sizeof(mkey), "d0/%s/manifest.json", chain);
    ju_check(s3_call(mkey, false, &text, &mlen) == 200, "no manifest %s", mkey);
    cJSON *m = text ? cJSON_ParseWithLength(text, mlen) : NULL;
    free(text);
    ju_check_str_member("manifest", m, "drive", "d0");
    ju_check_str_member("manifest", m, "chain", chain);
    const cJSON *links = cJSON_GetObjectItem(m, "links");
    ju_check_int("manifest links", 3, cJSON_GetArraySize(links));
    for (int i = 0; i < 3 && i < cJSON_GetArraySize(links); i++) {
        const cJSON *l = cJSON_GetArrayItem(links, i);
        ju_check_str_member("manifest link", l, "id", b[i]);
        ju_check_str_member("manifest link", l, "key", key[i]);
        ju_check_str_member("manifest link", l, "checksum", checksum[i]);
        if (i > 0)
            ju_check_str_member("manifest link", l, "parent", b[i - 1]);
    }
    cJSON_Delete(m);
    /* a catalog copy beside the manifests: an SQLite file */
    char *cat = NULL;
    size_t catlen = 0, headlen = 0;
    ju_check(s3_call("catalog.sqlite", true, NULL, &headlen) == 200, "no catalog.sqlite");
    ju_check(s3_call("catalog.sqlite", false, &cat, &catlen) == 200 && catlen == headlen &&
             catlen > 100 && memcmp(cat, "SQLite format 3", 16) == 0,
             "catalog.sqlite: %zu bytes (HEAD %zu), not an SQLite file", catlen, headlen);
    free(cat);

    /* every link is present: a second run uploads nothing */
    free(replicate(b[2], 0));
    free(replicate(b[1], 0));

    struct bvh_resp r;
    ju_call(&H, &r, "POST", "/api/v1/backups/b999/replicate", "{\"remote\":\"r1\"}");
    ju_check_int("replicate of an unknown backup", 404, r.status);
    bvh_resp_free(&r);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/replicate", b[0]);
    ju_call(&H, &r, "POST", path, "{\"remote\":\"nope\"}");
    ju_check_int("replicate to an unknown remote", 400, r.status);
    bvh_resp_free(&r);
    ju_call(&H, &r, "POST", path, "{\"remote\":\"r1\",\"x\":1}");
    ju_check_int("replicate with an unknown field", 400, r.status);
    bvh_resp_free(&r);

    /* the full's local file gone: the remote holds its only copy */
    snprintf(path, sizeof(path), "/api/v1/backups/%s", b[0]);
    cJSON *j = call(200, "GET", path, NULL);
    char local[1500];
    snprintf(local, sizeof(local), "%s/%s", H.images, ju_str_or(j, "file", ""));
    cJSON_Delete(j);
    char moved[1600];
    snprintf(moved, sizeof(moved), "%s.aside", local);
    ju_check(rename(local, moved) == 0, "cannot move %s aside", local);
    j = call(200, "GET", path, NULL);
    ju_check(!bvh_bool(j, "local"), "%s: local although its file is gone", b[0]);
    cJSON_Delete(j);
    ju_call(&H, &r, "DELETE", "/api/v1/remotes/r1", NULL);
    ju_check_int("DELETE of a remote holding the only copy", 409, r.status);
    bvh_resp_free(&r);
    ju_check(rename(moved, local) == 0, "cannot move %s back", local);
    cJSON_Delete(call(204, "DELETE", "/api/v1/remotes/r1", NULL));
    cJSON_Delete(call(404, "GET", "/api/v1/remotes/r1", NULL));
    ju_end();
}

/* The gateway stopped: the replicate job fails and says why, the link is recorded failed;
 * with the gateway back, the next run uploads it. */
static void test_gateway_down(void **state)
{
    (void)state;
    if (!G.ctl_dir[0]) {
        fprintf(stderr, "test_gateway_down: an external gateway (BV_S3_ENDPOINT): skipped\n");
        return;
    }
    create_remote(201, "r1", bucket, G.secret_key, false, NULL);
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d1\",\"format\":\"qcow2\",\"size\":\"4M\"}"));
    cJSON_Delete(call(200, "POST", "/api/v1/drives/d1/io", "{\"commands\":[\"write -P 0x44 0 2M\"]}"));
    cJSON *j = call(201, "POST", "/api/v1/drives/d1/backups", "{\"kind\":\"full\"}");
    char bid[32];
    snprintf(bid, sizeof(bid), "%s", ju_str_or(cJSON_GetObjectItem(j, "backup"), "id", ""));
    wait_done(ju_str_or(cJSON_GetObjectItem(j, "job"), "id", ""), "backup", -1);
    cJSON_Delete(j);

    ju_check(rgw_env_ctl(&G, "stop-rgw") == 0, "cannot stop the gateway");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/replicate", bid);
    j = call(201, "POST", path, "{\"remote\":\"r1\"}");
    char job[64];
    snprintf(job, sizeof(job), "%s", ju_str_or(j, "id", ""));
    cJSON_Delete(j);
    cJSON *e = ju_event_wait(&EV, "BLOCK_JOB_COMPLETED", "device", job, WAIT_S);
    const char *err = ju_str_or(cJSON_GetObjectItem(e, "data"), "error", "");
    ju_check(strstr(err, "cannot reach the remote at") != NULL &&
             strstr(err, bid) != NULL, "replicate with the gateway down: error '%s'", err);
    cJSON_Delete(e);
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    j = call(200, "GET", path, NULL);
    ju_check_str_member("remotes[0]", cJSON_GetArrayItem(cJSON_GetObjectItem(j, "remotes"), 0),
                        "state", "failed");
    cJSON_Delete(j);

    ju_check(rgw_env_ctl(&G, "start-rgw") == 0, "cannot restart the gateway");
    char *id = replicate(bid, -1);
    free(id);
    j = call(200, "GET", path, NULL);
    ju_check_str_member("remotes[0]", cJSON_GetArrayItem(cJSON_GetObjectItem(j, "remotes"), 0),
                        "state", "present");
    cJSON_Delete(j);
    ju_end();
}

/* kill -9 in the middle of a multipart upload: the next replicate after the restart uploads
 * only the parts the remote had not acknowledged, and the object is the link byte for byte. */
static void test_resume_after_kill9(void **state)
{
    (void)state;
    create_remote(201, "r2", bucket, G.secret_key, false, NULL);
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d2\",\"format\":\"qcow2\",\"size\":\"48M\"}"));
    cJSON_Delete(call(200, "POST", "/api/v1/drives/d2/io",
                      "{\"commands\":[\"write -P 0x51 0 16M\",\"write -P 0x52 16M 16M\","
                      "\"write -P 0x53 32M 12M\"]}"));
    cJSON *j = call(201, "POST", "/api/v1/drives/d2/backups", "{\"kind\":\"full\"}");
    char bid[32];
    snprintf(bid, sizeof(bid), "%s", ju_str_or(cJSON_GetObjectItem(j, "backup"), "id", ""));
    wait_done(ju_str_or(cJSON_GetObjectItem(j, "job"), "id", ""), "backup", -1);
    cJSON_Delete(j);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    j = call(200, "GET", path, NULL);
    char local[1500], key[600];
    const char *file = ju_str_or(j, "file", "");
    snprintf(local, sizeof(local), "%s/%s", H.images, file);
    const char *base = strrchr(file, '/');
    snprintf(key, sizeof(key), "d2/%s/%s", ju_str_or(j, "chain", ""), base ? base + 1 : file);
    cJSON_Delete(j);
    struct stat st;
    assert_int_equal(stat(local, &st), 0);
    long long size = (long long)st.st_size, part = 16ll << 20;
    ju_check(size > 2 * part, "the link is only %lld bytes", size);

    /* parts above the first never start: kill -9 once the first is acknowledged */
    setenv("BV_TEST_S3_STALL_AFTER_PART", "1", 1);
    assert_int_equal(bvh_restart(&H), 0);
    unsetenv("BV_TEST_S3_STALL_AFTER_PART");
    snprintf(path, sizeof(path), "/api/v1/backups/%s/replicate", bid);
    j = call(201, "POST", path, "{\"remote\":\"r2\"}");
    char jpath[128];
    snprintf(jpath, sizeof(jpath), "/api/v1/jobs/%s", ju_str_or(j, "id", ""));
    cJSON_Delete(j);
    long long off = 0;
    for (int i = 0; i < 600 && off < part; i++) {
        struct bvh_resp r;
        if (ju_call(&H, &r, "GET", jpath, NULL) == 0 && r.status == 200)
            off = (long long)bvh_num(r.json, "offset");
        bvh_resp_free(&r);
        if (off < part)
            usleep(100000);
    }
    ju_check(off == part, "the first part was not acknowledged (offset %lld)", off);
    bvh_kill9(&H);
    assert_int_equal(bvh_restart(&H), 0);
    ju_events_free(&EV);
    ju_events_init(&EV, &H, 0);

    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    j = call(200, "GET", path, NULL);
    ju_check_str_member("remotes[0] after kill -9",
                        cJSON_GetArrayItem(cJSON_GetObjectItem(j, "remotes"), 0), "state",
                        "uploading");
    cJSON_Delete(j);
    free(replicate_to(bid, "r2", size - part));     /* only what was not acknowledged */

    char *obj = NULL;
    size_t olen = 0;
    ju_check(s3_call(key, false, &obj, &olen) == 200 && (long long)olen == size,
             "object %s: %zu bytes, expected %lld", key, olen, size);
    FILE *f = fopen(local, "rb");
    char *want = malloc((size_t)size);
    ju_check(f && want && fread(want, 1, (size_t)size, f) == (size_t)size, "cannot read %s",
             local);
    ju_check(obj && want && (long long)olen == size && memcmp(obj, want, (size_t)size) == 0,
             "object %s differs from the link", key);
    if (f)
        fclose(f);
    free(want);
    free(obj);
    ju_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_remote),
        cmocka_unit_test(test_replicate),
        cmocka_unit_test(test_gateway_down),
        cmocka_unit_test(test_resume_after_kill9),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
