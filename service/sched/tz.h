/*
 * Time zones for schedules and retention periods, read from the system's
 * tz database (/usr/share/zoneinfo, TZif files per RFC 8536) by our own
 * small reader.
 *
 * Why not localtime_r/mktime: they take the zone from the process-wide TZ
 * variable, so a per-call zone means setenv("TZ") + tzset() under a global
 * lock, and mktime's answer for a time in a DST gap or overlap is
 * underspecified.  A loaded bv_tz is immutable: every query below is a pure
 * function of its arguments, safe from any number of threads at once with
 * no lock.  A TZif file is outside input: its size, counts, offsets, type
 * indices and transition order are checked before anything is used, and its
 * footer (the POSIX TZ rule that covers times after the last transition,
 * e.g. "EST5EDT,M3.2.0,M11.1.0", needed past 2037) is parsed strictly.
 * Files with leap seconds (the "right/" zones) are refused: their clock is
 * not POSIX time.
 *
 * Wherever a function takes a const struct bv_tz *, NULL means UTC.
 * Instants outside years 1..9999 are refused with -ERANGE.
 */
#ifndef BV_SCHED_TZ_H
#define BV_SCHED_TZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define BV_TZ_NAME_MAX 64            /* longest accepted zone name, in bytes */
#define BV_TZ_FILE_MAX (256 * 1024)  /* largest TZif file read (real ones: < 4 KiB) */
#define BV_TZ_DIR "/usr/share/zoneinfo"

struct bv_tz;

/* Load the zone `name` ("UTC" is built in; "Europe/Berlin" reads
 * BV_TZ_DIR/Europe/Berlin).  A name is 1..BV_TZ_NAME_MAX bytes of
 * [A-Za-z0-9_+-/], does not start or end with '/' and has no empty
 * component; '.' is not allowed at all, so ".." cannot appear.
 * Returns 0 with *out owned by the caller (bv_tz_free), or -EINVAL (bad
 * name, not a valid TZif file), -ENOENT (no such zone), -EFBIG, -ENOMEM,
 * -EIO, with a sentence in err (which may be NULL). */
int bv_tz_load(const char *name, struct bv_tz **out, char *err, size_t errlen);

/* As bv_tz_load, from TZif bytes already in memory; `name` is only recorded
 * (not validated).  The buffer is not kept. */
int bv_tz_from_tzif(const char *name, const void *buf, size_t len, struct bv_tz **out,
                    char *err, size_t errlen);

void bv_tz_free(struct bv_tz *tz);

/* The name the zone was loaded with ("UTC" for NULL). */
const char *bv_tz_name(const struct bv_tz *tz);

/* Local civil time of instant t: every field of *out including tm_wday,
 * tm_yday, tm_isdst and tm_gmtoff (seconds east of UTC); tm_zone is NULL.
 * 0 or -ERANGE. */
int bv_tz_localtime(const struct bv_tz *tz, time_t t, struct tm *out);

/* How a local wall-clock time maps to instants. */
enum bv_tz_local_kind {
    BV_TZ_LOCAL_UNIQUE,      /* exists once */
    BV_TZ_LOCAL_REPEATED,    /* exists twice (clocks went back): the first is returned */
    BV_TZ_LOCAL_SKIPPED,     /* does not exist (clocks went forward) */
};

/* The instant of local wall-clock time `local` (seconds since 1970-01-01
 * 00:00 of the local calendar, i.e. what timegm() would return for the
 * local fields).  Unique: that instant.  Repeated: the first (earlier)
 * instant.  Skipped: the instant the gap ends (the transition itself,
 * which the clock shows as the first time after the gap, e.g. 03:00 for
 * 02:30 on the day New York springs forward).  So the map is monotone
 * non-decreasing in `local`.  *kind may be NULL.  0, -ERANGE, or -EIO if
 * the zone data is inconsistent around `local`. */
int bv_tz_from_local(const struct bv_tz *tz, int64_t local, time_t *out,
                     enum bv_tz_local_kind *kind);

#endif
