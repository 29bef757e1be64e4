/* Corruption / verification reports.  Locking: see catalog.h. */
#ifndef BVDB_REPORTS_H
#define BVDB_REPORTS_H

#include <stdbool.h>
#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_report {
    const char *id;
    const char *job_id;            /* may be NULL */
    const char *drive_id;          /* may be NULL */
    const char *kind;              /* compare | checksum | blkverify | structure */
    const char *status;            /* clean | corrupt */
    const char *test, *reference;  /* descriptions of both sides */
    bool has_mismatch;             /* the first_mismatch_* fields are meaningful */
    uint64_t first_mismatch_sector, first_mismatch_offset;
    uint64_t mismatched_bytes;
    const char *extents;           /* JSON array text */
    uint64_t extents_total;
    const char *samples;           /* JSON array text */
    const char *affected;          /* JSON array of backup ids (NULL: []) */
    const char *created_at;
};

int bvdb_report_insert(bvdb *db, const struct bvdb_report *r);
/* cb sees the row; -ENOENT if absent. */
int bvdb_report_get(bvdb *db, const char *id,
                    void (*cb)(const struct bvdb_report *r, void *opaque), void *opaque);
/* Newest first, at most limit. */
int bvdb_report_list(bvdb *db, int limit,
                     int (*cb)(const struct bvdb_report *r, void *opaque), void *opaque);

#endif
