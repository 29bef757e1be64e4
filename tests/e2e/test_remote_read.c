/*
 * Reading backup points from the bucket (issue 16, tiering's reading half) against a real
 * single-node Ceph RADOS Gateway (the rgw/start fixture, or one of its own; skipped, 77,
 * when none can be had, or without qemu-img for the map of the link to flip):
 *   - a three-link chain is replicated, then every link's local file is deleted: the backups
 *     say "local": false with the remote present; GET …/data of every point, whole and in
 *     pieces, equals what it read before the files went; a restore of every point (raw)
 *     straight from the bucket completes (its digest checked by the job) and is the
 *     reference byte for byte, and `qemu-img compare` finds it, and the point's NBD export
 *     backup/<bid>, identical to the qcow2 restored locally before;
 *   - a checksum verify of the newest point from the bucket is clean; one byte flipped in
 *     the newest link's object (a modified copy PUT over it) is then reported at its guest
 *     offset (first_mismatch_offset its 64 KiB block, the sample at the flipped byte with the
 *     drive's byte as reference) and the backup is marked corrupt; the older points still
 *     read and verify as before;
 *   - a link neither on local disk nor present on a remote: GET …/data of its point is a 500
 *     that says so.
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

#define WAIT_S   120
#define VSIZE    (16ll << 20)
#define BLK      65536ll
#define NPOINTS  3

static struct rgw_env G;
static struct bvh H;
static struct ju_events EV;
static char bucket[64];


static double num_or(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

#define call(...) ju_json(&H, __VA_ARGS__)

/* ---- the bucket, directly (libcurl's SigV4) ---- */

/* GET (body NULL) or PUT (body, len) bucket/key: the status; a GET's body into *out. */
static long s3_object(const char *key, const void *body, size_t len, char **out, size_t *olen)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", bucket, key);
    return s3u_request(&G, body ? "PUT" : "GET", path, body, len, out, olen);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    (void)state;
    ju_reset();
    if (!bvh_have("qemu-img")) {
        fprintf(stderr, "test_remote_read: qemu-img not found (the map of a link): skipping\n");
        exit(77);
    }
    if (rgw_env_start(&G) == 77)
        exit(77);
    snprintf(bucket, sizeof(bucket), "bv-read-%d", (int)getpid());
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
        fprintf(stderr, "test_remote_read: the daemon stopped with status %d\n", rc);
    return rc == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static void wait_done(const char *job, const char *type)
{
    cJSON *e = ju_event_wait(&EV, "BLOCK_JOB_COMPLETED", "device", job, WAIT_S);
    const cJSON *d = cJSON_GetObjectItem(e, "data");
    ju_check(!cJSON_GetObjectItem(d, "error"), "job %s failed: %s", job, ju_str_or(d, "error", ""));
    ju_check_str_member("BLOCK_JOB_COMPLETED", d, "type", type);
    cJSON_Delete(e);
}

static void backup(const char *kind, char bid[32])
{
    cJSON *j = call(201, "POST", "/api/v1/drives/d0/backups", "{\"kind\":\"%s\"}", kind);
    snprintf(bid, 32, "%s", ju_str_or(cJSON_GetObjectItem(j, "backup"), "id", ""));
    wait_done(ju_str_or(cJSON_GetObjectItem(j, "job"), "id", ""), "backup");
    cJSON_Delete(j);
}

static void io(const char *cmds)
{
    cJSON_Delete(call(200, "POST", "/api/v1/drives/d0/io", "{\"commands\":%s}", cmds));
}

/* GET /backups/bid/data [off, off+len) in one request: a malloc'd buffer, NULL on failure. */
static char *read_range(const char *bid, long long off, long long len)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=%lld&length=%lld", bid, off,
             len);
    struct bvh_resp r;
    int rc = bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r);
    ju_check(rc == 0 && r.status == 200 && (long long)r.len == len,
             "GET %s: HTTP %ld, %zu bytes: %.300s", path, r.status, r.len,
             r.status != 200 && r.body ? r.body : "");
    char *out = NULL;
    if (rc == 0 && r.status == 200 && (long long)r.len == len) {
        out = r.body;
        r.body = NULL;
    }
    bvh_resp_free(&r);
    return out;
}

/* The same in 1 MiB requests (the harness grows its reply buffer chunk by chunk). */
static char *read_point(const char *bid, long long off, long long len)
{
    if (len <= (1 << 20))
        return read_range(bid, off, len);
    char *out = malloc((size_t)len);
    for (long long done = 0; out && done < len; done += 1 << 20) {
        long long n = len - done < (1 << 20) ? len - done : (1 << 20);
        char *b = read_range(bid, off + done, n);
        if (b)
            memcpy(out + done, b, (size_t)n);
        free(b);
        if (!b) {
            free(out);
            out = NULL;
        }
    }
    return out;
}

static cJSON *get_backup(const char *bid)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    return call(200, "GET", path, NULL);
}

/* Restore bid into file (format); waits for the job. */
static void restore(const char *bid, const char *file, const char *format)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", bid);
    cJSON *j = call(201, "POST", path, "{\"file\":\"%s\",\"format\":\"%s\"}", file, format);
    char id[64];
    snprintf(id, sizeof(id), "%s", ju_str_or(j, "id", "?"));
    cJSON_Delete(j);
    wait_done(id, "restore");
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(n > 0 ? (size_t)n : 1);
    *len = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    return b;
}

/* The first data extent link file holds itself (qemu-img map, depth 0): its host and guest
 * offsets, at least min_len long. */
static bool map_first_own(const char *file, long long min_len, long long *host,
                          long long *guest)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cd '%s' && qemu-img map -U --output=json '%s'", H.images, file);
    FILE *p = popen(cmd, "r");
    char *text = malloc(1 << 20);
    size_t n = p && text ? fread(text, 1, (1 << 20) - 1, p) : 0;
    if (p)
        pclose(p);
    if (!text)
        return false;
    text[n] = '\0';
    cJSON *map = cJSON_Parse(text);
    free(text);
    *host = *guest = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (*host < 0 && cJSON_IsTrue(cJSON_GetObjectItem(e, "data")) &&
            num_or(e, "depth", -1) == 0 && num_or(e, "length", 0) >= min_len) {
            *host = (long long)num_or(e, "offset", -1);
            *guest = (long long)num_or(e, "start", -1);
        }
    }
    cJSON_Delete(map);
    return *host >= 0;
}

/* Runs a checksum verify of bid; returns its report (caller frees). */
static cJSON *verify(const char *bid)
{
    cJSON *j = call(201, "POST", "/api/v1/jobs",
                    "{\"type\":\"verify\",\"mode\":\"checksum\",\"backup\":\"%s\"}", bid);
    char id[64], path[128];
    snprintf(id, sizeof(id), "%s", ju_str_or(j, "id", "?"));
    snprintf(path, sizeof(path), "/api/v1/reports/%s", ju_str_or(j, "report_id", "?"));
    cJSON_Delete(j);
    wait_done(id, "verify");
    return call(200, "GET", path, NULL);
}

/* ---- the test ---- */

static char bids[NPOINTS][32];
static char files[NPOINTS][512];
static char keys[NPOINTS][600];
static char *refs[NPOINTS];

static void make_chain(void)
{
    cJSON_Delete(call(201, "POST", "/api/v1/remotes",
                      "{\"name\":\"r1\",\"endpoint\":\"%s\",\"bucket\":\"%s\",\"access_key\":"
                      "\"%s\",\"secret_key\":\"%s\",\"path_style\":true,\"create_bucket\":true}",
                      G.endpoint, bucket, G.access_key, G.secret_key));
    cJSON_Delete(call(201, "POST", "/api/v1/drives",
                      "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":\"16M\"}"));
    io("[\"write -P 0x11 0 3M\",\"write -P 0x12 5M 64k\",\"write -P 0x13 9M 1M\"]");
    backup("full", bids[0]);
    io("[\"write -P 0x21 1M 128k\",\"write -P 0x22 12M 2M\",\"write -z 9M 64k\"]");
    backup("incremental", bids[1]);
    io("[\"write -P 0x31 6M 256k\",\"write -P 0x32 2M 1M\",\"write -P 0x33 15M 1M\"]");
    backup("incremental", bids[2]);
    for (int i = 0; i < NPOINTS; i++) {
        cJSON *j = get_backup(bids[i]);
        const char *file = ju_str_or(j, "file", "");
        snprintf(files[i], sizeof(files[i]), "%s", file);
        const char *base = strrchr(file, '/');
        snprintf(keys[i], sizeof(keys[i]), "d0/%s/%s", ju_str_or(j, "chain", ""),
                 base ? base + 1 : file);
        cJSON_Delete(j);
        refs[i] = read_point(bids[i], 0, VSIZE);
        char name[64];
        snprintf(name, sizeof(name), "local%d.qcow2", i);
        restore(bids[i], name, "qcow2");
    }
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/replicate", bids[2]);
    cJSON *j = call(201, "POST", path, "{\"remote\":\"r1\"}");
    char id[64];
    snprintf(id, sizeof(id), "%s", ju_str_or(j, "id", "?"));
    cJSON_Delete(j);
    wait_done(id, "replicate");
}

static void delete_local_links(void)
{
    for (int i = 0; i < NPOINTS; i++) {
        char local[1024];
        snprintf(local, sizeof(local), "%s/%s", H.images, files[i]);
        ju_check(unlink(local) == 0, "cannot delete %s", local);
        cJSON *j = get_backup(bids[i]);
        ju_check(!bvh_bool(j, "local"), "%s: local although its file is gone", bids[i]);
        const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "remotes"), 0);
        ju_check_str_member("remotes[0]", r0, "state", "present");
        cJSON_Delete(j);
    }
}

static void check_reads(void)
{
    static const long long pieces[][2] = {
        { 0, 512 }, { 3 * 1048576LL - 100, 300 }, { 9 * 1048576LL, 2 * 1048576LL },
        { 12 * 1048576LL + 4095, 65536 * 3 + 1 }, { VSIZE - 7, 7 },
    };
    for (int i = 0; i < NPOINTS; i++) {
        char *all = read_point(bids[i], 0, VSIZE);
        ju_check(all && refs[i] && memcmp(all, refs[i], VSIZE) == 0,
                 "%s from the bucket differs from what it read locally", bids[i]);
        free(all);
        for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
            char *b = read_point(bids[i], pieces[k][0], pieces[k][1]);
            ju_check(b && refs[i] && memcmp(b, refs[i] + pieces[k][0],
                                            (size_t)pieces[k][1]) == 0,
                     "%s [%lld, +%lld) from the bucket differs", bids[i], pieces[k][0],
                     pieces[k][1]);
            free(b);
        }
    }
}

static void check_restores(void)
{
    for (int i = 0; i < NPOINTS; i++) {
        char name[64], path[600];
        snprintf(name, sizeof(name), "remote%d.raw", i);
        restore(bids[i], name, "raw");
        snprintf(path, sizeof(path), "%s/%s", H.images, name);
        size_t len = 0;
        char *got = slurp(path, &len);
        ju_check(got && (long long)len == VSIZE && refs[i] && memcmp(got, refs[i], VSIZE) == 0,
                 "restore of %s from the bucket (%zu bytes) differs from the reference",
                 bids[i], len);
        free(got);
        ju_check(bvh_sh("cd '%s' && qemu-img compare -q -f raw -F qcow2 remote%d.raw "
                        "local%d.qcow2", H.images, i, i) == 0,
                 "qemu-img compare: remote%d.raw differs from local%d.qcow2", i, i);
        /* the NBD export of the point reads from the bucket too */
        ju_check(bvh_sh("cd '%s' && qemu-img compare -q -f raw -F qcow2 "
                        "'nbd+unix:///backup/%s?socket=%s/nbd.sock' local%d.qcow2", H.images,
                        bids[i], H.dir, i) == 0,
                 "qemu-img compare: NBD export backup/%s differs from local%d.qcow2",
                 bids[i], i);
    }
}

/* Flip the byte at host offset host of the newest link's object. */
static void flip_in_object(long long host)
{
    char *obj = NULL;
    size_t len = 0;
    ju_check(s3_object(keys[2], NULL, 0, &obj, &len) == 200 && obj && (long long)len > host,
             "cannot GET %s", keys[2]);
    if (!obj || (long long)len <= host) {
        free(obj);
        return;
    }
    obj[host] ^= (char)0xff;
    ju_check(s3_object(keys[2], obj, len, NULL, NULL) == 200, "cannot PUT %s", keys[2]);
    free(obj);
}

static void test_read_restore_verify_from_bucket(void **state)
{
    (void)state;
    make_chain();
    long long host = -1, guest = -1;
    ju_check(map_first_own(files[2], 2 * BLK, &host, &guest), "no data extent in %s",
             files[2]);
    delete_local_links();
    check_reads();
    check_restores();

    cJSON *rep = verify(bids[2]);
    ju_check_str_member("clean remote point", rep, "status", "clean");
    cJSON_Delete(rep);

    /* one byte of the newest link's second block, in the bucket */
    long long skew = BLK + 7;
    flip_in_object(host + skew);
    long long at = guest + skew, block = at / BLK * BLK;
    rep = verify(bids[2]);
    ju_check_str_member("flipped: status", rep, "status", "corrupt");
    ju_check_num_member("flipped: first offset", rep, "first_mismatch_offset", block);
    ju_check_num_member("flipped: mismatched", rep, "mismatched_bytes", BLK);
    char want[128];
    snprintf(want, sizeof(want), "[{\"offset\":%lld,\"length\":65536}]", block);
    ju_check_json("flipped: extents", want, cJSON_GetObjectItem(rep, "extents"));
    const cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(rep, "samples"), 0);
    ju_check_num_member("flipped: the sample is at the flipped byte", s0, "offset", at);
    const char *th = ju_str_or(s0, "test_hex", ""), *rh = ju_str_or(s0, "reference_hex", "");
    ju_check(strlen(th) >= 2 && strlen(rh) >= 2 && strncmp(th, rh, 2) != 0,
             "flipped: the sample's first byte should differ (test %s, reference %s)", th, rh);
    cJSON_Delete(rep);
    cJSON *j = get_backup(bids[2]);
    ju_check_str_member("flipped link", j, "status", "corrupt");
    ju_check(!bvh_bool(j, "local"), "flipped link: local");
    cJSON_Delete(j);

    /* the older points do not read the flipped block: unchanged and clean */
    for (int i = 0; i < 2; i++) {
        char *all = read_point(bids[i], 0, VSIZE);
        ju_check(all && memcmp(all, refs[i], VSIZE) == 0, "%s changed", bids[i]);
        free(all);
    }
    rep = verify(bids[1]);
    ju_check_str_member("older remote point", rep, "status", "clean");
    cJSON_Delete(rep);

    /* a link in neither place (a new chain's full, not replicated): its point cannot be
     * read, and says why.  (An incremental needs the chain's newest link on local disk.) */
    char b4[32];
    io("[\"write -P 0x41 4M 64k\"]");
    backup("full", b4);
    cJSON *j4 = get_backup(b4);
    char local[1024];
    snprintf(local, sizeof(local), "%s/%s", H.images, ju_str_or(j4, "file", ""));
    cJSON_Delete(j4);
    ju_check(unlink(local) == 0, "cannot delete %s", local);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=0&length=512", b4);
    struct bvh_resp r;
    ju_call(&H, &r, "GET", path, NULL);
    const cJSON *err = cJSON_GetObjectItem(r.json, "error");
    ju_check(r.status == 500 && strstr(ju_str_or(err, "desc", ""), "neither on local disk nor "
                                       "present on a remote") != NULL,
             "GET of a point whose link is nowhere: HTTP %ld %s", r.status, r.body ? r.body : "");
    bvh_resp_free(&r);
    for (int i = 0; i < NPOINTS; i++)
        free(refs[i]);
    ju_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_restore_verify_from_bucket),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
