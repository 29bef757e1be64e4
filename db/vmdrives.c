/* VM drive rows: see include/bvdb/vmdrives.h. */
#include <errno.h>

#include "bvdb/vmdrives.h"
#include "catalog-int.h"

static void bind_vm_drive(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_vm_drive *d = arg;
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d->qmp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, d->node, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, d->scratch_dir, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, d->created_at, -1, SQLITE_STATIC);
}

int bvdb_vm_drive_insert(bvdb *db, const struct bvdb_vm_drive *d)
{
    int r = db_exec(db, "INSERT INTO vm_drives(id, qmp, node, scratch_dir, created_at) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)", bind_vm_drive, d, "insert vm drive",
                    NULL);
    return r < 0 ? r : 0;
}

static void bind_id(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int bvdb_vm_drive_delete(bvdb *db, const char *id)
{
    int r = db_exec(db, "DELETE FROM vm_drives WHERE id = ?1", bind_id, id, "delete vm drive",
                    NULL);
    return r == 0 ? -ENOENT : (r < 0 ? r : 0);
}

struct list_cb {
    int (*cb)(const struct bvdb_vm_drive *d, void *opaque);
    void *opaque;
};

static int vm_drive_row(sqlite3_stmt *st, void *opaque)
{
    const struct list_cb *l = opaque;
    struct bvdb_vm_drive d = {
        .id = (const char *)sqlite3_column_text(st, 0),
        .qmp = (const char *)sqlite3_column_text(st, 1),
        .node = (const char *)sqlite3_column_text(st, 2),
        .scratch_dir = (const char *)sqlite3_column_text(st, 3),
        .created_at = (const char *)sqlite3_column_text(st, 4),
    };
    return l->cb(&d, l->opaque);
}

int bvdb_vm_drive_list(bvdb *db, int (*cb)(const struct bvdb_vm_drive *d, void *opaque),
                       void *opaque)
{
    struct list_cb l = { .cb = cb, .opaque = opaque };
    return db_query(db, "SELECT id, qmp, node, scratch_dir, created_at FROM vm_drives "
                        "ORDER BY rowid", NULL, NULL, vm_drive_row, &l, "list vm drives");
}
