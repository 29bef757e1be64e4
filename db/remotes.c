/* Remotes and remote links.  See include/bvdb/remotes.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bvdb/remotes.h"
#include "catalog-int.h"

static void bind_remote(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_remote *r = arg;
    sqlite3_bind_text(st, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->endpoint, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->bucket, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->access_key, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, r->path_style);
    sqlite3_bind_int(st, 7, r->object_lock);
    sqlite3_bind_text(st, 8, r->created_at, -1, SQLITE_STATIC);
}

int bvdb_remote_insert(bvdb *db, const struct bvdb_remote *r)
{
    int n = db_exec(db, "INSERT INTO remotes(name, endpoint, bucket, region, access_key, "
                        "path_style, object_lock, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                        "?7, ?8)", bind_remote, r, "insert remote", NULL);
    return n < 0 ? n : 0;
}

static void bind_name(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int bvdb_remote_delete(bvdb *db, const char *name)
{
    int n = db_exec(db, "DELETE FROM remote_links WHERE remote = ?1", bind_name, name,
                    "delete remote links", NULL);
    if (n >= 0)
        n = db_exec(db, "DELETE FROM remotes WHERE name = ?1", bind_name, name, "delete remote",
                    NULL);
    return n < 0 ? n : n == 0 ? -ENOENT : 0;
}

struct remote_cb {
    int (*cb)(const struct bvdb_remote *r, void *opaque);
    void *opaque;
    bool once;
};

static int remote_row(sqlite3_stmt *st, void *opaque)
{
    const struct remote_cb *c = opaque;
    struct bvdb_remote r = {
        .name = (const char *)sqlite3_column_text(st, 0),
        .endpoint = (const char *)sqlite3_column_text(st, 1),
        .bucket = (const char *)sqlite3_column_text(st, 2),
        .region = (const char *)sqlite3_column_text(st, 3),
        .access_key = (const char *)sqlite3_column_text(st, 4),
        .path_style = sqlite3_column_int(st, 5) != 0,
        .object_lock = sqlite3_column_int(st, 6) != 0,
        .created_at = (const char *)sqlite3_column_text(st, 7),
    };
    int stop = c->cb(&r, c->opaque);
    return c->once ? 1 : stop;
}

#define REMOTE_COLUMNS "name, endpoint, bucket, region, access_key, path_style, object_lock, " \
                       "created_at"

int bvdb_remote_get(bvdb *db, const char *name,
                    int (*cb)(const struct bvdb_remote *r, void *opaque), void *opaque)
{
    struct remote_cb c = { cb, opaque, true };
    int n = db_query(db, "SELECT " REMOTE_COLUMNS " FROM remotes WHERE name = ?1", bind_name,
                     name, remote_row, &c, "get remote");
    return n < 0 ? n : n == 0 ? -ENOENT : 0;
}

int bvdb_remote_list(bvdb *db, int (*cb)(const struct bvdb_remote *r, void *opaque),
                     void *opaque)
{
    struct remote_cb c = { cb, opaque, false };
    return db_query(db, "SELECT " REMOTE_COLUMNS " FROM remotes ORDER BY name", NULL, NULL,
                    remote_row, &c, "list remotes");
}

static void bind_link(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_remote_link *l = arg;
    sqlite3_bind_text(st, 1, l->remote, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, l->backup_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, l->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, l->state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, l->size);
    db_bind_opt_text(st, 6, l->locked_until);
    sqlite3_bind_text(st, 7, l->updated_at, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 8, l->upload_id);
}

int bvdb_remote_link_put(bvdb *db, const struct bvdb_remote_link *l)
{
    int n = db_exec(db, "INSERT OR REPLACE INTO remote_links(remote, backup_id, key, state, size, "
                        "locked_until, updated_at, upload_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                        "?8)",
                    bind_link, l, "put remote link", NULL);
    return n < 0 ? n : 0;
}

struct link_cb {
    int (*cb)(const struct bvdb_remote_link *l, void *opaque);
    void *opaque;
};

static int link_row(sqlite3_stmt *st, void *opaque)
{
    const struct link_cb *c = opaque;
    struct bvdb_remote_link l = {
        .remote = (const char *)sqlite3_column_text(st, 0),
        .backup_id = (const char *)sqlite3_column_text(st, 1),
        .key = (const char *)sqlite3_column_text(st, 2),
        .state = (const char *)sqlite3_column_text(st, 3),
        .size = sqlite3_column_int64(st, 4),
        .locked_until = (const char *)sqlite3_column_text(st, 5),
        .updated_at = (const char *)sqlite3_column_text(st, 6),
        .upload_id = (const char *)sqlite3_column_text(st, 7),
    };
    return c->cb(&l, c->opaque);
}

struct two { const char *a, *b; };

static void bind_two(sqlite3_stmt *st, const void *arg)
{
    const struct two *t = arg;
    db_bind_opt_text(st, 1, t->a);
    db_bind_opt_text(st, 2, t->b);
}

int bvdb_remote_link_list(bvdb *db, const char *remote, const char *backup_id,
                          int (*cb)(const struct bvdb_remote_link *l, void *opaque),
                          void *opaque)
{
    struct link_cb c = { cb, opaque };
    struct two t = { remote, backup_id };
    return db_query(db, "SELECT remote, backup_id, key, state, size, locked_until, updated_at, "
                        "upload_id FROM remote_links WHERE (?1 IS NULL OR remote = ?1) AND "
                        "(?2 IS NULL OR backup_id = ?2) ORDER BY remote, backup_id",
                    bind_two, &t, link_row, &c, "list remote links");
}

static void bind_part(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_remote_part *p = arg;
    sqlite3_bind_text(st, 1, p->remote, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->backup_id, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 3, p->upload_id);
    sqlite3_bind_int64(st, 4, p->part);
    db_bind_opt_text(st, 5, p->etag);
    sqlite3_bind_int64(st, 6, p->size);
}

int bvdb_remote_part_put(bvdb *db, const struct bvdb_remote_part *p)
{
    int n = db_exec(db, "INSERT OR REPLACE INTO remote_parts(remote, backup_id, upload_id, part, "
                        "etag, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)", bind_part, p,
                    "put remote part", NULL);
    return n < 0 ? n : 0;
}

int bvdb_remote_part_clear(bvdb *db, const char *remote, const char *backup_id)
{
    struct two t = { remote, backup_id };
    int n = db_exec(db, "DELETE FROM remote_parts WHERE remote = ?1 AND backup_id = ?2", bind_two,
                    &t, "clear remote parts", NULL);
    return n < 0 ? n : 0;
}

struct part_cb {
    int (*cb)(const struct bvdb_remote_part *p, void *opaque);
    void *opaque;
};

static int part_row(sqlite3_stmt *st, void *opaque)
{
    const struct part_cb *c = opaque;
    struct bvdb_remote_part p = {
        .remote = (const char *)sqlite3_column_text(st, 0),
        .backup_id = (const char *)sqlite3_column_text(st, 1),
        .upload_id = (const char *)sqlite3_column_text(st, 2),
        .part = sqlite3_column_int64(st, 3),
        .etag = (const char *)sqlite3_column_text(st, 4),
        .size = sqlite3_column_int64(st, 5),
    };
    return c->cb(&p, c->opaque);
}

int bvdb_remote_part_list(bvdb *db, const char *remote, const char *backup_id,
                          const char *upload_id,
                          int (*cb)(const struct bvdb_remote_part *p, void *opaque), void *opaque)
{
    struct part_cb c = { cb, opaque };
    struct bvdb_remote_part key = { .remote = remote, .backup_id = backup_id,
                                    .upload_id = upload_id };
    return db_query(db, "SELECT remote, backup_id, upload_id, part, etag, size FROM remote_parts "
                        "WHERE remote = ?1 AND backup_id = ?2 AND upload_id = ?3 ORDER BY part",
                    bind_part, &key, part_row, &c, "list remote parts");
}

int bvdb_remote_link_delete(bvdb *db, const char *remote, const char *backup_id)
{
    struct two t = { remote, backup_id };
    int n = db_exec(db, "DELETE FROM remote_links WHERE (?1 IS NULL OR remote = ?1) AND "
                        "backup_id = ?2", bind_two, &t, "delete remote link", NULL);
    if (n >= 0)
        n = db_exec(db, "DELETE FROM remote_parts WHERE (?1 IS NULL OR remote = ?1) AND "
                        "backup_id = ?2", bind_two, &t, "delete remote parts", NULL);
    return n < 0 ? n : 0;
}

/* ---- backups.local ---- */

struct id_flag {
    const char *id;
    int flag;
};

static void bind_id_flag(sqlite3_stmt *st, const void *arg)
{
    const struct id_flag *f = arg;
    sqlite3_bind_text(st, 1, f->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, f->flag);
}

int bvdb_backup_set_local(bvdb *db, const char *id, bool local)
{
    struct id_flag f = { id, local ? 1 : 0 };
    int n = db_exec(db, "UPDATE backups SET local = ?2 WHERE id = ?1", bind_id_flag, &f,
                    "set backup local", NULL);
    return n < 0 ? n : n == 0 ? -ENOENT : 0;
}

static int int_row(sqlite3_stmt *st, void *opaque)
{
    *(int *)opaque = sqlite3_column_int(st, 0);
    return 1;
}

int bvdb_backup_get_local(bvdb *db, const char *id)
{
    int v = 1;
    int n = db_query(db, "SELECT local FROM backups WHERE id = ?1", bind_name, id, int_row, &v,
                     "get backup local");
    return n < 0 ? n : n == 0 ? -ENOENT : v != 0;
}

struct id_file_cb {
    int (*cb)(const char *id, const char *file, void *opaque);
    void *opaque;
};

static int id_file_row(sqlite3_stmt *st, void *opaque)
{
    const struct id_file_cb *c = opaque;
    return c->cb((const char *)sqlite3_column_text(st, 0),
                 (const char *)sqlite3_column_text(st, 1), c->opaque);
}

int bvdb_backup_list_remote_only(bvdb *db,
                                 int (*cb)(const char *id, const char *file, void *opaque),
                                 void *opaque)
{
    struct id_file_cb c = { cb, opaque };
    return db_query(db, "SELECT id, file FROM backups WHERE local = 0 ORDER BY seq", NULL, NULL,
                    id_file_row, &c, "list remote-only backups");
}

/* ---- prune intents: the remote side ---- */

int bvdb_prune_intent_set_remote_objects(bvdb *db, const char *backup_id, const char *json)
{
    struct two t = { backup_id, json };
    int n = db_exec(db, "UPDATE prune_intents SET remote_objects = ?2 WHERE backup_id = ?1",
                    bind_two, &t, "set prune remote objects", NULL);
    return n < 0 ? n : n == 0 ? -ENOENT : 0;
}

static int text_row(sqlite3_stmt *st, void *opaque)
{
    const char *t = (const char *)sqlite3_column_text(st, 0);
    *(char **)opaque = strdup(t ? t : "[]");
    return 1;
}

int bvdb_prune_intent_get_remote_objects(bvdb *db, const char *backup_id, char **out)
{
    *out = NULL;
    int n = db_query(db, "SELECT remote_objects FROM prune_intents WHERE backup_id = ?1",
                     bind_name, backup_id, text_row, out, "get prune remote objects");
    if (n == 0)
        return -ENOENT;
    if (n > 0 && !*out)
        return -ENOMEM;
    return n < 0 ? n : 0;
}

/* ---- remote-only drives ---- */

static void bind_rdrive(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_remote_drive *d = arg;
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d->remote, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, d->size);
    sqlite3_bind_text(st, 4, d->created_at, -1, SQLITE_STATIC);
}

int bvdb_remote_drive_insert(bvdb *db, const struct bvdb_remote_drive *d)
{
    int n = db_exec(db, "INSERT INTO remote_drives(id, remote, size, created_at) VALUES (?1, ?2, "
                        "?3, ?4)", bind_rdrive, d, "insert remote drive", NULL);
    return n < 0 ? n : 0;
}

struct rdrive_cb {
    int (*cb)(const struct bvdb_remote_drive *d, void *opaque);
    void (*one)(const struct bvdb_remote_drive *d, void *opaque);
    void *opaque;
};

static int rdrive_row(sqlite3_stmt *st, void *opaque)
{
    const struct rdrive_cb *c = opaque;
    struct bvdb_remote_drive d = {
        .id = (const char *)sqlite3_column_text(st, 0),
        .remote = (const char *)sqlite3_column_text(st, 1),
        .size = sqlite3_column_int64(st, 2),
        .created_at = (const char *)sqlite3_column_text(st, 3),
    };
    if (c->one) {
        c->one(&d, c->opaque);
        return 1;
    }
    return c->cb(&d, c->opaque);
}

int bvdb_remote_drive_get(bvdb *db, const char *id,
                          void (*cb)(const struct bvdb_remote_drive *d, void *opaque),
                          void *opaque)
{
    struct rdrive_cb c = { NULL, cb, opaque };
    int n = db_query(db, "SELECT id, remote, size, created_at FROM remote_drives WHERE id = ?1",
                     bind_name, id, rdrive_row, &c, "get remote drive");
    return n < 0 ? n : n == 0 ? -ENOENT : 0;
}

int bvdb_remote_drive_list(bvdb *db, int (*cb)(const struct bvdb_remote_drive *d, void *opaque),
                           void *opaque)
{
    struct rdrive_cb c = { cb, NULL, opaque };
    return db_query(db, "SELECT id, remote, size, created_at FROM remote_drives ORDER BY id",
                    NULL, NULL, rdrive_row, &c, "list remote drives");
}

struct seq_arg {
    const char *name;
    int64_t value;
};

static void bind_seq(sqlite3_stmt *st, const void *arg)
{
    const struct seq_arg *a = arg;
    sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, a->value);
}

int bvdb_seq_at_least(bvdb *db, const char *name, int64_t value)
{
    struct seq_arg a = { name, value };
    int n = db_exec(db, "INSERT INTO sequences(name, value) VALUES (?1, ?2) ON CONFLICT(name) "
                        "DO UPDATE SET value = max(value, ?2)", bind_seq, &a, "raise sequence",
                    NULL);
    return n < 0 ? n : 0;
}
