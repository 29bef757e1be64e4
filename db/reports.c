/* Report rows: see include/bvdb/reports.h. */
#include <errno.h>

#include "bvdb/reports.h"
#include "catalog-int.h"

#define REPORT_COLS "id, job_id, drive_id, kind, status, test, reference, " \
    "first_mismatch_sector, first_mismatch_offset, mismatched_bytes, extents, extents_total, " \
    "samples, created_at, affected"

static void bind_report(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_report *r = arg;
    db_bind_opt_text(st, 1, r->id);
    db_bind_opt_text(st, 2, r->job_id);
    db_bind_opt_text(st, 3, r->drive_id);
    db_bind_opt_text(st, 4, r->kind);
    db_bind_opt_text(st, 5, r->status);
    db_bind_opt_text(st, 6, r->test);
    db_bind_opt_text(st, 7, r->reference);
    if (r->has_mismatch) {
        sqlite3_bind_int64(st, 8, (sqlite3_int64)r->first_mismatch_sector);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)r->first_mismatch_offset);
    }
    sqlite3_bind_int64(st, 10, (sqlite3_int64)r->mismatched_bytes);
    db_bind_opt_text(st, 11, r->extents ? r->extents : "[]");
    sqlite3_bind_int64(st, 12, (sqlite3_int64)r->extents_total);
    db_bind_opt_text(st, 13, r->samples ? r->samples : "[]");
    db_bind_opt_text(st, 14, r->created_at);
    db_bind_opt_text(st, 15, r->affected ? r->affected : "[]");
}

int bvdb_report_insert(bvdb *db, const struct bvdb_report *r)
{
    int rc = db_exec(db, "INSERT INTO reports(" REPORT_COLS ") VALUES "
                         "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
                     bind_report, r, "insert report", NULL);
    return rc < 0 ? rc : 0;
}

static void row(sqlite3_stmt *st, struct bvdb_report *r)
{
    r->id = (const char *)sqlite3_column_text(st, 0);
    r->job_id = (const char *)sqlite3_column_text(st, 1);
    r->drive_id = (const char *)sqlite3_column_text(st, 2);
    r->kind = (const char *)sqlite3_column_text(st, 3);
    r->status = (const char *)sqlite3_column_text(st, 4);
    r->test = (const char *)sqlite3_column_text(st, 5);
    r->reference = (const char *)sqlite3_column_text(st, 6);
    r->has_mismatch = sqlite3_column_type(st, 8) != SQLITE_NULL;
    r->first_mismatch_sector = (uint64_t)sqlite3_column_int64(st, 7);
    r->first_mismatch_offset = (uint64_t)sqlite3_column_int64(st, 8);
    r->mismatched_bytes = (uint64_t)sqlite3_column_int64(st, 9);
    r->extents = (const char *)sqlite3_column_text(st, 10);
    r->extents_total = (uint64_t)sqlite3_column_int64(st, 11);
    r->samples = (const char *)sqlite3_column_text(st, 12);
    r->created_at = (const char *)sqlite3_column_text(st, 13);
    r->affected = (const char *)sqlite3_column_text(st, 14);
}

struct report_cb {
    int (*list)(const struct bvdb_report *r, void *opaque);
    void (*get)(const struct bvdb_report *r, void *opaque);
    void *opaque;
};

static int report_row(sqlite3_stmt *st, void *opaque)
{
    const struct report_cb *c = opaque;
    struct bvdb_report r;
    row(st, &r);
    if (c->get) {
        c->get(&r, c->opaque);
        return 1;
    }
    return c->list(&r, c->opaque);
}

static void bind_text1(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int bvdb_report_get(bvdb *db, const char *id,
                    void (*cb)(const struct bvdb_report *r, void *opaque), void *opaque)
{
    struct report_cb c = { .get = cb, .opaque = opaque };
    int n = db_query(db, "SELECT " REPORT_COLS " FROM reports WHERE id = ?1", bind_text1, id,
                     report_row, &c, "get report");
    return n == 0 ? -ENOENT : (n < 0 ? n : 0);
}

static void bind_limit(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_int(st, 1, *(const int *)arg);
}

int bvdb_report_list(bvdb *db, int limit,
                     int (*cb)(const struct bvdb_report *r, void *opaque), void *opaque)
{
    struct report_cb c = { .list = cb, .opaque = opaque };
    return db_query(db, "SELECT " REPORT_COLS " FROM reports "
                        "ORDER BY created_at DESC, rowid DESC LIMIT ?1",
                    bind_limit, &limit, report_row, &c, "list reports");
}
