/* Private to db/: the connection handle and statement helpers. */
#ifndef BVDB_CATALOG_INT_H
#define BVDB_CATALOG_INT_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sqlite3.h>

#include "bvdb/catalog.h"

struct bvdb {
    pthread_mutex_t lock;      /* recursive; guards conn and every statement; taken with
                                  db_lock(), never directly */
#ifndef NDEBUG
    _Atomic uintptr_t owner;   /* debug: the holder's thread token (0: free) */
    unsigned depth;            /* debug: recursion depth, written by the holder only */
#endif
    sqlite3 *conn;
    void (*log)(void *opaque, const char *msg);
    void *log_opaque;
};

/* Take / release db->lock.  In debug builds they record the holding thread
 * (a _Thread_local address, stored relaxed: only the holder writes it while
 * the lock is held) so that *_locked functions can assert it with
 * DB_ASSERT_LOCKED; release builds compile to the bare mutex calls. */
void db_lock(bvdb *db);
void db_unlock(bvdb *db);
#ifndef NDEBUG
bool db_locked_by_me(bvdb *db);
#define DB_ASSERT_LOCKED(db) assert(db_locked_by_me(db))
#else
#define DB_ASSERT_LOCKED(db) ((void)(db))
#endif

/* Map a SQLite result code to the catalog's errno convention, logging the
 * connection's message for anything unexpected. */
int db_rc(bvdb *db, int rc, const char *what);

/* Prepare sql on db's connection; returns NULL (and logs) on failure. */
sqlite3_stmt *db_prepare(bvdb *db, const char *sql);

/*
 * The one statement loop every query goes through: take db->lock, prepare
 * sql, let bind() bind its parameters from arg (bind may be NULL), step to
 * the end, finalize, release the lock.  what names the statement in logged
 * failures.
 *
 * db_exec: for statements that return no rows.  Returns the number of rows
 * changed (>= 0) or -errno; *rowid_out (may be NULL) gets the last inserted
 * rowid, read under the same lock.
 *
 * db_query: row(st, opaque) sees each result row while the statement is
 * live (column texts die with the step) and returns non-zero to stop.
 * Returns the number of rows visited or -errno.
 */
typedef void db_bind_fn(sqlite3_stmt *st, const void *arg);
typedef int db_row_fn(sqlite3_stmt *st, void *opaque);

int db_exec(bvdb *db, const char *sql, db_bind_fn *bind, const void *arg, const char *what,
            int64_t *rowid_out);
int db_query(bvdb *db, const char *sql, db_bind_fn *bind, const void *arg, db_row_fn *row,
             void *opaque, const char *what);

/* Bind s, or NULL when s is NULL. */
void db_bind_opt_text(sqlite3_stmt *st, int i, const char *s);

int db_migrate(bvdb *db, char *err, size_t errlen);

#endif
