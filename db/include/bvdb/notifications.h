/*
 * Notifications (webhooks) and their delivery log: plain records (see
 * catalog.h).  db/ knows neither event names nor secrets: events is the
 * service's bit set, and a notification's secret lives outside the catalog.
 */
#ifndef BVDB_NOTIFICATIONS_H
#define BVDB_NOTIFICATIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_notification {
    const char *name;
    const char *url;
    uint32_t events;               /* bit set (runtime/notify.h) */
    bool has_secret;
    const char *created_at;
};

/* -EEXIST when the name is taken. */
int bvdb_notification_insert(bvdb *db, const struct bvdb_notification *n);
/* Deletes its deliveries too.  -ENOENT when there is none. */
int bvdb_notification_delete(bvdb *db, const char *name);
/* cb sees the one row; -ENOENT when there is none. */
int bvdb_notification_get(bvdb *db, const char *name,
                          void (*cb)(const struct bvdb_notification *n, void *opaque),
                          void *opaque);
/* Every notification by name; cb returns non-zero to stop.  The count or -errno. */
int bvdb_notification_list(bvdb *db,
                           int (*cb)(const struct bvdb_notification *n, void *opaque),
                           void *opaque);

struct bvdb_delivery {
    int64_t id;
    const char *notification;
    const char *event;
    const char *event_id;
    const char *body;              /* the JSON sent, fixed at creation */
    const char *created_at;
    int64_t attempts;
    const char *state;             /* "pending" | "delivered" | "failed" */
    int64_t last_status;           /* HTTP status of the last attempt, 0: none */
    const char *last_error;        /* NULL: none */
    const char *delivered_at;      /* NULL: not delivered */
    int64_t next_attempt_ms;       /* unix ms, 0: none (not pending) */
    const char *next_attempt_at;   /* the same as text, NULL: none */
};

/* A new pending delivery for each notification whose events have event_bit,
 * in one statement (d->notification and d->state are ignored: "pending"), so
 * that it may run inside a caller's transaction.  Each notification then
 * keeps at most keep rows: its oldest delivered or failed ones beyond that
 * go.  Returns how many were made or -errno. */
int bvdb_delivery_fan_out(bvdb *db, uint32_t event_bit, const struct bvdb_delivery *d,
                          int keep);
/* Deliveries of one notification, newest first, at most limit; cb returns
 * non-zero to stop.  The count or -errno. */
int bvdb_delivery_list(bvdb *db, const char *notification, int limit,
                       int (*cb)(const struct bvdb_delivery *d, void *opaque), void *opaque);
/* Pending deliveries due at now_ms, earliest first, at most limit. */
int bvdb_delivery_due(bvdb *db, int64_t now_ms, int limit,
                      int (*cb)(const struct bvdb_delivery *d, void *opaque), void *opaque);
/* The earliest next_attempt_ms of a pending delivery, 0 when none. */
int64_t bvdb_delivery_next_ms(bvdb *db);
/* Record an attempt's outcome: attempts, state, last_status, last_error,
 * delivered_at, next_attempt_ms/at from d (by d->id).  -ENOENT when the row
 * is gone (its notification was deleted meanwhile). */
int bvdb_delivery_update(bvdb *db, const struct bvdb_delivery *d);
/* How many deliveries are pending, delivered and failed (all notifications;
 * notification non-NULL: that one only). */
int bvdb_delivery_counts(bvdb *db, const char *notification, int64_t counts[3]);

#endif
