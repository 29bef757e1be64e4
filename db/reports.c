/* Report rows: see include/bvdb/reports.h. */
#include <errno.h>

#include "bvdb/reports.h"
#include "catalog-int.h"

#define REPORT_COLS "id, job_id, drive_id, kind, status, test, reference, " \
    "first_mismatch_sector, first_mismatch_offset, mismatched_bytes, extents, extents_total, " \
    "samples, created_at"

static void bind_opt_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

int bvdb_report_insert(bvdb *db, const struct bvdb_report *r)
{
    pthread_mutex_lock(&db->lock);
    int rc = -EIO;
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO reports(" REPORT_COLS ") VALUES "
                                      "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)");
    if (st) {
        bind_opt_text(st, 1, r->id);
        bind_opt_text(st, 2, r->job_id);
        bind_opt_text(st, 3, r->drive_id);
        bind_opt_text(st, 4, r->kind);
        bind_opt_text(st, 5, r->status);
        bind_opt_text(st, 6, r->test);
        bind_opt_text(st, 7, r->reference);
        if (r->has_mismatch) {
            sqlite3_bind_int64(st, 8, (sqlite3_int64)r->first_mismatch_sector);
            sqlite3_bind_int64(st, 9, (sqlite3_int64)r->first_mismatch_offset);
        }
        sqlite3_bind_int64(st, 10, (sqlite3_int64)r->mismatched_bytes);
        bind_opt_text(st, 11, r->extents ? r->extents : "[]");
        sqlite3_bind_int64(st, 12, (sqlite3_int64)r->extents_total);
        bind_opt_text(st, 13, r->samples ? r->samples : "[]");
        bind_opt_text(st, 14, r->created_at);
        rc = db_rc(db, sqlite3_step(st), "insert report");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
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
}

int bvdb_report_get(bvdb *db, const char *id,
                    void (*cb)(const struct bvdb_report *r, void *opaque), void *opaque)
{
    pthread_mutex_lock(&db->lock);
    int rc = -EIO;
    sqlite3_stmt *st = db_prepare(db, "SELECT " REPORT_COLS " FROM reports WHERE id = ?1");
    if (st) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            struct bvdb_report r;
            row(st, &r);
            cb(&r, opaque);
            rc = 0;
        } else {
            rc = s == SQLITE_DONE ? -ENOENT : db_rc(db, s, "get report");
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}

int bvdb_report_list(bvdb *db, int limit,
                     int (*cb)(const struct bvdb_report *r, void *opaque), void *opaque)
{
    pthread_mutex_lock(&db->lock);
    int rc = -EIO, n = 0, s = SQLITE_ERROR;
    sqlite3_stmt *st = db_prepare(db, "SELECT " REPORT_COLS " FROM reports "
                                      "ORDER BY created_at DESC, rowid DESC LIMIT ?1");
    if (st)
        sqlite3_bind_int(st, 1, limit);
    while (st && (s = sqlite3_step(st)) == SQLITE_ROW) {
        struct bvdb_report r;
        row(st, &r);
        n++;
        if (cb(&r, opaque))
            break;
    }
    if (st)
        rc = (s == SQLITE_ROW || s == SQLITE_DONE) ? n : db_rc(db, s, "list reports");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc;
}
