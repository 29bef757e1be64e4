/*
 * Forward-only schema migrations.  db/schema/NNNN_*.sql are compiled in (see
 * embed_schema.cmake) as bv_migrations[]; migration i (1-based) brings the
 * catalog to PRAGMA user_version = i.  Each runs in its own IMMEDIATE
 * transaction together with the user_version bump, so a crash leaves the
 * catalog at the previous version, never half-way.  A catalog newer than
 * this build is refused rather than guessed at.
 */
#include <errno.h>
#include <stdio.h>

#include "catalog-int.h"
#include "schema_sql.h"

#define N_MIGRATIONS ((int)(sizeof(bv_migrations) / sizeof(bv_migrations[0])))

int bvdb_latest_version(void)
{
    return N_MIGRATIONS;
}

static int apply_one(bvdb *db, int version, char *err, size_t errlen)
{
    char *msg = NULL;
    char bump[64];
    snprintf(bump, sizeof(bump), "PRAGMA user_version=%d", version);
    int rc = sqlite3_exec(db->conn, "BEGIN IMMEDIATE", NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db->conn, bv_migrations[version - 1], NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db->conn, bump, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db->conn, "COMMIT", NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "catalog migration %d failed: %s", version,
                 msg ? msg : sqlite3_errmsg(db->conn));
        sqlite3_free(msg);
        sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    return 0;
}

int db_migrate(bvdb *db, char *err, size_t errlen)
{
    int cur = bvdb_schema_version(db);
    if (cur < 0) {
        snprintf(err, errlen, "cannot read catalog schema version: %s", sqlite3_errmsg(db->conn));
        return -EIO;
    }
    if (cur > N_MIGRATIONS) {
        snprintf(err, errlen, "catalog schema version %d is newer than this Blockvault (%d); "
                 "refusing to open it", cur, N_MIGRATIONS);
        return -EPROTO;
    }
    db_lock(db);
    int r = 0;
    for (int v = cur + 1; v <= N_MIGRATIONS && r == 0; v++)
        r = apply_one(db, v, err, errlen);
    db_unlock(db);
    return r;
}
