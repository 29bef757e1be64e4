/* Corruption reports filed by the engine's callbacks (see reports.c). */
#ifndef BV_RUNTIME_REPORTS_H
#define BV_RUNTIME_REPORTS_H

#include "bv/blkverify.h"

/* A new report id ("r-…"), unique within this catalog. */
void bv_reports_new_id(char out[40]);

/* blkverify report callback; opaque is the drive's registry entry. */
void bv_reports_blkverify(void *opaque, const struct bv_blkverify_report *r);

#endif
