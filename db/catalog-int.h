/* Private to db/: the connection handle and statement helpers. */
#ifndef BVDB_CATALOG_INT_H
#define BVDB_CATALOG_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "bvdb/catalog.h"

struct bvdb {
    pthread_mutex_t lock;      /* recursive; guards conn and every statement */
    sqlite3 *conn;
    void (*log)(void *opaque, const char *msg);
    void *log_opaque;
};

/* Map a SQLite result code to the catalog's errno convention, logging the
 * connection's message for anything unexpected. */
int db_rc(bvdb *db, int rc, const char *what);

/* Prepare sql on db's connection; returns NULL (and logs) on failure. */
sqlite3_stmt *db_prepare(bvdb *db, const char *sql);

int db_migrate(bvdb *db, char *err, size_t errlen);

#endif
