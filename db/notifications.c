/* Notifications and their delivery log.  See include/bvdb/notifications.h. */
#include <errno.h>
#include <string.h>

#include "bvdb/notifications.h"
#include "catalog-int.h"

/* ---- notifications ---- */

static void bind_notification(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_notification *n = arg;
    sqlite3_bind_text(st, 1, n->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, n->url, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, n->events);
    sqlite3_bind_int(st, 4, n->has_secret ? 1 : 0);
    sqlite3_bind_text(st, 5, n->created_at, -1, SQLITE_STATIC);
}

int bvdb_notification_insert(bvdb *db, const struct bvdb_notification *n)
{
    int r = db_exec(db, "INSERT INTO notifications(name, url, events, has_secret, created_at) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)", bind_notification, n,
                    "insert notification", NULL);
    return r < 0 ? r : 0;
}

static void bind_name(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

/* The deliveries go with it (ON DELETE CASCADE, foreign keys are on). */
int bvdb_notification_delete(bvdb *db, const char *name)
{
    int r = db_exec(db, "DELETE FROM notifications WHERE name = ?1", bind_name, name,
                    "delete notification", NULL);
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

#define NOTIFICATION_COLS "name, url, events, has_secret, created_at"

static void notification_of(sqlite3_stmt *st, struct bvdb_notification *n)
{
    *n = (struct bvdb_notification){
        .name = (const char *)sqlite3_column_text(st, 0),
        .url = (const char *)sqlite3_column_text(st, 1),
        .events = (uint32_t)sqlite3_column_int64(st, 2),
        .has_secret = sqlite3_column_int(st, 3) != 0,
        .created_at = (const char *)sqlite3_column_text(st, 4),
    };
}

struct get_cb {
    void (*cb)(const struct bvdb_notification *n, void *opaque);
    void *opaque;
};

static int get_row(sqlite3_stmt *st, void *opaque)
{
    const struct get_cb *c = opaque;
    struct bvdb_notification n;
    notification_of(st, &n);
    c->cb(&n, c->opaque);
    return 1;
}

int bvdb_notification_get(bvdb *db, const char *name,
                          void (*cb)(const struct bvdb_notification *n, void *opaque),
                          void *opaque)
{
    struct get_cb c = { cb, opaque };
    int r = db_query(db, "SELECT " NOTIFICATION_COLS " FROM notifications WHERE name = ?1",
                     bind_name, name, get_row, &c, "get notification");
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

struct list_cb {
    int (*cb)(const struct bvdb_notification *n, void *opaque);
    void *opaque;
};

static int list_row(sqlite3_stmt *st, void *opaque)
{
    const struct list_cb *c = opaque;
    struct bvdb_notification n;
    notification_of(st, &n);
    return c->cb(&n, c->opaque);
}

int bvdb_notification_list(bvdb *db,
                           int (*cb)(const struct bvdb_notification *n, void *opaque),
                           void *opaque)
{
    struct list_cb c = { cb, opaque };
    return db_query(db, "SELECT " NOTIFICATION_COLS " FROM notifications ORDER BY name", NULL,
                    NULL, list_row, &c, "list notifications");
}

/* ---- deliveries ---- */

struct fan_out {
    uint32_t bit;
    const struct bvdb_delivery *d;
    int keep;
};

static void bind_fan_out(sqlite3_stmt *st, const void *arg)
{
    const struct fan_out *f = arg;
    sqlite3_bind_int64(st, 1, f->bit);
    sqlite3_bind_text(st, 2, f->d->event, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, f->d->event_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, f->d->body, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, f->d->created_at, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, f->d->next_attempt_ms);
    db_bind_opt_text(st, 7, f->d->next_attempt_at);
    sqlite3_bind_int(st, 8, f->keep);
}

int bvdb_delivery_fan_out(bvdb *db, uint32_t event_bit, const struct bvdb_delivery *d,
                          int keep)
{
    struct fan_out f = { event_bit, d, keep > 0 ? keep : 1 };
    int made = db_exec(db, "INSERT INTO notification_deliveries(notification, event, event_id, "
                           "body, created_at, attempts, state, next_attempt_ms, next_attempt_at) "
                           "SELECT name, ?2, ?3, ?4, ?5, 0, 'pending', ?6, ?7 "
                           "FROM notifications WHERE (events & ?1) <> 0",
                       bind_fan_out, &f, "insert deliveries", NULL);
    if (made > 0)
        db_exec(db, "DELETE FROM notification_deliveries AS o WHERE state <> 'pending' "
                    "AND id < (SELECT id FROM notification_deliveries AS n "
                    "WHERE n.notification = o.notification ORDER BY id DESC "
                    "LIMIT 1 OFFSET ?8 - 1)", bind_fan_out, &f, "trim deliveries", NULL);
    return made;
}

#define DELIVERY_COLS "id, notification, event, event_id, body, created_at, attempts, state, " \
                      "last_status, last_error, delivered_at, next_attempt_ms, next_attempt_at"

struct delivery_cb {
    int (*cb)(const struct bvdb_delivery *d, void *opaque);
    void *opaque;
};

static int delivery_row(sqlite3_stmt *st, void *opaque)
{
    const struct delivery_cb *c = opaque;
    struct bvdb_delivery d = {
        .id = sqlite3_column_int64(st, 0),
        .notification = (const char *)sqlite3_column_text(st, 1),
        .event = (const char *)sqlite3_column_text(st, 2),
        .event_id = (const char *)sqlite3_column_text(st, 3),
        .body = (const char *)sqlite3_column_text(st, 4),
        .created_at = (const char *)sqlite3_column_text(st, 5),
        .attempts = sqlite3_column_int64(st, 6),
        .state = (const char *)sqlite3_column_text(st, 7),
        .last_status = sqlite3_column_int64(st, 8),
        .last_error = (const char *)sqlite3_column_text(st, 9),
        .delivered_at = (const char *)sqlite3_column_text(st, 10),
        .next_attempt_ms = sqlite3_column_int64(st, 11),
        .next_attempt_at = (const char *)sqlite3_column_text(st, 12),
    };
    return c->cb(&d, c->opaque);
}

struct list_args {
    const char *name;
    int64_t n;
};

static void bind_list(sqlite3_stmt *st, const void *arg)
{
    const struct list_args *a = arg;
    if (a->name)
        sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, a->n);
}

int bvdb_delivery_list(bvdb *db, const char *notification, int limit,
                       int (*cb)(const struct bvdb_delivery *d, void *opaque), void *opaque)
{
    struct delivery_cb c = { cb, opaque };
    struct list_args a = { notification, limit };
    return db_query(db, "SELECT " DELIVERY_COLS " FROM notification_deliveries "
                        "WHERE notification = ?1 ORDER BY id DESC LIMIT ?2", bind_list, &a,
                    delivery_row, &c, "list deliveries");
}

struct due_args {
    int64_t now_ms, limit;
};

static void bind_due(sqlite3_stmt *st, const void *arg)
{
    const struct due_args *a = arg;
    sqlite3_bind_int64(st, 1, a->now_ms);
    sqlite3_bind_int64(st, 2, a->limit);
}

int bvdb_delivery_due(bvdb *db, int64_t now_ms, int limit,
                      int (*cb)(const struct bvdb_delivery *d, void *opaque), void *opaque)
{
    struct delivery_cb c = { cb, opaque };
    struct due_args a = { now_ms, limit };
    return db_query(db, "SELECT " DELIVERY_COLS " FROM notification_deliveries "
                        "WHERE state = 'pending' AND next_attempt_ms <= ?1 "
                        "ORDER BY next_attempt_ms, id LIMIT ?2", bind_due, &a,
                    delivery_row, &c, "due deliveries");
}

static int read_i64(sqlite3_stmt *st, void *opaque)
{
    *(int64_t *)opaque = sqlite3_column_int64(st, 0);
    return 1;
}

int64_t bvdb_delivery_next_ms(bvdb *db)
{
    int64_t ms = 0;
    if (db_query(db, "SELECT coalesce(min(next_attempt_ms), 0) FROM notification_deliveries "
                     "WHERE state = 'pending'", NULL, NULL, read_i64, &ms, "next delivery") < 0)
        return 0;
    return ms;
}

static void bind_update(sqlite3_stmt *st, const void *arg)
{
    const struct bvdb_delivery *d = arg;
    sqlite3_bind_int64(st, 1, d->id);
    sqlite3_bind_int64(st, 2, d->attempts);
    sqlite3_bind_text(st, 3, d->state, -1, SQLITE_STATIC);
    if (d->last_status > 0)
        sqlite3_bind_int64(st, 4, d->last_status);
    else
        sqlite3_bind_null(st, 4);
    db_bind_opt_text(st, 5, d->last_error);
    db_bind_opt_text(st, 6, d->delivered_at);
    if (d->next_attempt_ms > 0)
        sqlite3_bind_int64(st, 7, d->next_attempt_ms);
    else
        sqlite3_bind_null(st, 7);
    db_bind_opt_text(st, 8, d->next_attempt_at);
}

int bvdb_delivery_update(bvdb *db, const struct bvdb_delivery *d)
{
    int r = db_exec(db, "UPDATE notification_deliveries SET attempts = ?2, state = ?3, "
                        "last_status = ?4, last_error = ?5, delivered_at = ?6, "
                        "next_attempt_ms = ?7, next_attempt_at = ?8 WHERE id = ?1",
                    bind_update, d, "update delivery", NULL);
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int count_row(sqlite3_stmt *st, void *opaque)
{
    int64_t *counts = opaque;
    const char *state = (const char *)sqlite3_column_text(st, 0);
    int64_t n = sqlite3_column_int64(st, 1);
    static const char *const states[3] = { "pending", "delivered", "failed" };
    for (int i = 0; state && i < 3; i++)
        if (strcmp(state, states[i]) == 0)
            counts[i] = n;
    return 0;
}

int bvdb_delivery_counts(bvdb *db, const char *notification, int64_t counts[3])
{
    counts[0] = counts[1] = counts[2] = 0;
    int r = notification
        ? db_query(db, "SELECT state, count(*) FROM notification_deliveries "
                       "WHERE notification = ?1 GROUP BY state", bind_name, notification,
                   count_row, counts, "count deliveries")
        : db_query(db, "SELECT state, count(*) FROM notification_deliveries GROUP BY state",
                   NULL, NULL, count_row, counts, "count deliveries");
    return r < 0 ? r : 0;
}
