/* Job rows.  See include/bvdb/jobs.h. */
#include <errno.h>
#include <string.h>

#include "bvdb/jobs.h"
#include "catalog-int.h"

static void bind_job(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_job *j = arg;
    sqlite3_bind_text(st, 1, j->job_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->type, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 3, j->device);
    sqlite3_bind_text(st, 4, j->status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)j->offset);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)j->len);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)j->speed);
    db_bind_opt_text(st, 8, j->error);
    sqlite3_bind_int(st, 9, j->auto_finalize);
    sqlite3_bind_int(st, 10, j->auto_dismiss);
    sqlite3_bind_text(st, 11, j->params ? j->params : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, j->created_at, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 13, j->started_at);
    db_bind_opt_text(st, 14, j->finished_at);
    sqlite3_bind_int64(st, 15, j->rowid);
}

int bvdb_job_insert(bvdb *db, const struct bvdb_job *j, int64_t *rowid)
{
    int r = db_exec(db, "INSERT INTO jobs(job_id, type, device, status, offset_, len, speed, "
                        "error, auto_finalize, auto_dismiss, params, created_at, started_at, "
                        "finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
                        "?12, ?13, ?14)",
                    bind_job, j, "insert job", rowid);
    return r < 0 ? r : 0;
}

int bvdb_job_update(bvdb *db, const struct bvdb_job *j)
{
    int r = db_exec(db, "UPDATE jobs SET status = ?4, offset_ = ?5, len = ?6, speed = ?7, "
                        "error = ?8, started_at = ?13, finished_at = ?14 WHERE rowid_ = ?15",
                    bind_job, j, "update job", NULL);
    if (r == 0)
        return -ENOENT;
    return r < 0 ? r : 0;
}

struct job_cb {
    int (*cb)(const struct bvdb_job *j, void *opaque);
    void *opaque;
};

#define JOB_COLUMNS "rowid_, job_id, type, device, status, offset_, len, speed, error, " \
                    "auto_finalize, auto_dismiss, params, created_at, started_at, finished_at"

static int job_row(sqlite3_stmt *st, void *opaque)
{
    const struct job_cb *c = opaque;
    struct bvdb_job j = {
        .rowid = sqlite3_column_int64(st, 0),
        .job_id = (const char *)sqlite3_column_text(st, 1),
        .type = (const char *)sqlite3_column_text(st, 2),
        .device = (const char *)sqlite3_column_text(st, 3),
        .status = (const char *)sqlite3_column_text(st, 4),
        .offset = (uint64_t)sqlite3_column_int64(st, 5),
        .len = (uint64_t)sqlite3_column_int64(st, 6),
        .speed = (uint64_t)sqlite3_column_int64(st, 7),
        .error = (const char *)sqlite3_column_text(st, 8),
        .auto_finalize = sqlite3_column_int(st, 9) != 0,
        .auto_dismiss = sqlite3_column_int(st, 10) != 0,
        .params = (const char *)sqlite3_column_text(st, 11),
        .created_at = (const char *)sqlite3_column_text(st, 12),
        .started_at = (const char *)sqlite3_column_text(st, 13),
        .finished_at = (const char *)sqlite3_column_text(st, 14),
    };
    return c->cb(&j, c->opaque);
}

static void bind_filter(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_job_filter *f = arg;
    db_bind_opt_text(st, 1, f->job_id);
    db_bind_opt_text(st, 2, f->status);
    db_bind_opt_text(st, 3, f->type);
    sqlite3_bind_int(st, 4, f->live_only);
    sqlite3_bind_int(st, 5, f->limit > 0 ? f->limit : -1);
}

int bvdb_job_list(bvdb *db, const struct bvdb_job_filter *f,
                  int (*cb)(const struct bvdb_job *j, void *opaque), void *opaque)
{
    struct job_cb c = { cb, opaque };
    return db_query(db, "SELECT " JOB_COLUMNS " FROM jobs WHERE (?1 IS NULL OR job_id = ?1) "
                        "AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR type = ?3) "
                        "AND (?4 = 0 OR status <> 'null') ORDER BY rowid_ DESC LIMIT ?5",
                    bind_filter, f, job_row, &c, "list jobs");
}

struct interrupt_in { const char *error, *now; };

static void bind_interrupt(sqlite3_stmt *st, const void *arg)
{
    const struct interrupt_in *in = arg;
    sqlite3_bind_text(st, 1, in->error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, in->now, -1, SQLITE_STATIC);
}

int bvdb_job_interrupt_live(bvdb *db, const char *error, const char *now,
                            int (*cb)(const struct bvdb_job *j, void *opaque), void *opaque)
{
    struct interrupt_in in = { error, now };
    int r = bvdb_begin(db);
    if (r < 0)
        return r;
    if (cb) {
        struct bvdb_job_filter f = { .live_only = true };
        r = bvdb_job_list(db, &f, cb, opaque);
    }
    if (r >= 0)
        r = db_exec(db, "UPDATE jobs SET status = 'null', "
                        "error = COALESCE(error, ?1), finished_at = COALESCE(finished_at, ?2) "
                        "WHERE status <> 'null'", bind_interrupt, &in, "interrupt jobs", NULL);
    if (r < 0) {
        bvdb_rollback(db);
        return r;
    }
    int c = bvdb_commit(db);
    return c < 0 ? c : r;
}

struct count_cb {
    int (*cb)(const char *type, const char *status, int64_t n, void *opaque);
    void *opaque;
};

static int count_row(sqlite3_stmt *st, void *opaque)
{
    const struct count_cb *c = opaque;
    return c->cb((const char *)sqlite3_column_text(st, 0),
                 (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2),
                 c->opaque);
}

int bvdb_job_counts(bvdb *db, int (*cb)(const char *type, const char *status, int64_t n,
                                        void *opaque), void *opaque)
{
    struct count_cb c = { cb, opaque };
    return db_query(db, "SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status",
                    NULL, NULL, count_row, &c, "count jobs");
}
