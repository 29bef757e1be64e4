/*
 * The SQLite catalog: connection, transactions and schema migrations.
 *
 * One connection per process, in WAL mode with foreign keys on and a busy
 * timeout.  It is shared by every thread; db->lock (a recursive mutex)
 * guards it.  Each query function takes the lock for its own statements;
 * bvdb_begin() takes it for the whole transaction and bvdb_commit() /
 * bvdb_rollback() release it, so a transaction is never interleaved with
 * another thread's statements.  Never call out (events, HTTP) while a
 * transaction is open.
 *
 * Return convention: 0 on success, -ENOENT when a row is missing, -EEXIST on
 * a uniqueness conflict, -EIO for any other SQLite failure (the message is
 * logged through the log callback, if set).  db/ stores plain records and
 * knows no core types; SQL lives only in db/.
 */
#ifndef BVDB_CATALOG_H
#define BVDB_CATALOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct bvdb bvdb;

/* Open (creating if needed) the catalog at path and migrate it to the
 * latest schema.  On failure returns a negative errno and writes a sentence
 * into err (if errlen > 0). */
int bvdb_open(const char *path, bvdb **out, char *err, size_t errlen);
void bvdb_close(bvdb *db);

/* PRAGMA user_version of the open catalog, and the version this build
 * migrates to. */
int bvdb_schema_version(bvdb *db);
int bvdb_latest_version(void);

/* Optional sink for SQLite failures (the service logs them). */
void bvdb_set_log(bvdb *db, void (*log)(void *opaque, const char *msg), void *opaque);

/* BEGIN IMMEDIATE … COMMIT/ROLLBACK, holding db->lock in between. */
int bvdb_begin(bvdb *db);
int bvdb_commit(bvdb *db);
int bvdb_rollback(bvdb *db);

/* Current UTC time as RFC 3339 with milliseconds ("2026-11-25T22:03:48.123Z"). */
void bvdb_now(char out[32]);

#endif
