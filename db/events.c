/* The append-only event log.  See include/bvdb/events.h. */
#include <errno.h>

#include "bvdb/events.h"
#include "catalog-int.h"

int bvdb_event_append(bvdb *db, const char *name, const char *timestamp,
                      const char *data_json, int64_t *seq_out)
{
    pthread_mutex_lock(&db->lock);
    int r = -EIO;
    sqlite3_stmt *st = db_prepare(db,
        "INSERT INTO events(name, timestamp, data) VALUES (?1, ?2, ?3)");
    if (!st)
        goto out;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, timestamp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, data_json, -1, SQLITE_STATIC);
    r = db_rc(db, sqlite3_step(st), "append event");
    if (r == 0 && seq_out)
        *seq_out = sqlite3_last_insert_rowid(db->conn);
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return r;
}

int bvdb_event_list(bvdb *db, int64_t after, const char *name, int limit,
                    int (*cb)(const struct bvdb_event *ev, void *opaque), void *opaque)
{
    pthread_mutex_lock(&db->lock);
    int r = -EIO, n = 0;
    sqlite3_stmt *st = db_prepare(db,
        "SELECT seq, name, timestamp, data FROM events "
        "WHERE seq > ?1 AND (?2 IS NULL OR name = ?2) ORDER BY seq LIMIT ?3");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, after);
    if (name)
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int(st, 3, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bvdb_event ev = {
            .seq = sqlite3_column_int64(st, 0),
            .name = (const char *)sqlite3_column_text(st, 1),
            .timestamp = (const char *)sqlite3_column_text(st, 2),
            .data = (const char *)sqlite3_column_text(st, 3),
        };
        n++;
        if (cb(&ev, opaque))
            break;
    }
    r = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? n : db_rc(db, rc, "list events");
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return r;
}

int64_t bvdb_event_head(bvdb *db)
{
    pthread_mutex_lock(&db->lock);
    int64_t head = 0;
    sqlite3_stmt *st = db_prepare(db, "SELECT COALESCE(MAX(seq), 0) FROM events");
    if (st && sqlite3_step(st) == SQLITE_ROW)
        head = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return head;
}
