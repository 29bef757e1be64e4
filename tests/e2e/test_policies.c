/*
 * Policies end to end, on the daemon's test clock (--test-clock): a
 * simulated month of hourly backups with rotation and retention, checked
 * against a retention computed here independently and against the data
 * each kept point must hold; DST in Europe/Berlin; one catch-up run after
 * downtime; policies and runs surviving a restart; validation texts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "harness.h"

#define DRIVE_SIZE (2u << 20)
#define WRITE_LEN  4096u
#define MAX_RUNS   800

static struct bvh H;
static char clock_arg[64];
static const char *args[8];

static void start(const char *tz, long long now)
{
    int a = 0;
    snprintf(clock_arg, sizeof(clock_arg), "--test-clock=%lld", now);
    args[a++] = clock_arg;
    if (tz) {
        args[a++] = "--timezone";
        args[a++] = tz;
    }
    args[a] = NULL;
    struct bvh_opts o = { .args = args };
    assert_int_equal(bvh_start(&H, &o), 0);
}

static long long head(void)
{
    cJSON *j = bvh_json(&H, "GET", 200, "/api/v1/events?after=latest", NULL);
    long long n = (long long)bvh_num(j, "next");
    cJSON_Delete(j);
    return n;
}

/* Set the clock and wait until the policy's run for it ended (or, with
 * expect_run false, make sure none starts within a short wait). */
static const char *tick(long long now, long long *after, bool expect_run)
{
    static char outcome[32];
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/test/clock", "{\"now\":%lld}", now));
    outcome[0] = '\0';
    for (int waited = 0; waited < 600; waited++) {
        char path[160];
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld&name=POLICY_RUN&wait=%s",
                 *after, expect_run ? "10" : "0.3");
        cJSON *j = bvh_json(&H, "GET", 200, path, NULL);
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "events")) {
            *after = (long long)bvh_num(e, "seq");
            const char *st = bvh_str(cJSON_GetObjectItem(e, "data"), "status");
            if (strcmp(st, "started") != 0)
                snprintf(outcome, sizeof(outcome), "%s", st);
        }
        cJSON_Delete(j);
        if (outcome[0] || !expect_run)
            break;
    }
    return outcome;
}

/* The drive's content as the test wrote it. */
static uint8_t model[DRIVE_SIZE];

static void write_hour(const char *drive, int h)
{
    uint64_t off = ((uint64_t)h * 17 * WRITE_LEN) % DRIVE_SIZE;
    int pat = h % 250 + 1;
    memset(model + off, pat, WRITE_LEN);
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/drives/d0/io",
                          "{\"commands\":[\"write -P %d %llu %u\"]}", pat,
                          (unsigned long long)off, WRITE_LEN));
    (void)drive;
}

struct point {
    char id[32];
    time_t at;
    uint8_t *data;                     /* the drive as it was */
};

/* restic-style retention computed here: period keys from strftime. */
static bool keep_by_rules(const struct point *p, int n, int i, int hourly, int daily, int weekly)
{
    if (i == n - 1)
        return true;                   /* the newest */
    int counts[3] = { hourly, daily, weekly };
    for (int r = 0; r < 3; r++) {
        char seen[MAX_RUNS][32];
        int nseen = 0;
        for (int k = n - 1; k >= 0 && nseen < counts[r]; k--) {
            struct tm tm;
            gmtime_r(&p[k].at, &tm);
            char key[32];
            if (r == 0)
                strftime(key, sizeof(key), "%Y-%m-%d %H", &tm);
            else if (r == 1)
                strftime(key, sizeof(key), "%Y-%m-%d", &tm);
            else
                strftime(key, sizeof(key), "%G-%V", &tm);
            bool dup = false;
            for (int s = 0; s < nseen; s++)
                dup = dup || strcmp(seen[s], key) == 0;
            if (dup)
                continue;              /* an older backup of a period already kept */
            snprintf(seen[nseen++], 32, "%s", key);
            if (k == i)
                return true;
        }
    }
    return false;
}

static void check_point(const struct point *p)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=0&length=%u", p->id, DRIVE_SIZE);
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, DRIVE_SIZE);
    if (memcmp(r.body, p->data, DRIVE_SIZE) != 0) {
        size_t i = 0;
        while (((uint8_t *)r.body)[i] == p->data[i])
            i++;
        fail_msg("point %s differs from what the drive held at byte %zu", p->id, i);
    }
    bvh_resp_free(&r);
}

static void test_month(void **state)
{
    (void)state;
    long long t0 = 1772323200;         /* 2026-03-01T00:00:00Z, a Sunday */
    start(NULL, t0);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":%u}", DRIVE_SIZE));
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/policies",
                          "{\"name\":\"hourly\",\"drives\":[\"d0\"],\"schedule\":\"0 * * * *\","
                          "\"full_every\":24,\"retention\":{\"keep_hourly\":24,\"keep_daily\":7,"
                          "\"keep_weekly\":4}}"));
    int hours = getenv("BV_POLICY_HOURS") ? atoi(getenv("BV_POLICY_HOURS")) : 31 * 24;
    struct point *pts = calloc((size_t)hours + 1, sizeof(*pts));
    int n = 0;
    long long after = head();
    for (int h = 1; h <= hours; h++) {
        write_hour("d0", h);
        long long now = t0 + (long long)h * 3600 + 30;
        const char *outcome = tick(now, &after, true);
        if (strcmp(outcome, "ok") != 0)
            fail_msg("hour %d: run outcome '%s'", h, outcome);
        cJSON *runs = bvh_json(&H, "GET", 200, "/api/v1/policies/hourly/runs", NULL);
        const cJSON *last = cJSON_GetArrayItem(cJSON_GetObjectItem(runs, "runs"), 0);
        const cJSON *made = cJSON_GetObjectItem(last, "backups_made");
        assert_int_equal(cJSON_GetArraySize(made), 1);
        snprintf(pts[n].id, sizeof(pts[n].id), "%s", cJSON_GetArrayItem(made, 0)->valuestring);
        pts[n].at = (time_t)(t0 + (long long)h * 3600 + 30);
        pts[n].data = malloc(DRIVE_SIZE);
        memcpy(pts[n].data, model, DRIVE_SIZE);
        n++;
        cJSON_Delete(runs);
    }
    /* what must remain, computed independently */
    cJSON *bk = bvh_json(&H, "GET", 200, "/api/v1/drives/d0/backups", NULL);
    int remaining = 0, expected = 0;
    for (int i = 0; i < n; i++) {
        bool want = keep_by_rules(pts, n, i, 24, 7, 4);
        expected += want;
        char path[96];
        snprintf(path, sizeof(path), "/api/v1/backups/%s", pts[i].id);
        struct bvh_resp r;
        assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r), 0);
        bool have = r.status == 200;
        bvh_resp_free(&r);
        if (have != want)
            fail_msg("%s (hour %d): expected %s, it is %s", pts[i].id, i + 1,
                     want ? "kept" : "pruned", have ? "kept" : "gone");
        if (have) {
            remaining++;
            check_point(&pts[i]);
        }
    }
    cJSON_Delete(bk);
    assert_int_equal(remaining, expected);
    /* the preview agrees: everything there is kept, with its rules */
    cJSON *ret = bvh_json(&H, "GET", 200, "/api/v1/policies/hourly/retention", NULL);
    const cJSON *b;
    int listed = 0;
    cJSON_ArrayForEach(b, cJSON_GetObjectItem(ret, "backups")) {
        listed++;
        assert_true(bvh_bool(b, "keep"));
        assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(b, "rules")) > 0);
    }
    assert_int_equal(listed, expected);
    cJSON_Delete(ret);
    for (int i = 0; i < n; i++)
        free(pts[i].data);
    free(pts);
    bvh_stop(&H);
}

/* Europe/Berlin: 02:30 daily is skipped on 2026-03-29 (02:00 -> 03:00)
 * and repeated on 2026-10-25 (03:00 -> 02:00): each day runs once. */
static void dst_days(long long from, int days)
{
    long long after = head();
    int starts = 0;
    for (long long t = from; t < from + (long long)days * 86400; t += 1800) {
        cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/test/clock", "{\"now\":%lld}", t));
        char path[160];
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld&name=POLICY_RUN&wait=0.05",
                 after);
        cJSON *j = bvh_json(&H, "GET", 200, path, NULL);
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "events")) {
            after = (long long)bvh_num(e, "seq");
            if (strcmp(bvh_str(cJSON_GetObjectItem(e, "data"), "status"), "started") == 0)
                starts++;
        }
        cJSON_Delete(j);
    }
    /* let the last run end */
    tick(from + (long long)days * 86400, &after, false);
    assert_int_equal(starts, days);
}

static void test_dst(void **state)
{
    (void)state;
    long long mar27 = 1774569600;      /* 2026-03-27T00:00:00Z */
    start("Europe/Berlin", mar27 - 3600);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":%u}", DRIVE_SIZE));
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/policies",
                          "{\"name\":\"nightly\",\"drives\":[\"d0\"],\"schedule\":\"30 2 * * *\","
                          "\"retention\":{\"keep_last\":100}}"));
    dst_days(mar27, 4);                /* 27, 28, 29 (skipped hour), 30 */
    long long oct23 = 1792713600;      /* 2026-10-23T00:00:00Z */
    cJSON_Delete(bvh_json(&H, "POST", 200, "/api/v1/test/clock", "{\"now\":%lld}", oct23 - 60));
    long long after = head();
    tick(oct23 - 60, &after, false);   /* the catch-up run of the gap, ended */
    dst_days(oct23, 4);                /* 23, 24, 25 (repeated hour), 26 */
    bvh_stop(&H);
}

static void test_catchup_and_restart(void **state)
{
    (void)state;
    long long t0 = 1772323200;
    start(NULL, t0);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":%u}", DRIVE_SIZE));
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/policies",
                          "{\"name\":\"hourly\",\"drives\":[\"d0\"],\"schedule\":\"@hourly\","
                          "\"retention\":{\"keep_last\":5}}"));
    long long after = head();
    assert_string_equal(tick(t0 + 3600 + 5, &after, true), "ok");
    /* ten hours of downtime */
    H.keep_dir = true;
    bvh_stop(&H);
    H.keep_dir = false;
    snprintf(clock_arg, sizeof(clock_arg), "--test-clock=%lld", t0 + 11 * 3600 + 5);
    struct bvh_opts o = { .data_dir = H.dir, .args = args };
    char dir[256];
    snprintf(dir, sizeof(dir), "%s", H.dir);
    o.data_dir = dir;
    assert_int_equal(bvh_start(&H, &o), 0);
    /* one catch-up run, not ten */
    long long seen = 0;
    int starts = 0;
    for (int i = 0; i < 50 && starts < 2; i++) {
        char path[160];
        snprintf(path, sizeof(path), "/api/v1/events?after=%lld&name=POLICY_RUN&wait=0.2", seen);
        cJSON *j = bvh_json(&H, "GET", 200, path, NULL);
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "events")) {
            seen = (long long)bvh_num(e, "seq");
            if (strcmp(bvh_str(cJSON_GetObjectItem(e, "data"), "status"), "started") == 0 &&
                seen > after)
                starts++;
        }
        cJSON_Delete(j);
    }
    assert_int_equal(starts, 1);
    /* the policy and its history survived */
    cJSON *p = bvh_json(&H, "GET", 200, "/api/v1/policies/hourly", NULL);
    assert_string_equal(bvh_str(p, "schedule"), "@hourly");
    cJSON_Delete(p);
    cJSON *runs = bvh_json(&H, "GET", 200, "/api/v1/policies/hourly/runs", NULL);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(runs, "runs")) >= 2);
    cJSON_Delete(runs);
    bvh_stop(&H);
}

static void expect_400(const char *body, const char *needle)
{
    struct bvh_resp r;
    assert_int_equal(bvh_request(&H, "POST", "/api/v1/policies", body, strlen(body),
                                 "application/json", NULL, &r), 0);
    if (r.status != 400 || !strstr(r.body, needle))
        fail_msg("%s: expected 400 naming '%s', got %ld %s", body, needle, r.status, r.body);
    bvh_resp_free(&r);
}

static void test_validation(void **state)
{
    (void)state;
    start(NULL, 1772323200);
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":%u}", DRIVE_SIZE));
    expect_400("{\"name\":\"p\",\"drives\":[\"d0\"],\"schedule\":\"0 25 * * *\","
               "\"retention\":{\"keep_last\":1}}", "schedule");
    expect_400("{\"name\":\"p\",\"drives\":[\"d0\"],\"schedule\":\"0 25 * * *\","
               "\"retention\":{\"keep_last\":1}}", "hour");
    expect_400("{\"name\":\"p\",\"drives\":[\"nope\"],\"schedule\":\"@daily\","
               "\"retention\":{\"keep_last\":1}}", "drives[0]");
    expect_400("{\"name\":\"p\",\"drives\":[\"d0\"],\"schedule\":\"@daily\","
               "\"retention\":{\"keep_last\":0}}", "keeps nothing");
    expect_400("{\"name\":\"p\",\"drives\":[\"d0\"],\"schedule\":\"@daily\","
               "\"retention\":{\"keep_last\":1},\"verify\":\"sometimes\"}", "verify");
    bvh_stop(&H);
}

int main(void)
{
    if (!getenv("BV_DAEMON")) {
        fprintf(stderr, "BV_DAEMON not set; skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_catchup_and_restart),
        cmocka_unit_test(test_dst),
        cmocka_unit_test(test_month),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
