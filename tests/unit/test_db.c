/* Catalog: migrations on empty and migrated databases, WAL, event log, drive, bitmap and
 * report rows through the one statement helper (errno mapping, early stop). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "bvdb/catalog.h"
#include "bvdb/drives.h"
#include "bvdb/events.h"
#include "bvdb/reports.h"

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/bv-db-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    unlink(path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[96];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
    return 0;
}

static int count_tables(const char *file)
{
    sqlite3 *c;
    sqlite3_stmt *st;
    int n = -1;
    sqlite3_open(file, &c);
    sqlite3_prepare_v2(c, "SELECT count(*) FROM sqlite_master WHERE type='table' "
                          "AND name NOT LIKE 'sqlite_%'", -1, &st, NULL);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(c);
    return n;
}

static void test_migrate_empty_then_again(void **state)
{
    (void)state;
    char err[256];
    bvdb *db;
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    assert_int_equal(bvdb_schema_version(db), bvdb_latest_version());
    assert_true(bvdb_latest_version() >= 1);
    bvdb_close(db);
    int tables = count_tables(path);
    /* 0001: drives bitmaps images jobs events chains backups prune_intents reports policies
     * policy_runs; 0002: damaged_extents sequences; 0005: tokens; 0006: remotes remote_links; 0007: remote_parts;
     * 0009: notifications notification_deliveries; 0011: remote_drives */
    assert_int_equal(tables, 21);

    /* an already-migrated catalog opens unchanged, data kept */
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    assert_int_equal(bvdb_event_append(db, "X", "2026-01-01T00:00:00.000Z", "{}", NULL), 0);
    bvdb_close(db);
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    assert_int_equal(bvdb_schema_version(db), bvdb_latest_version());
    assert_int_equal(bvdb_event_head(db), 1);
    bvdb_close(db);
    assert_int_equal(count_tables(path), 21);
}

static void test_wal_and_foreign_keys(void **state)
{
    (void)state;
    char err[256];
    bvdb *db;
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    bvdb_close(db);
    sqlite3 *c;
    sqlite3_stmt *st;
    sqlite3_open(path, &c);
    sqlite3_prepare_v2(c, "PRAGMA journal_mode", -1, &st, NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(c);
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    sqlite3 *c;
    sqlite3_open(path, &c);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", bvdb_latest_version() + 5);
    sqlite3_exec(c, sql, NULL, NULL, NULL);
    sqlite3_close(c);
    char err[256];
    bvdb *db = NULL;
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), -EPROTO);
    assert_null(db);
    assert_non_null(strstr(err, "newer than this Blockvault"));
}

struct seen { int n; long long seqs[8]; char names[8][16]; };

static int collect(const struct bvdb_event *ev, void *opaque)
{
    struct seen *s = opaque;
    s->seqs[s->n] = ev->seq;
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", ev->name);
    s->n++;
    return 0;
}

static void test_event_log(void **state)
{
    (void)state;
    char err[256];
    bvdb *db;
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    assert_int_equal(bvdb_event_head(db), 0);
    int64_t seq = 0;
    const char *names[] = { "A", "B", "A", "C" };
    for (int i = 0; i < 4; i++) {
        assert_int_equal(bvdb_event_append(db, names[i], "t", "{\"i\":1}", &seq), 0);
        assert_int_equal(seq, i + 1);
    }
    struct seen s = { 0 };
    assert_int_equal(bvdb_event_list(db, 1, NULL, 2, collect, &s), 2);
    assert_int_equal(s.seqs[0], 2);
    assert_int_equal(s.seqs[1], 3);
    memset(&s, 0, sizeof(s));
    assert_int_equal(bvdb_event_list(db, 0, "A", 100, collect, &s), 2);
    assert_int_equal(s.seqs[1], 3);
    assert_string_equal(s.names[1], "A");
    /* a rolled-back transaction leaves no event */
    assert_int_equal(bvdb_begin(db), 0);
    assert_int_equal(bvdb_event_append(db, "D", "t", "{}", NULL), 0);
    assert_int_equal(bvdb_rollback(db), 0);
    assert_int_equal(bvdb_event_head(db), 4);
    bvdb_close(db);
}

static int drive_ids(const struct bvdb_drive *d, void *opaque)
{
    struct seen *s = opaque;
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s:%llu:%s", d->id,
             (unsigned long long)d->size, d->filters);
    s->n++;
    return s->n == 2;       /* stop after two */
}

static void test_drive_rows(void **state)
{
    (void)state;
    char err[256];
    bvdb *db;
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    struct bvdb_drive d = { .id = "d0", .format = "raw", .file = "a", .size = 512,
                            .created_at = "t" };
    assert_int_equal(bvdb_drive_insert(db, &d), 0);
    assert_int_equal(bvdb_drive_insert(db, &d), -EEXIST);
    d.id = "d1"; d.filters = "{\"x\":1}";
    assert_int_equal(bvdb_drive_insert(db, &d), 0);
    d.id = "d2";
    assert_int_equal(bvdb_drive_insert(db, &d), 0);
    assert_int_equal(bvdb_drive_set_size(db, "d0", 4096), 0);
    assert_int_equal(bvdb_drive_set_size(db, "nope", 4096), -ENOENT);
    assert_int_equal(bvdb_drive_delete(db, "nope"), -ENOENT);
    struct seen s = { 0 };
    assert_int_equal(bvdb_drive_list(db, drive_ids, &s), 2);
    assert_string_equal(s.names[0], "d0:4096:{}");
    assert_string_equal(s.names[1], "d1:512:{\"x\":1}");
    struct bvdb_bitmap b = { .drive_id = "d1", .name = "b", .granularity = 65536 };
    assert_int_equal(bvdb_bitmap_insert(db, &b), 0);
    assert_int_equal(bvdb_bitmap_insert(db, &b), -EEXIST);
    assert_int_equal(bvdb_bitmap_set_enabled(db, "d1", "zz", true), -ENOENT);
    assert_int_equal(bvdb_bitmap_delete(db, "d1", "b"), 0);
    assert_int_equal(bvdb_bitmap_delete(db, "d1", "b"), -ENOENT);
    assert_int_equal(bvdb_drive_delete(db, "d2"), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(bvdb_drive_list(db, drive_ids, &s), 2);
    assert_string_equal(s.names[1], "d1:512:{\"x\":1}");
    bvdb_close(db);
}

static void copy_report(const struct bvdb_report *r, void *opaque)
{
    snprintf(opaque, 64, "%s/%s/%llu/%d", r->id, r->status,
             (unsigned long long)r->mismatched_bytes, r->has_mismatch);
}

static void test_report_rows(void **state)
{
    (void)state;
    char err[256], got[64] = "";
    bvdb *db;
    assert_int_equal(bvdb_open(path, &db, err, sizeof(err)), 0);
    assert_int_equal(bvdb_report_get(db, "r1", copy_report, got), -ENOENT);
    assert_string_equal(got, "");
    struct bvdb_report r = { .id = "r1", .kind = "compare", .status = "corrupt",
                             .has_mismatch = true, .mismatched_bytes = 7, .created_at = "t" };
    assert_int_equal(bvdb_report_insert(db, &r), 0);
    assert_int_equal(bvdb_report_insert(db, &r), -EEXIST);
    assert_int_equal(bvdb_report_get(db, "r1", copy_report, got), 0);
    assert_string_equal(got, "r1/corrupt/7/1");
    bvdb_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_empty_then_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_and_foreign_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drive_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
