/* Policies and policy runs.  See include/bvdb/policies.h. */
#include <errno.h>
#include <string.h>

#include "bvdb/policies.h"
#include "catalog-int.h"

static void bind_policy(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_policy *p = arg;
    sqlite3_bind_text(st, 1, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->drives, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, p->schedule, -1, SQLITE_STATIC);
    if (p->full_every > 0)
        sqlite3_bind_int64(st, 4, p->full_every);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_text(st, 5, p->retention, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, p->verify, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, p->enabled);
    db_bind_opt_text(st, 8, p->created_at);
    db_bind_opt_text(st, 9, p->updated_at);
    sqlite3_bind_int64(st, 10, p->last_slot);
    sqlite3_bind_int64(st, 11, p->verify_last_slot);
    db_bind_opt_text(st, 12, p->replicate);
}

static int changed(int r)
{
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int bvdb_policy_insert(bvdb *db, const struct bvdb_policy *p)
{
    int r = db_exec(db, "INSERT INTO policies(name, drives, schedule, full_every, retention, "
                        "verify, enabled, created_at, updated_at, last_slot, verify_last_slot, "
                        "replicate) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    bind_policy, p, "insert policy", NULL);
    return r < 0 ? r : 0;
}

int bvdb_policy_update(bvdb *db, const struct bvdb_policy *p)
{
    return changed(db_exec(db, "UPDATE policies SET drives = ?2, schedule = ?3, full_every = "
                               "?4, retention = ?5, verify = ?6, enabled = ?7, updated_at = ?9, "
                               "replicate = ?12 WHERE name = ?1", bind_policy, p, "update policy",
                           NULL));
}

int bvdb_policy_set_slots(bvdb *db, const char *name, int64_t last_slot, int64_t verify_last_slot)
{
    struct bvdb_policy p = { .name = name, .drives = "", .schedule = "", .retention = "",
                             .verify = "", .last_slot = last_slot,
                             .verify_last_slot = verify_last_slot };
    return changed(db_exec(db, "UPDATE policies SET last_slot = ?10, verify_last_slot = ?11 "
                               "WHERE name = ?1", bind_policy, &p, "policy slots", NULL));
}

static void bind_name(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int bvdb_policy_delete(bvdb *db, const char *name)
{
    return changed(db_exec(db, "DELETE FROM policies WHERE name = ?1", bind_name, name,
                           "delete policy", NULL));
}

struct policy_cb {
    int (*cb)(const struct bvdb_policy *p, void *opaque);
    void (*one)(const struct bvdb_policy *p, void *opaque);
    void *opaque;
};

#define POLICY_COLUMNS "name, drives, schedule, full_every, retention, verify, enabled, " \
                       "created_at, updated_at, last_slot, verify_last_slot, replicate"

static int policy_row(sqlite3_stmt *st, void *opaque)
{
    const struct policy_cb *c = opaque;
    struct bvdb_policy p = {
        .name = (const char *)sqlite3_column_text(st, 0),
        .drives = (const char *)sqlite3_column_text(st, 1),
        .schedule = (const char *)sqlite3_column_text(st, 2),
        .full_every = sqlite3_column_int64(st, 3),
        .retention = (const char *)sqlite3_column_text(st, 4),
        .verify = (const char *)sqlite3_column_text(st, 5),
        .enabled = sqlite3_column_int(st, 6) != 0,
        .created_at = (const char *)sqlite3_column_text(st, 7),
        .updated_at = (const char *)sqlite3_column_text(st, 8),
        .last_slot = sqlite3_column_int64(st, 9),
        .verify_last_slot = sqlite3_column_int64(st, 10),
        .replicate = (const char *)sqlite3_column_text(st, 11),
    };
    if (c->one) {
        c->one(&p, c->opaque);
        return 1;
    }
    return c->cb(&p, c->opaque);
}

int bvdb_policy_get(bvdb *db, const char *name,
                    void (*cb)(const struct bvdb_policy *p, void *opaque), void *opaque)
{
    struct policy_cb c = { NULL, cb, opaque };
    int r = db_query(db, "SELECT " POLICY_COLUMNS " FROM policies WHERE name = ?1", bind_name,
                     name, policy_row, &c, "get policy");
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int bvdb_policy_list(bvdb *db, int (*cb)(const struct bvdb_policy *p, void *opaque),
                     void *opaque)
{
    struct policy_cb c = { cb, NULL, opaque };
    return db_query(db, "SELECT " POLICY_COLUMNS " FROM policies ORDER BY name", NULL, NULL,
                    policy_row, &c, "list policies");
}

static void bind_run(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_policy_run *r = arg;
    sqlite3_bind_int64(st, 1, r->id);
    db_bind_opt_text(st, 2, r->policy);
    db_bind_opt_text(st, 3, r->kind);
    db_bind_opt_text(st, 4, r->started_at);
    db_bind_opt_text(st, 5, r->finished_at);
    db_bind_opt_text(st, 6, r->outcome);
    db_bind_opt_text(st, 7, r->reason);
    sqlite3_bind_text(st, 8, r->backups_made ? r->backups_made : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, r->backups_pruned ? r->backups_pruned : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, r->errors ? r->errors : "[]", -1, SQLITE_STATIC);
}

int bvdb_policy_run_insert(bvdb *db, const struct bvdb_policy_run *r, int64_t *id)
{
    int rc = db_exec(db, "INSERT INTO policy_runs(policy, kind, started_at, finished_at, status, "
                         "reason, backups_made, backups_pruned, errors) VALUES (?2, ?3, ?4, ?5, "
                         "?6, ?7, ?8, ?9, ?10)", bind_run, r, "insert policy run", id);
    return rc < 0 ? rc : 0;
}

int bvdb_policy_run_finish(bvdb *db, const struct bvdb_policy_run *r)
{
    return changed(db_exec(db, "UPDATE policy_runs SET finished_at = ?5, status = ?6, reason = "
                               "?7, backups_made = ?8, backups_pruned = ?9, errors = ?10 WHERE "
                               "id = ?1", bind_run, r, "finish policy run", NULL));
}

struct run_cb {
    int (*cb)(const struct bvdb_policy_run *r, void *opaque);
    void *opaque;
};

static int run_row(sqlite3_stmt *st, void *opaque)
{
    const struct run_cb *c = opaque;
    struct bvdb_policy_run r = {
        .id = sqlite3_column_int64(st, 0),
        .policy = (const char *)sqlite3_column_text(st, 1),
        .kind = (const char *)sqlite3_column_text(st, 2),
        .started_at = (const char *)sqlite3_column_text(st, 3),
        .finished_at = (const char *)sqlite3_column_text(st, 4),
        .outcome = (const char *)sqlite3_column_text(st, 5),
        .reason = (const char *)sqlite3_column_text(st, 6),
        .backups_made = (const char *)sqlite3_column_text(st, 7),
        .backups_pruned = (const char *)sqlite3_column_text(st, 8),
        .errors = (const char *)sqlite3_column_text(st, 9),
    };
    return c->cb(&r, c->opaque);
}

struct run_filter { const char *policy; int limit; };

static void bind_run_filter(sqlite3_stmt *st, const void *arg)
{
    const struct run_filter *f = arg;
    sqlite3_bind_text(st, 1, f->policy, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, f->limit > 0 ? f->limit : -1);
}

int bvdb_policy_run_list(bvdb *db, const char *policy, int limit,
                         int (*cb)(const struct bvdb_policy_run *r, void *opaque), void *opaque)
{
    struct run_cb c = { cb, opaque };
    struct run_filter f = { policy, limit };
    return db_query(db, "SELECT id, policy, kind, started_at, finished_at, status, reason, "
                        "backups_made, backups_pruned, errors FROM policy_runs WHERE policy = ?1 "
                        "ORDER BY id DESC LIMIT ?2", bind_run_filter, &f, run_row, &c,
                    "list policy runs");
}

int bvdb_policy_run_interrupt(bvdb *db, const char *now)
{
    int r = db_exec(db, "UPDATE policy_runs SET status = 'failed', finished_at = ?1, reason = "
                        "'interrupted by restart' WHERE status = 'running'", bind_name, now,
                    "interrupt policy runs", NULL);
    return r < 0 ? r : 0;
}
