/* History retention and catalog copies: see include/bvdb/upkeep.h. */
#include <errno.h>
#include <stdio.h>

#include "bvdb/upkeep.h"
#include "catalog-int.h"

#define MAX_BUSY_STEPS 2000        /* consecutive busy backup steps before giving up */

const char *const bvdb_history_names[BVDB_HISTORY_KINDS] = {
    "events", "jobs", "reports", "policy_runs",
};

/* One batch per kind: the inner SELECT finds at most ?2 rows older than ?1
 * through the time indexes of migration 0012, minus what must stay. */
static const char *const prune_sql[BVDB_HISTORY_KINDS] = {
    [BVDB_HISTORY_EVENTS] =
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE timestamp < ?1 "
        "AND seq < (SELECT MAX(seq) FROM events) LIMIT ?2)",
    [BVDB_HISTORY_JOBS] =
        "DELETE FROM jobs WHERE rowid_ IN (SELECT rowid_ FROM jobs WHERE status = 'null' "
        "AND finished_at < ?1 LIMIT ?2)",
    [BVDB_HISTORY_REPORTS] =
        "DELETE FROM reports WHERE rowid IN (SELECT r.rowid FROM reports r "
        "WHERE r.created_at < ?1 "
        "AND NOT EXISTS (SELECT 1 FROM damaged_extents d WHERE d.report_id = r.id) "
        "AND NOT (r.status = 'corrupt' AND EXISTS (SELECT 1 FROM json_each(r.affected) a "
        "  JOIN backups b ON b.id = a.value WHERE b.status = 'corrupt' "
        "  OR EXISTS (SELECT 1 FROM damaged_extents d2 WHERE d2.backup_id = b.id))) "
        "LIMIT ?2)",
    [BVDB_HISTORY_POLICY_RUNS] =
        "DELETE FROM policy_runs WHERE id IN (SELECT id FROM policy_runs "
        "WHERE started_at < ?1 AND finished_at IS NOT NULL "
        "AND id NOT IN (SELECT MAX(id) FROM policy_runs GROUP BY policy, kind) LIMIT ?2)",
};

struct prune_in { const char *cutoff; int limit; };

static void bind_prune(sqlite3_stmt *st, const void *arg)
{
    const struct prune_in *in = arg;
    sqlite3_bind_text(st, 1, in->cutoff, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, in->limit);
}

int bvdb_history_prune(bvdb *db, enum bvdb_history kind, const char *cutoff, int limit)
{
    if ((unsigned)kind >= BVDB_HISTORY_KINDS || limit <= 0)
        return -EINVAL;
    struct prune_in in = { cutoff, limit };
    int r = bvdb_begin(db);
    if (r < 0)
        return r;
    int n = db_exec(db, prune_sql[kind], bind_prune, &in, bvdb_history_names[kind], NULL);
    if (n < 0) {
        bvdb_rollback(db);
        return n;
    }
    r = bvdb_commit(db);
    return r < 0 ? r : n;
}

/* One step of the copy under the catalog lock. */
static int copy_step(bvdb *db, sqlite3_backup *b, int pages)
{
    db_lock(db);
    int rc = sqlite3_backup_step(b, pages);
    db_unlock(db);
    return rc;
}

static int copy_pages(bvdb *db, sqlite3 *dst, int pages, void (*pause)(void *), void *opaque,
                      char *err, size_t errlen)
{
    db_lock(db);
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", db->conn, "main");
    db_unlock(db);
    if (!b) {
        snprintf(err, errlen, "cannot start the catalog copy: %s", sqlite3_errmsg(dst));
        return -EIO;
    }
    int rc, busy = 0;
    while ((rc = copy_step(db, b, pages)) == SQLITE_OK || rc == SQLITE_BUSY ||
           rc == SQLITE_LOCKED) {
        busy = rc == SQLITE_OK ? 0 : busy + 1;
        if (busy > MAX_BUSY_STEPS)
            break;
        if (pause)
            pause(opaque);
    }
    db_lock(db);
    int fin = sqlite3_backup_finish(b);
    db_unlock(db);
    if (rc != SQLITE_DONE || fin != SQLITE_OK) {
        snprintf(err, errlen, "the catalog copy failed: %s",
                 sqlite3_errstr(rc != SQLITE_DONE ? rc : fin));
        return -EIO;
    }
    return 0;
}

int bvdb_copy_to(bvdb *db, const char *path, int pages_per_step,
                 void (*pause)(void *opaque), void *opaque, char *err, size_t errlen)
{
    sqlite3 *dst = NULL;
    int r = -EIO;
    if (sqlite3_open_v2(path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open the catalog copy: %s",
                 dst ? sqlite3_errmsg(dst) : "out of memory");
        goto out;
    }
    r = copy_pages(db, dst, pages_per_step > 0 ? pages_per_step : 64, pause, opaque, err,
                   errlen);
    if (r == 0 && sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot finish the catalog copy: %s", sqlite3_errmsg(dst));
        r = -EIO;
    }
out:
    if (dst && sqlite3_close(dst) != SQLITE_OK && r == 0) {
        snprintf(err, errlen, "cannot close the catalog copy");
        r = -EIO;
    }
    return r;
}
