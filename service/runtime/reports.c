/*
 * Corruption reports from the engine's callbacks: a blkverify mismatch
 * becomes a catalog report and a CORRUPTION_DETECTED event.  Called
 * synchronously from the I/O path that found the mismatch, with no engine
 * lock held (blkverify calls out after comparing).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "app.h"
#include "bv/blkverify.h"
#include "bvdb/reports.h"
#include "log.h"
#include "model/reports.h"
#include "runtime/notify.h"
#include "runtime/registry.h"
#include "runtime/reports.h"

void bv_reports_new_id(char out[40])
{
    /* 64 random bits: unique across restarts without asking the catalog */
    uint64_t v = 0;
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
        static atomic_uint_fast64_t counter;
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        v = ((uint64_t)t.tv_sec << 20) ^ (uint64_t)t.tv_nsec ^ atomic_fetch_add(&counter, 1);
    }
    snprintf(out, 40, "r-%016llx", (unsigned long long)v);
}

void bv_reports_blkverify(void *opaque, const struct bv_blkverify_report *r)
{
    struct bv_drive_entry *e = opaque;
    struct bv_app *app = e->app;
    char id[40], now[32];
    bv_reports_new_id(id);
    bvdb_now(now);
    char *ext = bv_model_report_extents(r), *smp = bv_model_report_samples(r);
    bool contents = r->kind == BV_BLKVERIFY_CONTENTS;
    struct bvdb_report rec = {
        .id = id, .drive_id = e->id, .kind = "blkverify", .status = "corrupt",
        .test = r->test_filename, .reference = r->raw_filename,
        .has_mismatch = contents,
        .first_mismatch_sector = r->first_mismatch_sector,
        .first_mismatch_offset = r->first_mismatch_offset,
        .mismatched_bytes = r->mismatched_bytes,
        .extents = ext, .extents_total = r->extents_total, .samples = smp,
        .created_at = now,
    };
    if (bvdb_report_insert(app->db, &rec) < 0) {
        log_error("drive '%s': cannot record a blkverify report", e->id);
    } else {
        atomic_fetch_add(&app->corruption_reports, 1);
        char *text = bv_model_corruption_event(id, e->id, contents ? r->first_mismatch_offset
                                                                   : r->offset);
        if (text) {
            bv_app_emit(app, "CORRUPTION_DETECTED", text);
            bv_notify_corruption(app, text);
        }
        free(text);
        log_warn("drive '%s': blkverify mismatch at offset %llu (report %s)", e->id,
                 (unsigned long long)(contents ? r->first_mismatch_offset : r->offset), id);
    }
    free(ext);
    free(smp);
}
