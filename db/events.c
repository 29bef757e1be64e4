/* The append-only event log.  See include/bvdb/events.h. */
#include <errno.h>

#include "bvdb/events.h"
#include "catalog-int.h"

struct event_in { const char *name, *timestamp, *data; };

static void bind_event(sqlite3_stmt *st, const void *arg)
{
    const struct event_in *e = arg;
    sqlite3_bind_text(st, 1, e->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, e->timestamp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, e->data, -1, SQLITE_STATIC);
}

int bvdb_event_append(bvdb *db, const char *name, const char *timestamp,
                      const char *data_json, int64_t *seq_out)
{
    struct event_in e = { name, timestamp, data_json };
    int r = db_exec(db, "INSERT INTO events(name, timestamp, data) VALUES (?1, ?2, ?3)",
                    bind_event, &e, "append event", seq_out);
    return r < 0 ? r : 0;
}

struct event_filter { int64_t after; const char *name; int limit; };

static void bind_filter(sqlite3_stmt *st, const void *arg)
{
    const struct event_filter *f = arg;
    sqlite3_bind_int64(st, 1, f->after);
    db_bind_opt_text(st, 2, f->name);
    sqlite3_bind_int(st, 3, f->limit);
}

struct event_cb {
    int (*cb)(const struct bvdb_event *ev, void *opaque);
    void *opaque;
};

static int event_row(sqlite3_stmt *st, void *opaque)
{
    const struct event_cb *c = opaque;
    struct bvdb_event ev = {
        .seq = sqlite3_column_int64(st, 0),
        .name = (const char *)sqlite3_column_text(st, 1),
        .timestamp = (const char *)sqlite3_column_text(st, 2),
        .data = (const char *)sqlite3_column_text(st, 3),
    };
    return c->cb(&ev, c->opaque);
}

int bvdb_event_list(bvdb *db, int64_t after, const char *name, int limit,
                    int (*cb)(const struct bvdb_event *ev, void *opaque), void *opaque)
{
    struct event_filter f = { after, name, limit };
    struct event_cb c = { cb, opaque };
    return db_query(db, "SELECT seq, name, timestamp, data FROM events "
                        "WHERE seq > ?1 AND (?2 IS NULL OR name = ?2) ORDER BY seq LIMIT ?3",
                    bind_filter, &f, event_row, &c, "list events");
}

static int read_seq(sqlite3_stmt *st, void *opaque)
{
    *(int64_t *)opaque = sqlite3_column_int64(st, 0);
    return 1;
}

int64_t bvdb_event_head(bvdb *db)
{
    int64_t head = 0;
    if (db_query(db, "SELECT COALESCE(MAX(seq), 0) FROM events", NULL, NULL, read_seq, &head,
                 "event head") != 1)
        head = 0;
    return head;
}
