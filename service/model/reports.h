/*
 * The JSON text a corruption report stores in the catalog and sends as its
 * event.  Here so that runtime/ files reports with no JSON in it: runtime
 * hands typed engine reports in and stores the text that comes out.
 * Each function returns malloc'd text, or NULL when out of memory.
 */
#ifndef BV_MODEL_REPORTS_H
#define BV_MODEL_REPORTS_H

#include <stdint.h>

#include "bv/blkverify.h"

/* [{"offset","length"}…] of r's mismatched extents. */
char *bv_model_report_extents(const struct bv_blkverify_report *r);
/* [{"offset","test_hex","reference_hex"}…] of r's samples. */
char *bv_model_report_samples(const struct bv_blkverify_report *r);
/* CORRUPTION_DETECTED data: {"report_id","drive","first_mismatch_offset"}. */
char *bv_model_corruption_event(const char *report_id, const char *drive, uint64_t offset);

#endif
