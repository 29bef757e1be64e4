/*
 * Catalog connection: open with WAL and foreign keys, recursive lock for
 * transactions, error mapping.  See include/bvdb/catalog.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "catalog-int.h"

#ifndef NDEBUG
static uintptr_t thread_token(void)
{
    static _Thread_local char me;
    return (uintptr_t)&me;
}

bool db_locked_by_me(bvdb *db)
{
    return atomic_load_explicit(&db->owner, memory_order_relaxed) == thread_token();
}
#endif

void db_lock(bvdb *db)
{
    pthread_mutex_lock(&db->lock);
#ifndef NDEBUG
    if (db->depth++ == 0)
        atomic_store_explicit(&db->owner, thread_token(), memory_order_relaxed);
#endif
}

void db_unlock(bvdb *db)
{
#ifndef NDEBUG
    assert(db_locked_by_me(db) && db->depth > 0);
    if (--db->depth == 0)
        atomic_store_explicit(&db->owner, 0, memory_order_relaxed);
#endif
    pthread_mutex_unlock(&db->lock);
}

int db_rc(bvdb *db, int rc, const char *what)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
            return -EEXIST;
        break;
    default:
        break;
    }
    if (db->log) {
        char msg[512];
        snprintf(msg, sizeof(msg), "catalog: %s: %s", what, sqlite3_errmsg(db->conn));
        db->log(db->log_opaque, msg);
    }
    return -EIO;
}

sqlite3_stmt *db_prepare(bvdb *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        db_rc(db, rc, "prepare");
        return NULL;
    }
    return st;
}

int db_exec(bvdb *db, const char *sql, db_bind_fn *bind, const void *arg, const char *what,
            int64_t *rowid_out)
{
    db_lock(db);
    int r = -EIO;
    sqlite3_stmt *st = db_prepare(db, sql);
    if (!st)
        goto out;
    if (bind)
        bind(st, arg);
    r = db_rc(db, sqlite3_step(st), what);
    if (r == 0) {
        r = sqlite3_changes(db->conn);
        if (rowid_out)
            *rowid_out = sqlite3_last_insert_rowid(db->conn);
    }
out:
    sqlite3_finalize(st);
    db_unlock(db);
    return r;
}

int db_query(bvdb *db, const char *sql, db_bind_fn *bind, const void *arg, db_row_fn *row,
             void *opaque, const char *what)
{
    db_lock(db);
    int r = -EIO, n = 0, rc = SQLITE_ERROR;
    sqlite3_stmt *st = db_prepare(db, sql);
    if (!st)
        goto out;
    if (bind)
        bind(st, arg);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        if (row(st, opaque))
            break;
    }
    r = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? n : db_rc(db, rc, what);
out:
    sqlite3_finalize(st);
    db_unlock(db);
    return r;
}

void db_bind_opt_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static int exec_pragmas(bvdb *db, char *err, size_t errlen)
{
    static const char *const pragmas =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=FULL;"      /* a committed mutation survives power loss */
        "PRAGMA foreign_keys=ON;";
    char *msg = NULL;
    if (sqlite3_exec(db->conn, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot configure catalog: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

int bvdb_open(const char *path, bvdb **out, char *err, size_t errlen)
{
    if (errlen)
        err[0] = '\0';
    bvdb *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->lock, &a);
    pthread_mutexattr_destroy(&a);

    int r = -EIO;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (sqlite3_open_v2(path, &db->conn, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open catalog %s: %s", path,
                 db->conn ? sqlite3_errmsg(db->conn) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(db->conn, 5000);
    sqlite3_extended_result_codes(db->conn, 1);
    r = exec_pragmas(db, err, errlen);
    if (r < 0)
        goto fail;
    r = db_migrate(db, err, errlen);
    if (r < 0)
        goto fail;
    *out = db;
    return 0;
fail:
    bvdb_close(db);
    return r;
}

void bvdb_close(bvdb *db)
{
    if (!db)
        return;
    if (db->conn)
        sqlite3_close_v2(db->conn);
    pthread_mutex_destroy(&db->lock);
    free(db);
}

void bvdb_set_log(bvdb *db, void (*log)(void *opaque, const char *msg), void *opaque)
{
    db->log = log;
    db->log_opaque = opaque;
}

static int exec_locked(bvdb *db, const char *sql)
{
    DB_ASSERT_LOCKED(db);
    return db_rc(db, sqlite3_exec(db->conn, sql, NULL, NULL, NULL), sql);
}

int bvdb_begin(bvdb *db)
{
    db_lock(db);
    int r = exec_locked(db, "BEGIN IMMEDIATE");
    if (r < 0)
        db_unlock(db);
    return r;
}

int bvdb_commit(bvdb *db)
{
    int r = exec_locked(db, "COMMIT");
    if (r < 0)
        exec_locked(db, "ROLLBACK");
    db_unlock(db);
    return r;
}

int bvdb_rollback(bvdb *db)
{
    int r = exec_locked(db, "ROLLBACK");
    db_unlock(db);
    return r;
}

static int read_int(sqlite3_stmt *st, void *opaque)
{
    *(int *)opaque = sqlite3_column_int(st, 0);
    return 1;
}

int bvdb_schema_version(bvdb *db)
{
    int v = -1;
    return db_query(db, "PRAGMA user_version", NULL, NULL, read_int, &v, "user_version") == 1
           ? v : -1;
}

void bvdb_now(char out[32])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
}
