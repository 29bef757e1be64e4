/*
 * The event log: append-only, numbered from 1 by SQLite (AUTOINCREMENT, so a
 * seq is never reused).  Locking: see catalog.h.
 */
#ifndef BVDB_EVENTS_H
#define BVDB_EVENTS_H

#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_event {
    int64_t seq;
    const char *name;
    const char *timestamp;
    const char *data;          /* JSON object text */
};

/* Append; *seq_out (may be NULL) gets the new seq.  Call inside a
 * transaction when the event must commit with other changes. */
int bvdb_event_append(bvdb *db, const char *name, const char *timestamp,
                      const char *data_json, int64_t *seq_out);

/* Events with seq > after (and name = name if non-NULL), oldest first, at
 * most limit.  cb returns non-zero to stop.  Returns the number visited or
 * a negative errno.  The record's strings live only during the callback. */
int bvdb_event_list(bvdb *db, int64_t after, const char *name, int limit,
                    int (*cb)(const struct bvdb_event *ev, void *opaque), void *opaque);

/* The highest seq so far (0 when empty). */
int64_t bvdb_event_head(bvdb *db);

#endif
