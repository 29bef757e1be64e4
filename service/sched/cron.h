/*
 * Cron schedules: a strict parser for the classic 5-field expression and
 * "next run after t" in a time zone.  No I/O, no global state: a parsed
 * bv_cron is a plain value (copy it, store it) and every function is safe
 * from any thread.
 *
 * Syntax (vixie cron's, checked strictly):
 *     minute hour day-of-month month day-of-week      separated by blanks
 *     0-59   0-23 1-31         1-12  0-7 (0 and 7 are Sunday)
 *   Each field is a comma list of  *  N  N-M  N-M/S  N/S, or '*' followed
 *   by /S; N/S runs from N to the field's maximum (5/15 = 5,20,35,50).
 *   Month names JAN..DEC and weekday names SUN..SAT (any case) go wherever
 *   a number goes in those fields; SUN ending a range that starts later in
 *   the week means 7, so SAT-SUN is Saturday and Sunday.  Macros: @hourly,
 *   @daily = @midnight, @weekly, @monthly, @yearly = @annually.
 *   A step is 1 .. the field's maximum; a range may not run backwards.
 *   Day rule (vixie): when both day fields are restricted (neither starts
 *   with '*'), a day matches if EITHER matches ("0 0 1 * MON": the 1st and
 *   every Monday); otherwise both must (a '*' field matches every day).
 *   An expression that can never match ("0 0 30 2 *") is refused here.
 *
 * Time zones and DST (one rule for every schedule): a schedule is a set of
 * local wall-clock minutes, and each of them runs once.  A minute the clock
 * skips (spring forward) runs at the instant the gap ends — the first
 * minute after it, 03:00 in New York or Berlin — so all skipped minutes of
 * one gap (and 03:00 itself) make one run.  A minute the clock shows twice
 * (fall back) runs at its first occurrence only.  cronie differs for
 * "wildcard" jobs (minute or hour starting with '*'): it does not make up
 * their skipped minutes, and it runs them in both passes of a repeated
 * hour; we treat them like fixed-time jobs, so a job every 15 minutes (a
 * minute field of '*' with step 15) runs at 03:00 after a gap and pauses
 * during the second pass of a repeated hour.
 */
#ifndef BV_SCHED_CRON_H
#define BV_SCHED_CRON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "sched/tz.h"

#define BV_CRON_EXPR_MAX 256            /* longest accepted expression, in bytes */

#define BV_CRON_DOM_STAR 0x1            /* day-of-month field starts with '*' */
#define BV_CRON_DOW_STAR 0x2            /* day-of-week field starts with '*' */

/* A parsed schedule: bit i of a mask set = value i allowed. */
struct bv_cron {
    uint64_t minutes;                   /* bits 0-59 */
    uint32_t hours;                     /* bits 0-23 */
    uint32_t mdays;                     /* bits 1-31 */
    uint16_t months;                    /* bits 1-12 */
    uint8_t wdays;                      /* bits 0-6, Sunday 0 (7 is folded into 0) */
    uint8_t flags;                      /* BV_CRON_DOM_STAR | BV_CRON_DOW_STAR */
};

/* Where and why an expression was refused.  msg reads, e.g.,
 *   "cron: field 2 (hour) '25': value out of range 0-23"
 *   "cron: expected 5 fields, got 4" */
struct bv_cron_error {
    int field;                          /* 1..5 (minute .. day-of-week), 0: the whole expression */
    size_t offset;                      /* 0-based byte offset of the fault in the expression */
    char msg[200];
};

/* Parse expr into *out.  0, or -EINVAL with *err filled (err may be NULL);
 * *out is all zero on failure. */
int bv_cron_parse(const char *expr, struct bv_cron *out, struct bv_cron_error *err);

/* "minute", "hour", "day-of-month", "month", "day-of-week" for 1..5, else "". */
const char *bv_cron_field_name(int field);

/* The first run strictly after `after`, in zone tz (NULL: UTC), per the DST
 * rule above: *out = that instant.  The search steps over non-matching
 * months, days and hours, so it is fast; it scans at most 400 years of
 * local calendar (one Gregorian cycle, after which weekdays repeat, so a
 * schedule bv_cron_parse accepted always matches within it).  0; -ERANGE if
 * `after` or the run falls outside years 1..9999; -ENOENT if nothing
 * matches in the scan (an all-zero bv_cron, not one from bv_cron_parse);
 * -EIO if the zone's data is inconsistent. */
int bv_cron_next(const struct bv_cron *c, const struct bv_tz *tz, time_t after, time_t *out);

#endif
