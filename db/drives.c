/* Drive and bitmap rows: see include/bvdb/drives.h. */
#include <errno.h>

#include "bvdb/drives.h"
#include "catalog-int.h"

/* Run one prepared statement to completion under the lock.  bind() binds the
 * parameters.  Returns 0, -ENOENT if want_change and no row changed, or the
 * mapped error. */
static int exec_stmt(bvdb *db, const char *sql, void (*bind)(sqlite3_stmt *, const void *),
                     const void *arg, bool want_change, const char *what)
{
    pthread_mutex_lock(&db->lock);
    int r = -EIO;
    sqlite3_stmt *st = db_prepare(db, sql);
    if (st) {
        bind(st, arg);
        r = db_rc(db, sqlite3_step(st), what);
        if (r == 0 && want_change && sqlite3_changes(db->conn) == 0)
            r = -ENOENT;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return r;
}

static void bind_drive(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_drive *d = arg;
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d->format, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, d->file, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)d->size);
    sqlite3_bind_int64(st, 5, d->cluster_size);
    sqlite3_bind_text(st, 6, d->filters ? d->filters : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, d->created_at, -1, SQLITE_STATIC);
}

int bvdb_drive_insert(bvdb *db, const struct bvdb_drive *d)
{
    return exec_stmt(db, "INSERT INTO drives(id, format, file, size, cluster_size, filters, "
                         "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                     bind_drive, d, false, "insert drive");
}

static void bind_id(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int bvdb_drive_delete(bvdb *db, const char *id)
{
    return exec_stmt(db, "DELETE FROM drives WHERE id = ?1", bind_id, id, true, "delete drive");
}

struct id_size { const char *id; uint64_t size; };

static void bind_id_size(sqlite3_stmt *st, const void *arg)
{
    const struct id_size *is = arg;
    sqlite3_bind_text(st, 1, is->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)is->size);
}

int bvdb_drive_set_size(bvdb *db, const char *id, uint64_t size)
{
    struct id_size is = { id, size };
    return exec_stmt(db, "UPDATE drives SET size = ?2 WHERE id = ?1", bind_id_size, &is, true,
                     "update drive size");
}

int bvdb_drive_list(bvdb *db, int (*cb)(const struct bvdb_drive *d, void *opaque), void *opaque)
{
    pthread_mutex_lock(&db->lock);
    int r = -EIO, n = 0, rc = SQLITE_ERROR;
    sqlite3_stmt *st = db_prepare(db, "SELECT id, format, file, size, cluster_size, filters, "
                                      "created_at FROM drives ORDER BY rowid");
    while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bvdb_drive d = {
            .id = (const char *)sqlite3_column_text(st, 0),
            .format = (const char *)sqlite3_column_text(st, 1),
            .file = (const char *)sqlite3_column_text(st, 2),
            .size = (uint64_t)sqlite3_column_int64(st, 3),
            .cluster_size = (uint32_t)sqlite3_column_int64(st, 4),
            .filters = (const char *)sqlite3_column_text(st, 5),
            .created_at = (const char *)sqlite3_column_text(st, 6),
        };
        n++;
        if (cb(&d, opaque))
            break;
    }
    if (st)
        r = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? n : db_rc(db, rc, "list drives");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return r;
}

static void bind_bitmap(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_bitmap *b = arg;
    sqlite3_bind_text(st, 1, b->drive_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, b->granularity);
    sqlite3_bind_int(st, 4, b->persistent);
    sqlite3_bind_int(st, 5, b->enabled);
    sqlite3_bind_int(st, 6, b->inconsistent);
    sqlite3_bind_int(st, 7, b->in_use);
    if (b->data)
        sqlite3_bind_blob64(st, 8, b->data, b->data_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 8);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)b->size);
}

int bvdb_bitmap_insert(bvdb *db, const struct bvdb_bitmap *b)
{
    return exec_stmt(db, "INSERT INTO bitmaps(drive_id, name, granularity, persistent, enabled, "
                         "inconsistent, in_use, data, size, created_seq) VALUES (?1, ?2, ?3, "
                         "?4, ?5, ?6, ?7, ?8, ?9, "
                         "(SELECT COALESCE(MAX(created_seq), 0) + 1 FROM bitmaps))",
                     bind_bitmap, b, false, "insert bitmap");
}

static void bind_key(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_bitmap *b = arg;
    sqlite3_bind_text(st, 1, b->drive_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, b->enabled);
    sqlite3_bind_int(st, 4, b->in_use);
    sqlite3_bind_int(st, 5, b->inconsistent);
    if (b->data)
        sqlite3_bind_blob64(st, 6, b->data, b->data_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)b->size);
}

int bvdb_bitmap_delete(bvdb *db, const char *drive_id, const char *name)
{
    struct bvdb_bitmap b = { .drive_id = drive_id, .name = name };
    return exec_stmt(db, "DELETE FROM bitmaps WHERE drive_id = ?1 AND name = ?2", bind_key, &b,
                     true, "delete bitmap");
}

int bvdb_bitmap_set_enabled(bvdb *db, const char *drive_id, const char *name, bool enabled)
{
    struct bvdb_bitmap b = { .drive_id = drive_id, .name = name, .enabled = enabled };
    return exec_stmt(db, "UPDATE bitmaps SET enabled = ?3 WHERE drive_id = ?1 AND name = ?2",
                     bind_key, &b, true, "update bitmap");
}

int bvdb_bitmap_save(bvdb *db, const char *drive_id, const char *name, const void *data,
                     size_t len, uint64_t size, bool enabled, bool in_use)
{
    struct bvdb_bitmap b = { .drive_id = drive_id, .name = name, .data = data,
                             .data_len = len, .size = size, .enabled = enabled,
                             .in_use = in_use };
    return exec_stmt(db, "UPDATE bitmaps SET data = ?6, size = ?7, enabled = ?3, in_use = ?4, "
                         "saved_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                         "WHERE drive_id = ?1 AND name = ?2",
                     bind_key, &b, true, "save bitmap");
}

int bvdb_bitmap_set_flags(bvdb *db, const char *drive_id, const char *name, bool in_use,
                          bool inconsistent)
{
    struct bvdb_bitmap b = { .drive_id = drive_id, .name = name, .in_use = in_use,
                             .inconsistent = inconsistent };
    return exec_stmt(db, "UPDATE bitmaps SET in_use = ?4, inconsistent = ?5 "
                         "WHERE drive_id = ?1 AND name = ?2", bind_key, &b, true,
                     "update bitmap flags");
}

static void bind_none(sqlite3_stmt *st, const void *arg)
{
    (void)st; (void)arg;
}

int bvdb_bitmap_drop_volatile(bvdb *db)
{
    return exec_stmt(db, "DELETE FROM bitmaps WHERE persistent = 0", bind_none, NULL, false,
                     "drop volatile bitmaps");
}

int bvdb_bitmap_list(bvdb *db, const char *drive_id,
                     int (*cb)(const struct bvdb_bitmap *b, void *opaque), void *opaque)
{
    pthread_mutex_lock(&db->lock);
    int r = -EIO, n = 0, rc = SQLITE_ERROR;
    sqlite3_stmt *st = db_prepare(db,
        "SELECT drive_id, name, granularity, persistent, enabled, inconsistent, in_use, data, "
        "size, created_seq FROM bitmaps WHERE ?1 IS NULL OR drive_id = ?1 ORDER BY created_seq");
    if (st && drive_id)
        sqlite3_bind_text(st, 1, drive_id, -1, SQLITE_STATIC);
    while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bvdb_bitmap b = {
            .drive_id = (const char *)sqlite3_column_text(st, 0),
            .name = (const char *)sqlite3_column_text(st, 1),
            .granularity = (uint32_t)sqlite3_column_int64(st, 2),
            .persistent = sqlite3_column_int(st, 3),
            .enabled = sqlite3_column_int(st, 4),
            .inconsistent = sqlite3_column_int(st, 5),
            .in_use = sqlite3_column_int(st, 6),
            .data = sqlite3_column_blob(st, 7),
            .data_len = (size_t)sqlite3_column_bytes(st, 7),
            .size = (uint64_t)sqlite3_column_int64(st, 8),
            .created_seq = sqlite3_column_int64(st, 9),
        };
        n++;
        if (cb(&b, opaque))
            break;
    }
    if (st)
        r = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? n : db_rc(db, rc, "list bitmaps");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return r;
}
