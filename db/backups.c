/* Chains, backups, damaged extents, prune intents, sequences.  See
 * include/bvdb/backups.h. */
#include <errno.h>
#include <string.h>

#include "bvdb/backups.h"
#include "catalog-int.h"

/* ---- sequences ------------------------------------------------------------ */

static void bind_name(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

static int read_i64(sqlite3_stmt *st, void *opaque)
{
    *(int64_t *)opaque = sqlite3_column_int64(st, 0);
    return 1;
}

int bvdb_next_seq(bvdb *db, const char *name, int64_t *out)
{
    int r = bvdb_begin(db);
    if (r < 0)
        return r;
    r = db_exec(db, "INSERT INTO sequences(name, value) VALUES (?1, 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                bind_name, name, "bump sequence", NULL);
    int64_t v = 0;
    if (r >= 0 && db_query(db, "SELECT value FROM sequences WHERE name = ?1", bind_name, name,
                           read_i64, &v, "read sequence") != 1)
        r = -EIO;
    if (r < 0) {
        bvdb_rollback(db);
        return r;
    }
    r = bvdb_commit(db);
    if (r == 0)
        *out = v;
    return r;
}

static void db_bind_opt_text_arg(sqlite3_stmt *st, const void *arg)
{
    db_bind_opt_text(st, 1, arg);
}

static void db_bind_two_opt(sqlite3_stmt *st, const void *arg);

/* ---- chains ---------------------------------------------------------------- */

static void bind_chain(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_chain *c = arg;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c->drive_id, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 3, c->bitmap);
    db_bind_opt_text(st, 4, c->dir);
    sqlite3_bind_int(st, 5, c->closed);
    sqlite3_bind_text(st, 6, c->created_at, -1, SQLITE_STATIC);
}

int bvdb_chain_insert(bvdb *db, const struct bvdb_chain *c)
{
    int r = db_exec(db, "INSERT INTO chains(id, drive_id, bitmap, dir, closed, created_at) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)", bind_chain, c, "insert chain", NULL);
    return r < 0 ? r : 0;
}

static int changed(int r)
{
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int bvdb_chain_close(bvdb *db, const char *id)
{
    return changed(db_exec(db, "UPDATE chains SET closed = 1 WHERE id = ?1", bind_name, id,
                           "close chain", NULL));
}

int bvdb_chain_delete(bvdb *db, const char *id)
{
    return changed(db_exec(db, "DELETE FROM chains WHERE id = ?1", bind_name, id,
                           "delete chain", NULL));
}

struct chain_cb {
    int (*cb)(const struct bvdb_chain *c, void *opaque);
    void (*one)(const struct bvdb_chain *c, void *opaque);
    void *opaque;
};

static int chain_row(sqlite3_stmt *st, void *opaque)
{
    const struct chain_cb *c = opaque;
    struct bvdb_chain ch = {
        .id = (const char *)sqlite3_column_text(st, 0),
        .drive_id = (const char *)sqlite3_column_text(st, 1),
        .bitmap = (const char *)sqlite3_column_text(st, 2),
        .dir = (const char *)sqlite3_column_text(st, 3),
        .closed = sqlite3_column_int(st, 4) != 0,
        .created_at = (const char *)sqlite3_column_text(st, 5),
    };
    if (c->one) {
        c->one(&ch, c->opaque);
        return 1;
    }
    return c->cb(&ch, c->opaque);
}

#define CHAIN_COLUMNS "id, drive_id, bitmap, dir, closed, created_at"

int bvdb_chain_get(bvdb *db, const char *id,
                   void (*cb)(const struct bvdb_chain *c, void *opaque), void *opaque)
{
    struct chain_cb c = { NULL, cb, opaque };
    int r = db_query(db, "SELECT " CHAIN_COLUMNS " FROM chains WHERE id = ?1", bind_name, id,
                     chain_row, &c, "get chain");
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int bvdb_chain_list(bvdb *db, const char *drive_id,
                    int (*cb)(const struct bvdb_chain *c, void *opaque), void *opaque)
{
    struct chain_cb c = { cb, NULL, opaque };
    return db_query(db, "SELECT " CHAIN_COLUMNS " FROM chains WHERE (?1 IS NULL OR drive_id = ?1) "
                        "ORDER BY created_at, rowid", db_bind_opt_text_arg, drive_id, chain_row,
                    &c, "list chains");
}

/* ---- backups ---------------------------------------------------------------- */

static void bind_backup(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_backup *b = arg;
    sqlite3_bind_text(st, 1, b->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b->drive_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, b->chain_id, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 4, b->parent_id);
    sqlite3_bind_text(st, 5, b->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, b->file, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, b->status, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 8, b->job_id);
    db_bind_opt_text(st, 9, b->created_at);
    db_bind_opt_text(st, 10, b->completed_at);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)b->virtual_size);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)b->data_bytes);
    db_bind_opt_text(st, 13, b->checksum);
    db_bind_opt_text(st, 14, b->verified_at);
    db_bind_opt_text(st, 15, b->reason);
    sqlite3_bind_int(st, 16, b->compress);
    if (b->crcs)
        sqlite3_bind_blob(st, 17, b->crcs, (int)b->crcs_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 17);
    sqlite3_bind_int64(st, 18, b->seq);
    db_bind_opt_text(st, 19, b->policy);
}

int bvdb_backup_insert(bvdb *db, const struct bvdb_backup *b)
{
    int r = db_exec(db, "INSERT INTO backups(id, drive_id, chain_id, parent_id, kind, file, "
                        "status, job_id, created_at, completed_at, virtual_size, data_bytes, "
                        "checksum, verified_at, reason, compress, crcs, seq, policy) VALUES (?1, ?2, "
                        "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
                        "?19)",
                    bind_backup, b, "insert backup", NULL);
    return r < 0 ? r : 0;
}

int bvdb_backup_finish(bvdb *db, const struct bvdb_backup *b)
{
    return changed(db_exec(db, "UPDATE backups SET status = ?7, completed_at = ?10, "
                               "data_bytes = ?12, checksum = ?13, crcs = ?17 WHERE id = ?1",
                           bind_backup, b, "finish backup", NULL));
}

struct two { const char *a, *b; };

static void db_bind_two_opt(sqlite3_stmt *st, const void *arg)
{
    const struct two *t = arg;
    db_bind_opt_text(st, 1, t->a);
    db_bind_opt_text(st, 2, t->b);
}

static void bind_two(sqlite3_stmt *st, const void *arg)
{
    const struct two *t = arg;
    sqlite3_bind_text(st, 1, t->a, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 2, t->b);
}

int bvdb_backup_set_status(bvdb *db, const char *id, const char *status)
{
    struct two t = { id, status };
    return changed(db_exec(db, "UPDATE backups SET status = ?2 WHERE id = ?1", bind_two, &t,
                           "set backup status", NULL));
}

int bvdb_backup_set_verified(bvdb *db, const char *id, const char *verified_at)
{
    struct two t = { id, verified_at };
    return changed(db_exec(db, "UPDATE backups SET verified_at = ?2 WHERE id = ?1", bind_two,
                           &t, "set backup verified", NULL));
}

int bvdb_backup_relink(bvdb *db, const char *id, const char *file, const char *parent_id,
                       const char *kind, const void *crcs, size_t crcs_len)
{
    struct bvdb_backup b = {
        .id = id, .file = file, .parent_id = parent_id, .kind = kind, .crcs = crcs,
        .crcs_len = crcs_len, .drive_id = "", .chain_id = "", .status = "",
    };
    return changed(db_exec(db, "UPDATE backups SET file = ?6, parent_id = ?4, kind = ?5, "
                               "crcs = ?17 WHERE id = ?1", bind_backup, &b, "relink backup",
                           NULL));
}

int bvdb_backup_delete(bvdb *db, const char *id)
{
    return changed(db_exec(db, "DELETE FROM backups WHERE id = ?1", bind_name, id,
                           "delete backup", NULL));
}

int bvdb_backups_purge_drive(bvdb *db, const char *drive_id, bool drive_row)
{
    static const char *const sql[] = {
        "DELETE FROM remote_parts WHERE backup_id IN (SELECT id FROM backups WHERE drive_id = ?1)",
        "DELETE FROM remote_links WHERE backup_id IN (SELECT id FROM backups WHERE drive_id = ?1)",
        "DELETE FROM prune_intents WHERE backup_id IN (SELECT id FROM backups WHERE drive_id = ?1)",
        "DELETE FROM damaged_extents WHERE backup_id IN "
        "(SELECT id FROM backups WHERE drive_id = ?1)",
        "DELETE FROM backups WHERE drive_id = ?1",
        "DELETE FROM chains WHERE drive_id = ?1",
        "DELETE FROM drives WHERE id = ?1",
    };
    size_t steps = sizeof(sql) / sizeof(sql[0]) - (drive_row ? 0 : 1);
    int r = bvdb_begin(db), n = 0;
    for (size_t i = 0; r >= 0 && i < steps; i++) {
        r = db_exec(db, sql[i], bind_name, drive_id, "purge backups of a drive", NULL);
        if (i == 4)
            n = r;
    }
    if (r < 0) {
        bvdb_rollback(db);
        return r;
    }
    r = bvdb_commit(db);
    return r < 0 ? r : n;
}

struct backup_cb {
    int (*cb)(const struct bvdb_backup *b, void *opaque);
    void (*one)(const struct bvdb_backup *b, void *opaque);
    void *opaque;
};

#define BACKUP_COLUMNS "id, drive_id, chain_id, parent_id, kind, file, status, job_id, " \
    "created_at, completed_at, virtual_size, data_bytes, checksum, verified_at, reason, " \
    "compress, crcs, seq, policy, local"

static int backup_row(sqlite3_stmt *st, void *opaque)
{
    const struct backup_cb *c = opaque;
    struct bvdb_backup b = {
        .id = (const char *)sqlite3_column_text(st, 0),
        .drive_id = (const char *)sqlite3_column_text(st, 1),
        .chain_id = (const char *)sqlite3_column_text(st, 2),
        .parent_id = (const char *)sqlite3_column_text(st, 3),
        .kind = (const char *)sqlite3_column_text(st, 4),
        .file = (const char *)sqlite3_column_text(st, 5),
        .status = (const char *)sqlite3_column_text(st, 6),
        .job_id = (const char *)sqlite3_column_text(st, 7),
        .created_at = (const char *)sqlite3_column_text(st, 8),
        .completed_at = (const char *)sqlite3_column_text(st, 9),
        .virtual_size = (uint64_t)sqlite3_column_int64(st, 10),
        .data_bytes = (uint64_t)sqlite3_column_int64(st, 11),
        .checksum = (const char *)sqlite3_column_text(st, 12),
        .verified_at = (const char *)sqlite3_column_text(st, 13),
        .reason = (const char *)sqlite3_column_text(st, 14),
        .compress = sqlite3_column_int(st, 15) != 0,
        .crcs = sqlite3_column_blob(st, 16),
        .crcs_len = (size_t)sqlite3_column_bytes(st, 16),
        .seq = sqlite3_column_int64(st, 17),
        .policy = (const char *)sqlite3_column_text(st, 18),
        .local = sqlite3_column_int(st, 19) != 0,
    };
    if (c->one) {
        c->one(&b, c->opaque);
        return 1;
    }
    return c->cb(&b, c->opaque);
}

int bvdb_backup_get(bvdb *db, const char *id,
                    void (*cb)(const struct bvdb_backup *b, void *opaque), void *opaque)
{
    struct backup_cb c = { NULL, cb, opaque };
    int r = db_query(db, "SELECT " BACKUP_COLUMNS " FROM backups WHERE id = ?1", bind_name, id,
                     backup_row, &c, "get backup");
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int bvdb_backup_list(bvdb *db, const char *drive_id, const char *chain_id,
                     int (*cb)(const struct bvdb_backup *b, void *opaque), void *opaque)
{
    struct backup_cb c = { cb, NULL, opaque };
    struct two t = { drive_id, chain_id };
    return db_query(db, "SELECT " BACKUP_COLUMNS " FROM backups WHERE (?1 IS NULL OR drive_id = "
                        "?1) AND (?2 IS NULL OR chain_id = ?2) ORDER BY seq, rowid",
                    db_bind_two_opt, &t, backup_row, &c, "list backups");
}

/* ---- damaged extents ----------------------------------------------------------- */

struct damage_in { const char *id; uint64_t off, len; const char *report; };

static void bind_damage(sqlite3_stmt *st, const void *arg)
{
    const struct damage_in *d = arg;
    char now[32];
    bvdb_now(now);
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)d->off);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)d->len);
    db_bind_opt_text(st, 4, d->report);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
}

int bvdb_damage_add(bvdb *db, const char *backup_id, uint64_t offset, uint64_t length,
                    const char *report_id)
{
    struct damage_in d = { backup_id, offset, length, report_id };
    int r = db_exec(db, "INSERT INTO damaged_extents(backup_id, offset_, length, report_id, "
                        "created_at) VALUES (?1, ?2, ?3, ?4, ?5)", bind_damage, &d,
                    "add damage", NULL);
    return r < 0 ? r : 0;
}

int bvdb_damage_clear(bvdb *db, const char *backup_id)
{
    int r = db_exec(db, "DELETE FROM damaged_extents WHERE backup_id = ?1", bind_name, backup_id,
                    "clear damage", NULL);
    return r < 0 ? r : 0;
}

static void bind_damage_range(sqlite3_stmt *st, const void *arg)
{
    const struct damage_in *d = arg;
    sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)d->off);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)(d->off + d->len));
}

int bvdb_damage_remove(bvdb *db, const char *backup_id, uint64_t offset, uint64_t length)
{
    struct damage_in d = { backup_id, offset, length, NULL };
    int r = db_exec(db, "DELETE FROM damaged_extents WHERE backup_id = ?1 AND offset_ >= ?2 "
                        "AND offset_ + length <= ?3", bind_damage_range, &d, "remove damage",
                    NULL);
    return r < 0 ? r : 0;
}

struct damage_cb {
    int (*cb)(uint64_t offset, uint64_t length, void *opaque);
    void *opaque;
};

static int damage_row(sqlite3_stmt *st, void *opaque)
{
    const struct damage_cb *c = opaque;
    return c->cb((uint64_t)sqlite3_column_int64(st, 0), (uint64_t)sqlite3_column_int64(st, 1),
                 c->opaque);
}

int bvdb_damage_list(bvdb *db, const char *backup_id,
                     int (*cb)(uint64_t offset, uint64_t length, void *opaque), void *opaque)
{
    struct damage_cb c = { cb, opaque };
    return db_query(db, "SELECT offset_, length FROM damaged_extents WHERE backup_id = ?1 "
                        "ORDER BY offset_", bind_name, backup_id, damage_row, &c,
                    "list damage");
}

/* ---- prune intents -------------------------------------------------------------- */

static void bind_intent(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_prune_intent *p = arg;
    sqlite3_bind_text(st, 1, p->backup_id, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 2, p->child_id);
    sqlite3_bind_text(st, 3, p->step, -1, SQLITE_STATIC);
    db_bind_opt_text(st, 4, p->new_file);
    sqlite3_bind_text(st, 5, p->old_files ? p->old_files : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, p->created_at, -1, SQLITE_STATIC);
}

int bvdb_prune_intent_insert(bvdb *db, const struct bvdb_prune_intent *p)
{
    int r = db_exec(db, "INSERT INTO prune_intents(backup_id, child_id, step, new_file, "
                        "old_files, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)", bind_intent, p,
                    "insert prune intent", NULL);
    return r < 0 ? r : 0;
}

int bvdb_prune_intent_set_step(bvdb *db, const char *backup_id, const char *step)
{
    struct two t = { backup_id, step };
    return changed(db_exec(db, "UPDATE prune_intents SET step = ?2 WHERE backup_id = ?1",
                           bind_two, &t, "prune intent step", NULL));
}

int bvdb_prune_intent_delete(bvdb *db, const char *backup_id)
{
    int r = db_exec(db, "DELETE FROM prune_intents WHERE backup_id = ?1", bind_name, backup_id,
                    "delete prune intent", NULL);
    return r < 0 ? r : 0;
}

struct intent_cb {
    int (*cb)(const struct bvdb_prune_intent *p, void *opaque);
    void *opaque;
};

static int intent_row(sqlite3_stmt *st, void *opaque)
{
    const struct intent_cb *c = opaque;
    struct bvdb_prune_intent p = {
        .backup_id = (const char *)sqlite3_column_text(st, 0),
        .child_id = (const char *)sqlite3_column_text(st, 1),
        .step = (const char *)sqlite3_column_text(st, 2),
        .new_file = (const char *)sqlite3_column_text(st, 3),
        .old_files = (const char *)sqlite3_column_text(st, 4),
        .created_at = (const char *)sqlite3_column_text(st, 5),
    };
    return c->cb(&p, c->opaque);
}

int bvdb_prune_intent_list(bvdb *db,
                           int (*cb)(const struct bvdb_prune_intent *p, void *opaque),
                           void *opaque)
{
    struct intent_cb c = { cb, opaque };
    return db_query(db, "SELECT backup_id, child_id, step, new_file, old_files, created_at "
                        "FROM prune_intents ORDER BY created_at", NULL, NULL, intent_row, &c,
                    "list prune intents");
}
