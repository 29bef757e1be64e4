/* Drive and bitmap rows: see include/bvdb/drives.h. */
#include <errno.h>

#include "bvdb/drives.h"
#include "catalog-int.h"

/* Run a statement that must change a row: -ENOENT when none changed. */
static int exec_change(bvdb *db, const char *sql, db_bind_fn *bind, const void *arg,
                       const char *what)
{
    int r = db_exec(db, sql, bind, arg, what, NULL);
    return r == 0 ? -ENOENT : (r < 0 ? r : 0);
}

static int exec_any(bvdb *db, const char *sql, db_bind_fn *bind, const void *arg,
                    const char *what)
{
    int r = db_exec(db, sql, bind, arg, what, NULL);
    return r < 0 ? r : 0;
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
    db_bind_opt_text(st, 8, d->detached_at);
}

int bvdb_drive_insert(bvdb *db, const struct bvdb_drive *d)
{
    return exec_any(db, "INSERT INTO drives(id, format, file, size, cluster_size, filters, "
                         "created_at, detached_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                     bind_drive, d, "insert drive");
}

static void bind_id(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int bvdb_drive_delete(bvdb *db, const char *id)
{
    return exec_change(db, "DELETE FROM drives WHERE id = ?1", bind_id, id, "delete drive");
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
    return exec_change(db, "UPDATE drives SET size = ?2 WHERE id = ?1", bind_id_size, &is,
                       "update drive size");
}

struct list_cb {
    int (*drive)(const struct bvdb_drive *d, void *opaque);
    void (*one)(const struct bvdb_drive *d, void *opaque);
    int (*bitmap)(const struct bvdb_bitmap *b, void *opaque);
    void *opaque;
};

static int drive_row(sqlite3_stmt *st, void *opaque)
{
    const struct list_cb *l = opaque;
    struct bvdb_drive d = {
        .id = (const char *)sqlite3_column_text(st, 0),
        .format = (const char *)sqlite3_column_text(st, 1),
        .file = (const char *)sqlite3_column_text(st, 2),
        .size = (uint64_t)sqlite3_column_int64(st, 3),
        .cluster_size = (uint32_t)sqlite3_column_int64(st, 4),
        .filters = (const char *)sqlite3_column_text(st, 5),
        .created_at = (const char *)sqlite3_column_text(st, 6),
        .detached_at = (const char *)sqlite3_column_text(st, 7),
    };
    if (l->one) {
        l->one(&d, l->opaque);
        return 1;
    }
    return l->drive(&d, l->opaque);
}

#define DRIVE_COLUMNS "id, format, file, size, cluster_size, filters, created_at, detached_at"

int bvdb_drive_list(bvdb *db, int (*cb)(const struct bvdb_drive *d, void *opaque), void *opaque)
{
    struct list_cb l = { .drive = cb, .opaque = opaque };
    return db_query(db, "SELECT " DRIVE_COLUMNS " FROM drives ORDER BY rowid", NULL, NULL,
                    drive_row, &l, "list drives");
}

int bvdb_drive_get(bvdb *db, const char *id,
                   void (*cb)(const struct bvdb_drive *d, void *opaque), void *opaque)
{
    struct list_cb l = { .one = cb, .opaque = opaque };
    int n = db_query(db, "SELECT " DRIVE_COLUMNS " FROM drives WHERE id = ?1", bind_id, id,
                     drive_row, &l, "get drive");
    return n == 0 ? -ENOENT : (n < 0 ? n : 0);
}

struct detach_in { const char *id, *when; };

static void bind_detach(sqlite3_stmt *st, const void *arg)
{
    const struct detach_in *in = arg;
    sqlite3_bind_text(st, 1, in->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, in->when, -1, SQLITE_STATIC);
}

int bvdb_drive_detach(bvdb *db, const char *id, const char *when)
{
    struct detach_in in = { id, when };
    int r = bvdb_begin(db);
    if (r < 0)
        return r;
    r = exec_change(db, "UPDATE drives SET detached_at = ?2 WHERE id = ?1", bind_detach, &in,
                    "detach drive");
    if (r == 0)
        r = exec_any(db, "DELETE FROM bitmaps WHERE drive_id = ?1", bind_detach, &in,
                     "drop bitmaps of a detached drive");
    if (r == 0)
        r = exec_any(db, "UPDATE chains SET closed = 1 WHERE drive_id = ?1", bind_detach, &in,
                     "close chains of a detached drive");
    if (r < 0) {
        bvdb_rollback(db);
        return r;
    }
    return bvdb_commit(db);
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
    return exec_any(db, "INSERT INTO bitmaps(drive_id, name, granularity, persistent, enabled, "
                        "inconsistent, in_use, data, size, created_seq) VALUES (?1, ?2, ?3, "
                        "?4, ?5, ?6, ?7, ?8, ?9, "
                        "(SELECT COALESCE(MAX(created_seq), 0) + 1 FROM bitmaps))",
                    bind_bitmap, b, "insert bitmap");
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
    return exec_change(db, "DELETE FROM bitmaps WHERE drive_id = ?1 AND name = ?2", bind_key, &b,
                       "delete bitmap");
}

int bvdb_bitmap_set_enabled(bvdb *db, const char *drive_id, const char *name, bool enabled)
{
    struct bvdb_bitmap b = { .drive_id = drive_id, .name = name, .enabled = enabled };
    return exec_change(db, "UPDATE bitmaps SET enabled = ?3 WHERE drive_id = ?1 AND name = ?2",
                       bind_key, &b, "update bitmap");
}

int bvdb_bitmap_save(bvdb *db, const char *drive_id, const char *name, const void *data,
                     size_t len, uint64_t size, bool enabled, bool in_use)
{
    struct bvdb_bitmap b = { .drive_id = drive_id, .name = name, .data = data,
                             .data_len = len, .size = size, .enabled = enabled,
                             .in_use = in_use };
    return exec_change(db, "UPDATE bitmaps SET data = ?6, size = ?7, enabled = ?3, in_use = ?4, "
                           "saved_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                           "WHERE drive_id = ?1 AND name = ?2",
                       bind_key, &b, "save bitmap");
}

int bvdb_bitmap_set_flags(bvdb *db, const char *drive_id, const char *name, bool in_use,
                          bool inconsistent)
{
    struct bvdb_bitmap b = { .drive_id = drive_id, .name = name, .in_use = in_use,
                             .inconsistent = inconsistent };
    return exec_change(db, "UPDATE bitmaps SET in_use = ?4, inconsistent = ?5 "
                           "WHERE drive_id = ?1 AND name = ?2", bind_key, &b,
                       "update bitmap flags");
}

int bvdb_bitmap_drop_volatile(bvdb *db)
{
    return exec_any(db, "DELETE FROM bitmaps WHERE persistent = 0", NULL, NULL,
                    "drop volatile bitmaps");
}

static int bitmap_row(sqlite3_stmt *st, void *opaque)
{
    const struct list_cb *l = opaque;
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
    return l->bitmap(&b, l->opaque);
}

static void bind_opt_id(sqlite3_stmt *st, const void *arg)
{
    db_bind_opt_text(st, 1, arg);
}

int bvdb_bitmap_list(bvdb *db, const char *drive_id,
                     int (*cb)(const struct bvdb_bitmap *b, void *opaque), void *opaque)
{
    struct list_cb l = { .bitmap = cb, .opaque = opaque };
    return db_query(db, "SELECT drive_id, name, granularity, persistent, enabled, inconsistent, "
                        "in_use, data, size, created_seq FROM bitmaps "
                        "WHERE ?1 IS NULL OR drive_id = ?1 ORDER BY created_seq",
                    bind_opt_id, drive_id, bitmap_row, &l, "list bitmaps");
}
