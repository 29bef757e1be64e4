/*
 * Catalog upkeep (contract: "Operations", Upkeep):
 *  - history older than --history-days disappears in batches while the API
 *    keeps answering: months of old events, jobs, reports and policy runs
 *    are written into the catalog (with the sqlite3 library) while the
 *    daemon is down; after the restart the upkeep run deletes them while
 *    GETs answer quickly; newer history and what must stay (a report
 *    naming a damaged extent, the newest run of a policy) stay;
 *  - on the test clock: moving the clock past the limit ages the history,
 *    a live (concluded, not dismissed) job stays;
 *  - POST /api/v1/catalog/backup writes a copy that opens with sqlite3 and
 *    holds the drives; the refusals (existing file, chains/, outside).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "harness.h"

#define OLD_EVENTS   120000
#define OLD_JOBS     3000
#define OLD_TIME     "2020-01-01T00:00:00.000Z"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void pause_ms(int ms)
{
    struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

static void expect_status(struct bvh *h, const char *method, const char *path, const char *body,
                          long status)
{
    struct bvh_resp r;
    assert_int_equal(bvh_request(h, method, path, body, body ? strlen(body) : 0, NULL, NULL, &r),
                     0);
    if (r.status != status)
        print_message("%s %s: %ld %s\n", method, path, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, status);
    if (status >= 400)
        bvh_assert_error(&r, status, status == 404 ? "NotFound" : "GenericError");
    bvh_resp_free(&r);
}

/* Polls GET /backups/{bid} until it is no longer running; asserts complete. */
static void wait_backup(struct bvh *h, const char *bid)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    double end = now_s() + 120;
    for (;;) {
        cJSON *b = bvh_json(h, "GET", 200, path, NULL);
        char st[32];
        snprintf(st, sizeof(st), "%s", bvh_str(b, "status"));
        cJSON_Delete(b);
        if (strcmp(st, "running") != 0) {
            assert_string_equal(st, "complete");
            return;
        }
        assert_true(now_s() < end);
        pause_ms(50);
    }
}

static void full_backup(struct bvh *h, const char *drive, char bid[32])
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/backups", drive);
    cJSON *j = bvh_json(h, "POST", 201, path, "{\"kind\":\"full\"}");
    snprintf(bid, 32, "%s", bvh_str(cJSON_GetObjectItem(j, "backup"), "id"));
    cJSON_Delete(j);
    wait_backup(h, bid);
}

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        print_message("sqlite: %s: %s\n", sql, msg ? msg : "?");
    sqlite3_free(msg);
    assert_int_equal(rc, SQLITE_OK);
}

static long long count_sql(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* Old history written straight into the stopped daemon's catalog. */
static void write_old_history(const char *dir, const char *bid)
{
    char path[400], sql[1024];
    snprintf(path, sizeof(path), "%s/catalog.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    exec_sql(db, "BEGIN");
    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
             "INSERT INTO events(name, timestamp, data) SELECT 'OLD_TEST_EVENT', '" OLD_TIME "', "
             "'{\"i\":' || i || '}' FROM n", OLD_EVENTS);
    exec_sql(db, sql);
    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
             "INSERT INTO jobs(job_id, type, device, status, created_at, finished_at) "
             "SELECT 'old' || i, 'backup', 'd0', 'null', '" OLD_TIME "', '" OLD_TIME "' FROM n",
             OLD_JOBS);
    exec_sql(db, sql);
    /* the newest event is always kept: make it a new one */
    exec_sql(db, "INSERT INTO events(name, timestamp, data) VALUES ('NEW_TEST_EVENT', "
                 "strftime('%Y-%m-%dT%H:%M:%fZ','now'), '{}')");
    exec_sql(db, "INSERT INTO reports(id, kind, status, created_at) VALUES "
                 "('r-old-clean', 'checksum', 'clean', '" OLD_TIME "'), "
                 "('r-new-clean', 'checksum', 'clean', strftime('%Y-%m-%dT%H:%M:%fZ','now'))");
    snprintf(sql, sizeof(sql),
             "INSERT INTO reports(id, kind, status, created_at, affected) VALUES "
             "('r-old-damage', 'checksum', 'corrupt', '" OLD_TIME "', '[\"%s\"]');"
             "INSERT INTO damaged_extents(backup_id, offset_, length, report_id, created_at) "
             "VALUES ('%s', 0, 65536, 'r-old-damage', '" OLD_TIME "')", bid, bid);
    exec_sql(db, sql);
    exec_sql(db, "INSERT INTO policy_runs(policy, started_at, finished_at, status) VALUES "
                 "('p1', '2019-12-01T00:00:00.000Z', '2019-12-01T00:01:00.000Z', 'ok'), "
                 "('p1', '2019-12-02T00:00:00.000Z', '2019-12-02T00:01:00.000Z', 'ok'), "
                 "('p1', '" OLD_TIME "', '2020-01-01T00:01:00.000Z', 'failed')");
    exec_sql(db, "COMMIT");
    sqlite3_close(db);
}

static cJSON *upkeep_status(struct bvh *h)
{
    return bvh_json(h, "GET", 200, "/api/v1/catalog/upkeep", NULL);
}

static double deleted(const cJSON *st, const char *kind)
{
    return bvh_num(cJSON_GetObjectItem(st, "deleted"), kind);
}

static void test_old_history_goes_in_batches(void **state)
{
    (void)state;
    struct bvh h = { 0 };
    static const char *args[] = { "--history-days", "30", NULL };
    struct bvh_opts o = { .args = args };
    assert_int_equal(bvh_start(&h, &o), 0);
    h.keep_dir = true;
    cJSON_Delete(bvh_json(&h, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d0\",\"format\":\"qcow2\",\"size\":1048576}"));
    cJSON_Delete(bvh_json(&h, "POST", 201, "/api/v1/policies",
                          "{\"name\":\"p1\",\"drives\":[\"d0\"],\"schedule\":\"0 3 * * *\","
                          "\"retention\":{\"keep_last\":3},\"enabled\":false}"));
    char bid[32];
    full_backup(&h, "d0", bid);
    cJSON *ev = bvh_json(&h, "GET", 200, "/api/v1/events?after=0&limit=1000", NULL);
    int new_events = cJSON_GetArraySize(cJSON_GetObjectItem(ev, "events"));
    cJSON_Delete(ev);
    assert_true(new_events > 0);
    assert_int_equal(bvh_stop(&h), 0);

    write_old_history(h.dir, bid);
    char stale[400];                                    /* a copy a crash left behind */
    snprintf(stale, sizeof(stale), "%s/.catalog-copy.AbC123", h.dir);
    assert_int_equal(bvh_sh("echo x > '%s'", stale), 0);
    assert_int_equal(bvh_restart(&h), 0);
    assert_int_not_equal(access(stale, F_OK), 0);

    /* the run starts with the daemon: the API answers while it deletes */
    double worst = 0, end = now_s() + 300;
    int answered_while_running = 0;
    for (;;) {
        double t0 = now_s();
        cJSON *st = upkeep_status(&h);
        cJSON_Delete(bvh_json(&h, "GET", 200, "/api/v1/drives", NULL));
        double dt = now_s() - t0;
        worst = dt > worst ? dt : worst;
        bool running = bvh_bool(st, "running");
        bool done = !running && bvh_num(st, "runs") >= 1;
        if (running && deleted(st, "events") > 0 && deleted(st, "events") < OLD_EVENTS)
            answered_while_running++;
        if (done) {
            assert_int_equal((int)deleted(st, "events"), OLD_EVENTS);
            assert_int_equal((int)deleted(st, "jobs"), OLD_JOBS);
            assert_int_equal((int)deleted(st, "reports"), 1);
            assert_int_equal((int)deleted(st, "policy_runs"), 2);
            assert_int_equal((int)bvh_num(st, "history_days"), 30);
            cJSON_Delete(st);
            break;
        }
        cJSON_Delete(st);
        assert_true(now_s() < end);
        pause_ms(20);
    }
    print_message("upkeep: %d answers while it deleted, slowest %.3f s\n",
                  answered_while_running, worst);
    /* the metrics carry the same counts (since start: this is the first run that deleted) */
    struct bvh_resp m;
    assert_int_equal(bvh_request(&h, "GET", "/metrics", NULL, 0, NULL, NULL, &m), 0);
    assert_int_equal(m.status, 200);
    char line[128];
    snprintf(line, sizeof(line), "blockvault_upkeep_deleted_rows_total{kind=\"events\"} %d\n",
             OLD_EVENTS);
    assert_non_null(strstr(m.body, line));
    snprintf(line, sizeof(line), "blockvault_upkeep_deleted_rows_total{kind=\"jobs\"} %d\n",
             OLD_JOBS);
    assert_non_null(strstr(m.body, line));
    assert_non_null(strstr(m.body, "blockvault_upkeep_running 0\n"));
    bvh_resp_free(&m);
    assert_true(answered_while_running >= 1);
    assert_true(worst < 2.0);

    /* newer history stays, old history is gone */
    ev = bvh_json(&h, "GET", 200, "/api/v1/events?after=0&limit=1000", NULL);
    cJSON *arr = cJSON_GetObjectItem(ev, "events"), *e;
    int old_left = 0, kept = 0;
    cJSON_ArrayForEach(e, arr) {
        const char *name = bvh_str(e, "event");
        old_left += strcmp(name, "OLD_TEST_EVENT") == 0;
        kept += strcmp(name, "OLD_TEST_EVENT") != 0 && strcmp(name, "NEW_TEST_EVENT") != 0;
    }
    assert_int_equal(old_left, 0);
    assert_true(kept >= new_events);
    cJSON_Delete(ev);
    cJSON *jobs = bvh_json(&h, "GET", 200, "/api/v1/jobs?history=true", NULL);
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(jobs, "jobs"))
        assert_true(strncmp(bvh_str(e, "id"), "old", 3) != 0);
    cJSON_Delete(jobs);
    expect_status(&h, "GET", "/api/v1/reports/r-old-clean", NULL, 404);
    cJSON_Delete(bvh_json(&h, "GET", 200, "/api/v1/reports/r-old-damage", NULL));
    cJSON_Delete(bvh_json(&h, "GET", 200, "/api/v1/reports/r-new-clean", NULL));
    cJSON *runs = bvh_json(&h, "GET", 200, "/api/v1/policies/p1/runs", NULL);
    cJSON *ra = cJSON_GetObjectItem(runs, "runs");
    assert_int_equal(cJSON_GetArraySize(ra), 1);
    assert_string_equal(bvh_str(cJSON_GetArrayItem(ra, 0), "started_at"), OLD_TIME);
    cJSON_Delete(runs);

    /* a second run finds nothing more */
    cJSON_Delete(bvh_json(&h, "POST", 202, "/api/v1/catalog/upkeep", NULL));
    end = now_s() + 60;
    for (;;) {
        cJSON *st = upkeep_status(&h);
        bool done = !bvh_bool(st, "running") && bvh_num(st, "runs") >= 2;
        if (done)
            assert_int_equal((int)deleted(st, "events"), 0);
        cJSON_Delete(st);
        if (done)
            break;
        assert_true(now_s() < end);
        pause_ms(20);
    }
    h.keep_dir = false;
    bvh_stop(&h);
}

/* Moving the test clock past the limit ages everything written so far; a
 * concluded job that is not dismissed is live and stays. */
static void test_clock_ages_history(void **state)
{
    (void)state;
    struct bvh h = { 0 };
    char clock_arg[64];
    long long t0 = (long long)time(NULL);
    snprintf(clock_arg, sizeof(clock_arg), "--test-clock=%lld", t0);
    const char *args[] = { clock_arg, "--history-days", "1", NULL };
    struct bvh_opts o = { .args = args };
    assert_int_equal(bvh_start(&h, &o), 0);
    cJSON_Delete(bvh_json(&h, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"d1\",\"format\":\"qcow2\",\"size\":1048576}"));
    char bid[32];
    full_backup(&h, "d1", bid);                       /* its job is history once done */
    cJSON_Delete(bvh_json(&h, "POST", 201, "/api/v1/jobs",
                          "{\"type\":\"backup\",\"device\":\"d1\",\"sync\":\"full\","
                          "\"target\":\"t.qcow2\",\"format\":\"qcow2\",\"job_id\":\"live1\","
                          "\"auto_dismiss\":false}"));
    double end = now_s() + 60;
    for (;;) {
        cJSON *j = bvh_json(&h, "GET", 200, "/api/v1/jobs/live1", NULL);
        bool concluded = strcmp(bvh_str(j, "status"), "concluded") == 0;
        cJSON_Delete(j);
        if (concluded)
            break;
        assert_true(now_s() < end);
        pause_ms(20);
    }
    cJSON *st;
    double runs = 0;
    end = now_s() + 60;
    for (;;) {                                          /* the run at start is over */
        st = upkeep_status(&h);
        runs = bvh_num(st, "runs");
        bool idle = !bvh_bool(st, "running") && runs >= 1;
        cJSON_Delete(st);
        if (idle)
            break;
        assert_true(now_s() < end);
        pause_ms(20);
    }
    cJSON_Delete(bvh_json(&h, "POST", 200, "/api/v1/test/clock", "{\"now\":%lld}",
                          t0 + 2 * 86400));
    end = now_s() + 60;
    for (;;) {
        st = upkeep_status(&h);
        bool done = !bvh_bool(st, "running") && bvh_num(st, "runs") > runs;
        if (done) {
            assert_true(deleted(st, "jobs") >= 1);
            assert_true(deleted(st, "events") >= 1);
        }
        cJSON_Delete(st);
        if (done)
            break;
        assert_true(now_s() < end);
        pause_ms(20);
    }
    cJSON *j = bvh_json(&h, "GET", 200, "/api/v1/jobs/live1", NULL);
    assert_string_equal(bvh_str(j, "status"), "concluded");
    cJSON_Delete(j);
    cJSON *jobs = bvh_json(&h, "GET", 200, "/api/v1/jobs?history=true", NULL);
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(jobs, "jobs"))
        assert_string_equal(bvh_str(e, "status"), "concluded");   /* only the live one */
    cJSON_Delete(jobs);
    /* the newest event stays: the event head does not go back */
    cJSON *ev = bvh_json(&h, "GET", 200, "/api/v1/events?after=0&limit=1000", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ev, "events")), 1);
    cJSON_Delete(ev);
    bvh_stop(&h);
}

static void test_history_days_zero_keeps_all(void **state)
{
    (void)state;
    struct bvh h = { 0 };
    static const char *args[] = { "--history-days", "0", NULL };
    struct bvh_opts o = { .args = args };
    assert_int_equal(bvh_start(&h, &o), 0);
    cJSON *st = upkeep_status(&h);
    assert_int_equal((int)bvh_num(st, "history_days"), 0);
    cJSON_Delete(st);
    expect_status(&h, "POST", "/api/v1/catalog/upkeep", NULL, 409);
    expect_status(&h, "POST", "/api/v1/catalog/upkeep", "{\"now\":1}", 400);   /* no fields */
    bvh_stop(&h);
    /* a bad value refuses to start, naming the flag */
    const char *daemon = getenv("BV_DAEMON");
    assert_non_null(daemon);
    assert_int_equal(bvh_sh("'%s' serve --listen 127.0.0.1:0 --data /nonexistent/bv "
                            "--history-days -3 2>&1 | grep -q -- '--history-days'", daemon), 0);
    assert_int_equal(bvh_sh("'%s' serve --listen 127.0.0.1:0 --data /nonexistent/bv "
                            "--history-days 12x 2>&1 | grep -q -- '--history-days'", daemon), 0);
}

static void test_catalog_backup(void **state)
{
    (void)state;
    struct bvh h = { 0 };
    assert_int_equal(bvh_start(&h, NULL), 0);
    cJSON_Delete(bvh_json(&h, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"c0\",\"format\":\"raw\",\"size\":65536}"));
    cJSON_Delete(bvh_json(&h, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"c1\",\"format\":\"qcow2\",\"size\":1048576}"));
    char bid[32];
    full_backup(&h, "c1", bid);
    cJSON *r = bvh_json(&h, "POST", 201, "/api/v1/catalog/backup", "{\"file\":\"cat.sqlite\"}");
    assert_string_equal(bvh_str(r, "file"), "cat.sqlite");
    assert_true(bvh_num(r, "size") > 0);
    cJSON_Delete(r);

    char path[400];
    snprintf(path, sizeof(path), "%s/cat.sqlite", h.images);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    assert_int_equal(count_sql(db, "SELECT COUNT(*) FROM drives WHERE id IN ('c0','c1')"), 2);
    char q[200];
    snprintf(q, sizeof(q), "SELECT COUNT(*) FROM backups WHERE id = '%s' AND status = "
             "'complete'", bid);
    assert_int_equal(count_sql(db, q), 1);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "delete");   /* one file */
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* the refusals: nothing is overwritten or written outside */
    expect_status(&h, "POST", "/api/v1/catalog/backup", "{\"file\":\"cat.sqlite\"}", 409);
    snprintf(q, sizeof(q), "{\"file\":\"chains/c1/x.sqlite\"}");
    expect_status(&h, "POST", "/api/v1/catalog/backup", q, 409);
    expect_status(&h, "POST", "/api/v1/catalog/backup", "{\"file\":\"../out.sqlite\"}", 400);
    expect_status(&h, "POST", "/api/v1/catalog/backup", "{\"file\":\"/tmp/out.sqlite\"}", 400);
    expect_status(&h, "POST", "/api/v1/catalog/backup", "{\"file\":\"nodir/x.sqlite\"}", 400);
    expect_status(&h, "POST", "/api/v1/catalog/backup", "{}", 400);
    expect_status(&h, "POST", "/api/v1/catalog/backup", "{\"file\":\"y\",\"x\":1}", 400);
    snprintf(path, sizeof(path), "%s/../out.sqlite", h.images);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/chains/c1/x.sqlite", h.images);
    assert_int_not_equal(access(path, F_OK), 0);
    bvh_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalog_backup),
        cmocka_unit_test(test_history_days_zero_keeps_all),
        cmocka_unit_test(test_clock_ages_history),
        cmocka_unit_test(test_old_history_goes_in_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
