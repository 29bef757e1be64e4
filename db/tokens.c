/* Scoped API tokens.  See include/bvdb/tokens.h. */
#include <errno.h>

#include "bvdb/tokens.h"
#include "catalog-int.h"

static void bind_token(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_token *t = arg;
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, t->role, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, t->hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, t->created_at, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 5, t->expires_at);
    if (t->expires_ms > 0)
        sqlite3_bind_int64(st, 6, t->expires_ms);
    else
        sqlite3_bind_null(st, 6);
}

int bvdb_token_insert(bvdb *db, const struct bvdb_token *t)
{
    int r = db_exec(db, "INSERT INTO tokens(name, role, hash, created_at, expires_at, expires_ms) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)", bind_token, t, "insert token", NULL);
    return r < 0 ? r : 0;
}

static void bind_name(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int bvdb_token_delete(bvdb *db, const char *name)
{
    int r = db_exec(db, "DELETE FROM tokens WHERE name = ?1", bind_name, name, "delete token",
                    NULL);
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

struct token_cb {
    int (*cb)(const struct bvdb_token *t, void *opaque);
    void *opaque;
};

static int token_row(sqlite3_stmt *st, void *opaque)
{
    const struct token_cb *c = opaque;
    struct bvdb_token t = {
        .name = (const char *)sqlite3_column_text(st, 0),
        .role = (const char *)sqlite3_column_text(st, 1),
        .hash = (const char *)sqlite3_column_text(st, 2),
        .created_at = (const char *)sqlite3_column_text(st, 3),
        .expires_at = (const char *)sqlite3_column_text(st, 4),
        .expires_ms = sqlite3_column_int64(st, 5),
    };
    return c->cb(&t, c->opaque);
}

int bvdb_token_list(bvdb *db, int (*cb)(const struct bvdb_token *t, void *opaque),
                    void *opaque)
{
    struct token_cb c = { cb, opaque };
    return db_query(db, "SELECT name, role, hash, created_at, expires_at, expires_ms "
                        "FROM tokens ORDER BY name", NULL, NULL, token_row, &c, "list tokens");
}
