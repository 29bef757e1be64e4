/*
 * The JSON text a corruption report stores in the catalog and sends as its
 * event.  Here so that runtime/ files reports with no JSON in it: runtime
 * hands typed engine reports in and stores the text that comes out.
 * Each function returns malloc'd text, or NULL when out of memory.
 */
#ifndef BV_MODEL_REPORTS_H
#define BV_MODEL_REPORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/blkverify.h"

/* [{"offset","length"}…] of r's mismatched extents. */
char *bv_model_report_extents(const struct bv_blkverify_report *r);
/* [{"offset","test_hex","reference_hex"}…] of r's samples. */
char *bv_model_report_samples(const struct bv_blkverify_report *r);
/* CORRUPTION_DETECTED data: {"report_id","drive","first_mismatch_offset"}. */
char *bv_model_corruption_event(const char *report_id, const char *drive, uint64_t offset);

/* ---- verify reports and jobs (runtime/verify.c) ---- */
struct bv_verify_extent;
struct bv_verify_request;
/* [{"offset","length"}…] of the first max of v. */
char *bv_model_verify_extents(const struct bv_verify_extent *v, size_t n, size_t max);
/* One sample per entry: [{"offset","test_hex","reference_hex"|null}…]. */
struct bv_model_sample {
    uint64_t offset;
    unsigned len;                  /* ≤ 16 */
    uint8_t test[16], ref[16];
    bool has_ref;
};
char *bv_model_verify_samples(const struct bv_model_sample *s, size_t n);
/* ["b1","b2"…] */
char *bv_model_id_array(char *const *ids, size_t n);
/* CORRUPTION_DETECTED data {"report_id","job_id","drive"?,"first_mismatch_offset"}. */
char *bv_model_verify_event(const char *report_id, const char *job_id, const char *drive,
                            uint64_t offset);
/* A verify job's type fields: the request, the links a checksum verify
 * covers, the id of the report it files. */
char *bv_model_verify_params(const struct bv_verify_request *rq, char *const *links,
                             size_t n_links, const char *report_id);

#endif
