/*
 * Cron schedules and time zones (service/sched): every syntax element and
 * every error with its position, next-run sequences against hand-computed
 * instants (leap years, Feb 29, the day-of-month/day-of-week OR rule,
 * macros), New York and Berlin across spring-forward and fall-back (a
 * skipped time runs once at the end of the gap, a repeated time once at its
 * first occurrence), the TZif reader against glibc's localtime_r for every
 * zone on the machine, crafted bad TZif files, and, when python3 has
 * croniter, a differential run over random expressions in UTC.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sched/cron.h"
#include "sched/tz.h"

#define ALL_MIN ((1ULL << 60) - 1)
#define ALL_HOUR ((1U << 24) - 1)
#define ALL_MDAY (((1U << 31) - 1) << 1)
#define ALL_MONTH ((uint16_t)(((1U << 12) - 1) << 1))
#define BOTH_STAR (BV_CRON_DOM_STAR | BV_CRON_DOW_STAR)

/* ---- helpers ------------------------------------------------------------- */

/* "2024-03-10T07:00Z" or with seconds, via glibc's timegm (an independent
 * calendar). */
static time_t at(const char *iso)
{
    struct tm tm = { 0 };
    int sec = 0;
    int n = sscanf(iso, "%d-%d-%dT%d:%d:%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &sec);
    assert_true(n >= 5);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_sec = sec;
    return timegm(&tm);
}

static void iso(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%MZ", &tm);
}

static uint64_t bits(const char *csv)
{
    uint64_t m = 0;
    for (const char *s = csv; *s;) {
        char *end;
        m |= 1ULL << strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
    }
    return m;
}

static struct bv_cron parse_ok(const char *expr)
{
    struct bv_cron c;
    struct bv_cron_error e;
    int rc = bv_cron_parse(expr, &c, &e);
    if (rc != 0)
        print_error("'%s': %s\n", expr, e.msg);
    assert_int_equal(rc, 0);
    return c;
}

static void assert_cron_equal(const struct bv_cron *a, const struct bv_cron *b)
{
    assert_int_equal(a->minutes, b->minutes);
    assert_int_equal(a->hours, b->hours);
    assert_int_equal(a->mdays, b->mdays);
    assert_int_equal(a->months, b->months);
    assert_int_equal(a->wdays, b->wdays);
    assert_int_equal(a->flags, b->flags);
}

static struct bv_tz *zone(const char *name)
{
    struct bv_tz *tz = NULL;
    char err[256];
    int rc = bv_tz_load(name, &tz, err, sizeof(err));
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    return tz;
}

/* The runs of expr after start in zone tzname (NULL: UTC) are exactly want[]. */
static void expect_runs(const char *expr, const char *tzname, const char *start,
                        const char *const *want)
{
    struct bv_cron c = parse_ok(expr);
    struct bv_tz *tz = tzname ? zone(tzname) : NULL;
    time_t t = at(start);
    for (int i = 0; want[i]; i++) {
        char got[32];
        assert_int_equal(bv_cron_next(&c, tz, t, &t), 0);
        iso(t, got, sizeof(got));
        if (strcmp(got, want[i]) != 0)
            print_error("'%s' in %s after %s, run %d\n", expr, tzname ? tzname : "UTC", start,
                        i + 1);
        assert_string_equal(got, want[i]);
    }
    bv_tz_free(tz);
}

static int rnd(unsigned *seed, int lo, int hi);

#define RUNS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* ---- syntax ----------------------------------------------------------------- */

static void test_syntax_elements(void **state)
{
    (void)state;
    const struct {
        const char *expr;
        struct bv_cron want;
    } cases[] = {
        { "1,5,9 * * * *", { bits("1,5,9"), ALL_HOUR, ALL_MDAY, ALL_MONTH, 0x7f, BOTH_STAR } },
        { "1-5 * * * *", { bits("1,2,3,4,5"), ALL_HOUR, ALL_MDAY, ALL_MONTH, 0x7f, BOTH_STAR } },
        { "*/15 * * * *", { bits("0,15,30,45"), ALL_HOUR, ALL_MDAY, ALL_MONTH, 0x7f, BOTH_STAR } },
        { "1-30/5 * * * *",
          { bits("1,6,11,16,21,26"), ALL_HOUR, ALL_MDAY, ALL_MONTH, 0x7f, BOTH_STAR } },
        { "5/15 * * * *", { bits("5,20,35,50"), ALL_HOUR, ALL_MDAY, ALL_MONTH, 0x7f, BOTH_STAR } },
        { "0-10/5,30,45-47 * * * *",
          { bits("0,5,10,30,45,46,47"), ALL_HOUR, ALL_MDAY, ALL_MONTH, 0x7f, BOTH_STAR } },
        { "*/59 */7 * * *", { bits("0,59"), bits("0,7,14,21"), ALL_MDAY, ALL_MONTH, 0x7f,
                              BOTH_STAR } },
        { "0 0 */10 * *", { 1, 1, bits("1,11,21,31"), ALL_MONTH, 0x7f, BOTH_STAR } },
        { "0 0 1 jan,Mar,DEC *", { 1, 1, bits("1"), bits("1,3,12"), 0x7f, BV_CRON_DOW_STAR } },
        { "0 0 1 FEB-apr *", { 1, 1, bits("1"), bits("2,3,4"), 0x7f, BV_CRON_DOW_STAR } },
        { "0 0 1 JAN/3 *", { 1, 1, bits("1"), bits("1,4,7,10"), 0x7f, BV_CRON_DOW_STAR } },
        { "0 0 1 2-12/5 *", { 1, 1, bits("1"), bits("2,7,12"), 0x7f, BV_CRON_DOW_STAR } },
        { "0 0 * * MON-FRI", { 1, 1, ALL_MDAY, ALL_MONTH, bits("1,2,3,4,5"), BV_CRON_DOM_STAR } },
        { "0 0 * * mon,Wed,fRi", { 1, 1, ALL_MDAY, ALL_MONTH, bits("1,3,5"), BV_CRON_DOM_STAR } },
        { "0 0 * * 0", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0"), BV_CRON_DOM_STAR } },
        { "0 0 * * 7", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0"), BV_CRON_DOM_STAR } },
        { "0 0 * * 5-7", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0,5,6"), BV_CRON_DOM_STAR } },
        { "0 0 * * SAT-SUN", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0,6"), BV_CRON_DOM_STAR } },
        { "0 0 * * SUN-SUN", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0"), BV_CRON_DOM_STAR } },
        { "0 0 * * SUN-TUE", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0,1,2"), BV_CRON_DOM_STAR } },
        { "0 0 * * 1/2", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0,1,3,5"), BV_CRON_DOM_STAR } },
        { "0 0 * * */2", { 1, 1, ALL_MDAY, ALL_MONTH, bits("0,2,4,6"), BOTH_STAR } },
        { "0 0 1 * MON", { 1, 1, bits("1"), ALL_MONTH, bits("1"), 0 } },
        { "0 0 */2 * 1", { 1, 1, ALL_MDAY & bits("1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31"),
                           ALL_MONTH, bits("1"), BV_CRON_DOM_STAR } },
        { " \t0  0\t1 1 *  ", { 1, 1, bits("1"), bits("1"), 0x7f, BV_CRON_DOW_STAR } },
        { "007 01 * * *", { bits("7"), bits("1"), ALL_MDAY, ALL_MONTH, 0x7f, BOTH_STAR } },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bv_cron c = parse_ok(cases[i].expr);
        print_message("%s\n", cases[i].expr);
        assert_cron_equal(&c, &cases[i].want);
    }
}

static void test_macros(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        { "@hourly", "0 * * * *" },   { "@daily", "0 0 * * *" },   { "@midnight", "0 0 * * *" },
        { "@weekly", "0 0 * * 0" },   { "@monthly", "0 0 1 * *" }, { "@yearly", "0 0 1 1 *" },
        { "@annually", "0 0 1 1 *" }, { "  @DAILY ", "0 0 * * *" }, { "@Weekly", "0 0 * * 7" },
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        struct bv_cron a = parse_ok(pairs[i][0]), b = parse_ok(pairs[i][1]);
        assert_cron_equal(&a, &b);
    }
    expect_runs("@hourly", NULL, "2024-01-01T00:30Z",
                RUNS("2024-01-01T01:00Z", "2024-01-01T02:00Z"));
    expect_runs("@daily", NULL, "2024-02-28T12:00Z",
                RUNS("2024-02-29T00:00Z", "2024-03-01T00:00Z"));
    expect_runs("@weekly", NULL, "2024-01-01T00:00Z",           /* a Monday */
                RUNS("2024-01-07T00:00Z", "2024-01-14T00:00Z"));
    expect_runs("@monthly", NULL, "2024-01-15T00:00Z",
                RUNS("2024-02-01T00:00Z", "2024-03-01T00:00Z"));
    expect_runs("@yearly", NULL, "2024-01-01T00:00Z",
                RUNS("2025-01-01T00:00Z", "2026-01-01T00:00Z"));
}

static void test_errors(void **state)
{
    (void)state;
    char long_expr[300];
    memset(long_expr, ' ', sizeof(long_expr) - 1);
    long_expr[sizeof(long_expr) - 1] = '\0';
    const struct {
        const char *expr;
        int field;
        size_t offset;
        const char *msg;
    } cases[] = {
        { "0 25 * * *", 2, 2, "cron: field 2 (hour) '25': value out of range 0-23" },
        { "1 2 3 4", 0, 7, "cron: expected 5 fields, got 4" },
        { "1 2 3 4 5 6", 0, 10, "cron: expected 5 fields, got 6" },
        { "", 0, 0, "cron: expected 5 fields, got 0" },
        { " \t ", 0, 3, "cron: expected 5 fields, got 0" },
        { "60 * * * *", 1, 0, "cron: field 1 (minute) '60': value out of range 0-59" },
        { "1,99 * * * *", 1, 2, "cron: field 1 (minute) '99': value out of range 0-59" },
        { "* 20-24 * * *", 2, 5, "cron: field 2 (hour) '24': value out of range 0-23" },
        { "* * 0 * *", 3, 4, "cron: field 3 (day-of-month) '0': value out of range 1-31" },
        { "* * 32 * *", 3, 4, "cron: field 3 (day-of-month) '32': value out of range 1-31" },
        { "* * * 13 *", 4, 6, "cron: field 4 (month) '13': value out of range 1-12" },
        { "* * * 0 *", 4, 6, "cron: field 4 (month) '0': value out of range 1-12" },
        { "* * * * 8", 5, 8, "cron: field 5 (day-of-week) '8': value out of range 0-7" },
        { "99999999999 * * * *", 1, 0,
          "cron: field 1 (minute) '99999999999': value out of range 0-59" },
        { "*/0 * * * *", 1, 2, "cron: field 1 (minute) '0': step out of range 1-59" },
        { "*/60 * * * *", 1, 2, "cron: field 1 (minute) '60': step out of range 1-59" },
        { "* 1-5/24 * * *", 2, 6, "cron: field 2 (hour) '24': step out of range 1-23" },
        { "* * * * */8", 5, 10, "cron: field 5 (day-of-week) '8': step out of range 1-7" },
        { "5-1 * * * *", 1, 2, "cron: field 1 (minute) '5-1': range runs backwards (5 > 1)" },
        { "* * * DEC-JAN *", 4, 10,
          "cron: field 4 (month) 'DEC-JAN': range runs backwards (12 > 1)" },
        { "1,,2 * * * *", 1, 2, "cron: field 1 (minute) '1,,2': empty element in the list" },
        { "1, * * * *", 1, 2, "cron: field 1 (minute) '1,': empty element in the list" },
        { ",1 * * * *", 1, 0, "cron: field 1 (minute) ',1': empty element in the list" },
        { "* * * JANUARY *", 4, 6,
          "cron: field 4 (month) 'JANUARY': unknown month name (JAN..DEC)" },
        { "* * * * FUN", 5, 8, "cron: field 5 (day-of-week) 'FUN': unknown day name (SUN..SAT)" },
        { "* * * * MON-FUN", 5, 12,
          "cron: field 5 (day-of-week) 'FUN': unknown day name (SUN..SAT)" },
        { "MON * * * *", 1, 0,
          "cron: field 1 (minute) 'MON': names are allowed only in the month and "
          "day-of-week fields" },
        { "0 0 L * *", 3, 4,
          "cron: field 3 (day-of-month) 'L': names are allowed only in the month and "
          "day-of-week fields" },
        { "*/ * * * *", 1, 2, "cron: field 1 (minute) '*/': a step is missing after '/'" },
        { "*/x * * * *", 1, 2, "cron: field 1 (minute) '*/x': unexpected character 'x'" },
        { "1- * * * *", 1, 2, "cron: field 1 (minute) '1-': a range end is missing after '-'" },
        { "1x * * * *", 1, 1, "cron: field 1 (minute) '1x': unexpected character 'x'" },
        { "? * * * *", 1, 0, "cron: field 1 (minute) '?': unexpected character '?'" },
        { "*-5 * * * *", 1, 1, "cron: field 1 (minute) '*-5': unexpected character '-'" },
        { "** * * * *", 1, 1, "cron: field 1 (minute) '**': unexpected character '*'" },
        { "1-2-3 * * * *", 1, 3, "cron: field 1 (minute) '1-2-3': unexpected character '-'" },
        { "0 0 1#2 * *", 3, 5, "cron: field 3 (day-of-month) '1#2': unexpected character '#'" },
        { "0\n0 * * * *", 1, 1, "cron: field 1 (minute) '0?0': unexpected byte 0x0a" },
        { "0 0 30 2 *", 3, 4,
          "cron: field 3 (day-of-month) '30': no month of field 4 ('2') has such a day, so it "
          "never runs" },
        { "0 0 31 4,6,9,11 *", 3, 4,
          "cron: field 3 (day-of-month) '31': no month of field 4 ('4,6,9,11') has such a "
          "day, so it never runs" },
        { "0 0 30,31 FEB */2", 3, 4,
          "cron: field 3 (day-of-month) '30,31': no month of field 4 ('FEB') has such a day, "
          "so it never runs" },
        { "@reboot", 0, 0, "cron: @reboot is not supported (a schedule needs times)" },
        { "@fortnightly", 0, 0,
          "cron: unknown macro '@fortnightly' (expected @hourly, @daily, @midnight, @weekly, "
          "@monthly, @yearly or @annually)" },
        { "@daily 5", 0, 7, "cron: unexpected text after @daily" },
        { long_expr, 0, 256, "cron: expression longer than 256 bytes" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bv_cron c;
        struct bv_cron_error e;
        print_message("%s\n", cases[i].expr);
        assert_int_equal(bv_cron_parse(cases[i].expr, &c, &e), -EINVAL);
        assert_string_equal(e.msg, cases[i].msg);
        assert_int_equal(e.field, cases[i].field);
        assert_int_equal(e.offset, cases[i].offset);
        assert_int_equal(c.minutes | c.hours | c.mdays | c.months | c.wdays | c.flags, 0);
        assert_int_equal(bv_cron_parse(cases[i].expr, &c, NULL), -EINVAL);
    }
    assert_string_equal(bv_cron_field_name(3), "day-of-month");
    assert_string_equal(bv_cron_field_name(6), "");
    /* both day fields restricted: the OR rule makes 30 Feb harmless */
    parse_ok("0 0 30 2 MON");
}

/* ---- next run in UTC ----------------------------------------------------------- */

static void test_next_utc(void **state)
{
    (void)state;
    expect_runs("*/15 * * * *", NULL, "2024-01-01T00:00Z",     /* strictly after */
                RUNS("2024-01-01T00:15Z", "2024-01-01T00:30Z", "2024-01-01T00:45Z",
                     "2024-01-01T01:00Z"));
    expect_runs("*/15 * * * *", NULL, "2024-01-01T00:07:30Z", RUNS("2024-01-01T00:15Z"));
    expect_runs("*/15 * * * *", NULL, "2024-01-01T00:14:59Z", RUNS("2024-01-01T00:15Z"));
    expect_runs("0 * * * *", NULL, "2023-12-31T22:30Z",
                RUNS("2023-12-31T23:00Z", "2024-01-01T00:00Z", "2024-01-01T01:00Z"));
    expect_runs("59 23 31 12 *", NULL, "2024-06-01T00:00Z",
                RUNS("2024-12-31T23:59Z", "2025-12-31T23:59Z"));
    expect_runs("0 12 31 * *", NULL, "2024-01-31T12:00Z",
                RUNS("2024-03-31T12:00Z", "2024-05-31T12:00Z", "2024-07-31T12:00Z",
                     "2024-08-31T12:00Z", "2024-10-31T12:00Z", "2024-12-31T12:00Z"));
    expect_runs("0 0 1 */3 *", NULL, "2024-01-01T00:00Z",
                RUNS("2024-04-01T00:00Z", "2024-07-01T00:00Z", "2024-10-01T00:00Z",
                     "2025-01-01T00:00Z"));
    expect_runs("0 9-17/4 * * MON-FRI", NULL, "2024-03-08T10:00Z",      /* a Friday */
                RUNS("2024-03-08T13:00Z", "2024-03-08T17:00Z", "2024-03-11T09:00Z",
                     "2024-03-11T13:00Z"));
    expect_runs("5/20 3 * JUN sat", NULL, "2024-05-31T00:00Z",
                RUNS("2024-06-01T03:05Z", "2024-06-01T03:25Z", "2024-06-01T03:45Z",
                     "2024-06-08T03:05Z"));
    expect_runs("0 0 * * 7", NULL, "2024-01-01T00:00Z",
                RUNS("2024-01-07T00:00Z", "2024-01-14T00:00Z"));
}

static void test_leap_years(void **state)
{
    (void)state;
    expect_runs("0 0 29 2 *", NULL, "2023-01-01T00:00Z",
                RUNS("2024-02-29T00:00Z", "2028-02-29T00:00Z", "2032-02-29T00:00Z"));
    /* 2100 is not a leap year; 2000 was */
    expect_runs("0 0 29 2 *", NULL, "2096-03-01T00:00Z", RUNS("2104-02-29T00:00Z"));
    expect_runs("0 0 29 2 *", NULL, "1996-03-01T00:00Z", RUNS("2000-02-29T00:00Z"));
    expect_runs("0 0 28-31 2 *", NULL, "2024-02-27T00:00Z",
                RUNS("2024-02-28T00:00Z", "2024-02-29T00:00Z", "2025-02-28T00:00Z",
                     "2026-02-28T00:00Z"));
    /* Feb 29 that is also a Sunday, with the AND rule ('*' first in day-of-week): every
     * 28 years, but 2088 → 2128 skips the non-leap 2100 */
    expect_runs("0 0 29 2 */7", NULL, "2004-03-01T00:00Z",
                RUNS("2032-02-29T00:00Z", "2060-02-29T00:00Z", "2088-02-29T00:00Z",
                     "2128-02-29T00:00Z"));
}

static void test_dom_dow_rule(void **state)
{
    (void)state;
    /* both restricted: the 1st, the 15th and every Friday (2024-03-01 is a Friday) */
    expect_runs("30 4 1,15 * 5", NULL, "2024-03-01T00:00Z",
                RUNS("2024-03-01T04:30Z", "2024-03-08T04:30Z", "2024-03-15T04:30Z",
                     "2024-03-22T04:30Z", "2024-03-29T04:30Z", "2024-04-01T04:30Z",
                     "2024-04-05T04:30Z", "2024-04-12T04:30Z", "2024-04-15T04:30Z"));
    /* February's 30th never comes, its Mondays do */
    expect_runs("0 0 30 2 MON", NULL, "2025-01-01T00:00Z",
                RUNS("2025-02-03T00:00Z", "2025-02-10T00:00Z", "2025-02-17T00:00Z",
                     "2025-02-24T00:00Z", "2026-02-02T00:00Z"));
    /* day-of-month starts with '*': both must match — odd days that are Mondays */
    expect_runs("0 0 */2 * 1", NULL, "2024-01-01T00:00Z",
                RUNS("2024-01-15T00:00Z", "2024-01-29T00:00Z", "2024-02-05T00:00Z",
                     "2024-02-19T00:00Z"));
    /* day-of-week '*' : the day-of-month alone */
    expect_runs("0 0 13 * *", NULL, "2024-01-01T00:00Z",
                RUNS("2024-01-13T00:00Z", "2024-02-13T00:00Z"));
    /* day-of-month '*': the day-of-week alone */
    expect_runs("0 0 * * FRI", NULL, "2024-01-01T00:00Z",
                RUNS("2024-01-05T00:00Z", "2024-01-12T00:00Z"));
}

static void test_next_limits(void **state)
{
    (void)state;
    struct bv_cron c = parse_ok("* * * * *"), none;
    time_t t;
    memset(&none, 0, sizeof(none));
    assert_int_equal(bv_cron_next(&none, NULL, at("2024-01-01T00:00Z"), &t), -ENOENT);
    assert_int_equal(bv_cron_next(&c, NULL, (time_t)253402300799LL + 1, &t), -ERANGE);
    assert_int_equal(bv_cron_next(&c, NULL, (time_t)253402300799LL - 30, &t), -ERANGE);
    assert_int_equal(bv_cron_next(&c, NULL, at("9999-12-31T23:58Z"), &t), 0);
    assert_int_equal(t, at("9999-12-31T23:59Z"));
    assert_int_equal(bv_cron_next(&c, NULL, 0, &t), 0);
    assert_int_equal(t, 60);
}

/* ---- daylight saving time ------------------------------------------------------- */

static void test_dst_new_york(void **state)
{
    (void)state;
    const char *ny = "America/New_York";
    /* 2024-03-10: 02:00 EST (07:00Z) becomes 03:00 EDT.  02:30 does not exist and runs
     * once, at 03:00 EDT = 07:00Z; the next day 02:30 EDT = 06:30Z. */
    expect_runs("30 2 * * *", ny, "2024-03-09T12:00Z",
                RUNS("2024-03-10T07:00Z", "2024-03-11T06:30Z", "2024-03-12T06:30Z"));
    /* 02:00, 02:30 and 03:00 are one run at 07:00Z */
    expect_runs("*/30 * * * *", ny, "2024-03-10T06:00Z",
                RUNS("2024-03-10T06:30Z", "2024-03-10T07:00Z", "2024-03-10T07:30Z"));
    expect_runs("0 2,3 * * *", ny, "2024-03-10T05:00Z",
                RUNS("2024-03-10T07:00Z", "2024-03-11T06:00Z", "2024-03-11T07:00Z"));
    /* the skipped 02:05 is made up at 03:00, then 03:05 runs */
    expect_runs("5 * * * *", ny, "2024-03-10T06:00Z",
                RUNS("2024-03-10T06:05Z", "2024-03-10T07:00Z", "2024-03-10T07:05Z"));
    /* 2024-11-03: 02:00 EDT (06:00Z) becomes 01:00 EST.  01:30 exists twice (05:30Z
     * EDT, 06:30Z EST) and runs once, at the first; the next day 01:30 EST = 06:30Z. */
    expect_runs("30 1 * * *", ny, "2024-11-02T12:00Z",
                RUNS("2024-11-03T05:30Z", "2024-11-04T06:30Z"));
    /* starting inside the second pass does not run the repeated minute again */
    expect_runs("30 1 * * *", ny, "2024-11-03T06:10Z", RUNS("2024-11-04T06:30Z"));
    expect_runs("*/30 * * * *", ny, "2024-11-03T04:45Z",
                RUNS("2024-11-03T05:00Z", "2024-11-03T05:30Z", "2024-11-03T07:00Z",
                     "2024-11-03T07:30Z"));
    expect_runs("0 * * * *", ny, "2024-11-03T04:30Z",
                RUNS("2024-11-03T05:00Z", "2024-11-03T07:00Z", "2024-11-03T08:00Z"));
    /* past the table's last transition (2037) the footer rule EST5EDT,M3.2.0,M11.1.0
     * decides: 2040-03-11 and 2040-11-04 */
    expect_runs("30 2 * * *", ny, "2040-03-10T12:00Z",
                RUNS("2040-03-11T07:00Z", "2040-03-12T06:30Z"));
    expect_runs("30 1 * * *", ny, "2040-11-03T12:00Z",
                RUNS("2040-11-04T05:30Z", "2040-11-05T06:30Z"));
    /* a daily job far from any change */
    expect_runs("0 9 * * *", ny, "2024-07-01T00:00Z",
                RUNS("2024-07-01T13:00Z", "2024-07-02T13:00Z"));
    expect_runs("0 9 * * *", ny, "2024-12-01T00:00Z", RUNS("2024-12-01T14:00Z"));
}

static void test_dst_berlin(void **state)
{
    (void)state;
    const char *be = "Europe/Berlin";
    /* 2024-03-31: 02:00 CET (01:00Z) becomes 03:00 CEST */
    expect_runs("30 2 * * *", be, "2024-03-30T12:00Z",
                RUNS("2024-03-31T01:00Z", "2024-04-01T00:30Z"));
    expect_runs("0 3 * * *", be, "2024-03-30T12:00Z",
                RUNS("2024-03-31T01:00Z", "2024-04-01T01:00Z"));
    /* a yearly job in the gap: 2024 in the gap, 2025-03-31 a normal CEST day */
    expect_runs("0 2 31 3 *", be, "2024-01-01T00:00Z",
                RUNS("2024-03-31T01:00Z", "2025-03-31T00:00Z"));
    /* 2024-10-27: 03:00 CEST (01:00Z) becomes 02:00 CET; 02:30 CEST = 00:30Z first */
    expect_runs("30 2 * * *", be, "2024-10-26T12:00Z",
                RUNS("2024-10-27T00:30Z", "2024-10-28T01:30Z"));
    expect_runs("*/20 2 * * *", be, "2024-10-26T12:00Z",
                RUNS("2024-10-27T00:00Z", "2024-10-27T00:20Z", "2024-10-27T00:40Z",
                     "2024-10-28T01:00Z"));
    expect_runs("@daily", be, "2024-10-26T12:00Z",
                RUNS("2024-10-26T22:00Z", "2024-10-27T23:00Z"));
}

static void test_from_local_kinds(void **state)
{
    (void)state;
    struct bv_tz *ny = zone("America/New_York");
    time_t t;
    enum bv_tz_local_kind k;
    /* local times written as if UTC */
    assert_int_equal(bv_tz_from_local(ny, at("2024-03-10T02:30Z"), &t, &k), 0);
    assert_int_equal(k, BV_TZ_LOCAL_SKIPPED);
    assert_int_equal(t, at("2024-03-10T07:00Z"));
    assert_int_equal(bv_tz_from_local(ny, at("2024-03-10T03:00Z"), &t, &k), 0);
    assert_int_equal(k, BV_TZ_LOCAL_UNIQUE);
    assert_int_equal(t, at("2024-03-10T07:00Z"));
    assert_int_equal(bv_tz_from_local(ny, at("2024-03-10T01:59Z"), &t, &k), 0);
    assert_int_equal(k, BV_TZ_LOCAL_UNIQUE);
    assert_int_equal(t, at("2024-03-10T06:59Z"));
    assert_int_equal(bv_tz_from_local(ny, at("2024-11-03T01:00Z"), &t, &k), 0);
    assert_int_equal(k, BV_TZ_LOCAL_REPEATED);
    assert_int_equal(t, at("2024-11-03T05:00Z"));
    assert_int_equal(bv_tz_from_local(ny, at("2024-11-03T02:00Z"), &t, &k), 0);
    assert_int_equal(k, BV_TZ_LOCAL_UNIQUE);
    assert_int_equal(t, at("2024-11-03T07:00Z"));
    assert_int_equal(bv_tz_from_local(NULL, at("2024-11-03T02:00Z"), &t, &k), 0);
    assert_int_equal(t, at("2024-11-03T02:00Z"));
    assert_int_equal(bv_tz_from_local(ny, (int64_t)253402300799LL + 1, &t, &k), -ERANGE);
    assert_string_equal(bv_tz_name(ny), "America/New_York");
    assert_string_equal(bv_tz_name(NULL), "UTC");
    bv_tz_free(ny);
}

/* ---- the DST rule against a brute-force oracle over glibc --------------------------- */

static bool tm_matches(const struct bv_cron *c, const struct tm *tm)
{
    bool dom = c->mdays >> tm->tm_mday & 1, dow = c->wdays >> tm->tm_wday & 1;
    bool day = c->flags ? dom && dow : dom || dow;
    return (c->minutes >> tm->tm_min & 1) && (c->hours >> tm->tm_hour & 1) &&
           (c->months >> (tm->tm_mon + 1) & 1) && day;
}

static bool local_matches(const struct bv_cron *c, int64_t local)
{
    struct tm tm;
    time_t l = (time_t)local;
    gmtime_r(&l, &tm);
    return tm_matches(c, &tm);
}

static int64_t glibc_local(time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    return (int64_t)t + tm.tm_gmtoff;
}

/* cron.h's rule, by brute force over UTC minutes with glibc's conversions:
 * minute t runs if its local minute matches and is later than every local
 * minute shown before it (so a repeated minute's second pass does not run),
 * or if the clock jumped forward at t over a matching local minute.  The
 * first run after `after`, or -1 before `limit`. */
static time_t brute_next(const struct bv_cron *c, time_t after, time_t limit)
{
    time_t t = after - after % 60 - 26 * 3600;
    int64_t max_seen = glibc_local(t), prev = max_seen;
    for (t += 60; t <= limit; t += 60) {
        int64_t l = glibc_local(t);
        bool run = l > max_seen && local_matches(c, l);
        for (int64_t g = (prev > max_seen ? prev : max_seen) + 60; !run && g < l; g += 60)
            run = local_matches(c, g);
        max_seen = l > max_seen ? l : max_seen;
        prev = l;
        if (run && t > after)
            return t;
    }
    return -1;
}

/* A UTC offset change of the zone in TZ after t0 (day steps, then bisection). */
static time_t glibc_transition(time_t t0)
{
    int64_t off0 = glibc_local(t0) - t0;
    time_t lo = t0, hi = t0;
    for (int d = 0; d < 800 && glibc_local(hi) - hi == off0; d++)
        lo = hi, hi += 86400;
    while (hi - lo > 60) {
        time_t mid = lo + (hi - lo) / 2 / 60 * 60;
        if (glibc_local(mid) - mid == off0)
            lo = mid;
        else
            hi = mid;
    }
    return hi - hi % 60;
}

static void test_dst_against_brute_force(void **state)
{
    (void)state;
    static const char *const zones[] = {
        "America/New_York", "Europe/Berlin",  "Europe/Dublin",   "Australia/Sydney",
        "Australia/Lord_Howe", "Antarctica/Troll", "Pacific/Chatham", "America/Santiago",
        "America/Havana",   "America/Nuuk",   "Asia/Gaza",       "America/Scoresbysund",
    };
    static const char *const minutes[] = { "*/7", "5,35", "0", "*/20", "13-17", "30", "*" };
    static const char *const hours[] = { "*", "1-3", "2", "0-4/2", "0,1,2,3", "*/5", "0" };
    static const char *const days[] = { "* * *", "* * *", "* * SUN", "1-31/2 * *" };
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    unsigned seed = 77;
    int checked = 0;
    for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
        struct bv_tz *tz = zone(zones[z]);
        char env[80];
        snprintf(env, sizeof(env), ":%s", zones[z]);
        setenv("TZ", env, 1);
        tzset();
        for (int i = 0; i < 12; i++) {
            char expr[64];
            snprintf(expr, sizeof(expr), "%s %s %s", minutes[rnd(&seed, 0, 6)],
                     hours[rnd(&seed, 0, 6)], days[rnd(&seed, 0, 3)]);
            struct bv_cron c = parse_ok(expr);
            time_t t0 = at("2024-01-01T00:00Z") + (time_t)rnd(&seed, 0, 22 * 365) * 86400;
            time_t after = glibc_transition(t0) + rnd(&seed, -30 * 3600, 3 * 3600);
            for (int run = 0; run < 3; run++) {
                time_t want = brute_next(&c, after, after + 3 * 86400), got;
                if (want < 0)
                    break;
                assert_int_equal(bv_cron_next(&c, tz, after, &got), 0);
                if (got != want) {
                    char a[32], b[32], s[32];
                    iso(got, a, sizeof(a));
                    iso(want, b, sizeof(b));
                    iso(after, s, sizeof(s));
                    print_error("%s '%s' after %s: ours %s, brute force %s\n", zones[z],
                                expr, s, a, b);
                }
                assert_int_equal(got, want);
                after = got;
                checked++;
            }
        }
        bv_tz_free(tz);
    }
    if (old)
        setenv("TZ", old, 1);
    else
        unsetenv("TZ");
    tzset();
    free(old);
    print_message("%d runs around DST changes agree with the brute-force oracle\n", checked);
    assert_true(checked > 200);
}

/* ---- the TZif reader --------------------------------------------------------------- */

static void test_tz_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int rc;
        const char *msg;            /* a substring of the error */
    } cases[] = {
        { "", -EINVAL, "1 to 64 characters" },
        { "../etc/passwd", -EINVAL, "character 1 is not one of" },
        { "Europe/../../etc/passwd", -EINVAL, "character 8 is not one of" },
        { "/etc/passwd", -EINVAL, "no leading, trailing or doubled '/'" },
        { "America//New_York", -EINVAL, "no leading, trailing or doubled '/'" },
        { "America/", -EINVAL, "no leading, trailing or doubled '/'" },
        { "America/New York", -EINVAL, "character 12 is not one of" },
        { "Europe/Berlin\n", -EINVAL, "character 14 is not one of" },
        { "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", -EINVAL,
          "1 to 64 characters" },
        { "Nowhere/Atlantis", -ENOENT, "unknown time zone 'Nowhere/Atlantis'" },
        { "Europe/Berlin/x", -ENOENT, "unknown time zone" },
        { "America", -EINVAL, "is not a zone" },
        { "right/UTC", -EINVAL, "leap seconds" },
        { "leapseconds", -EINVAL, "not a TZif file" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bv_tz *tz = (struct bv_tz *)&tz;
        char err[256] = "";
        print_message("'%s'\n", cases[i].name);
        assert_int_equal(bv_tz_load(cases[i].name, &tz, err, sizeof(err)), cases[i].rc);
        assert_null(tz);
        if (!strstr(err, cases[i].msg))
            print_error("error '%s'\n", err);
        assert_non_null(strstr(err, cases[i].msg));
    }
    struct bv_tz *tz = zone("UTC"), *etc = zone("Etc/GMT+5");
    struct tm tm;
    assert_int_equal(bv_tz_localtime(tz, at("2024-06-01T12:00Z"), &tm), 0);
    assert_int_equal(tm.tm_hour, 12);
    assert_int_equal(tm.tm_gmtoff, 0);
    assert_int_equal(bv_tz_localtime(etc, at("2024-06-01T12:00Z"), &tm), 0);
    assert_int_equal(tm.tm_hour, 7);
    assert_int_equal(tm.tm_gmtoff, -5 * 3600);
    bv_tz_free(tz);
    bv_tz_free(etc);
    bv_tz_free(NULL);
}

/* tm from our reader == tm from glibc (TZ=":name") at instant t. */
static int compare_glibc(const struct bv_tz *tz, const char *name, time_t t)
{
    struct tm a, b;
    if (bv_tz_localtime(tz, t, &a) != 0 || !localtime_r(&t, &b))
        return -1;
    if (a.tm_year != b.tm_year || a.tm_mon != b.tm_mon || a.tm_mday != b.tm_mday ||
        a.tm_hour != b.tm_hour || a.tm_min != b.tm_min || a.tm_sec != b.tm_sec ||
        a.tm_wday != b.tm_wday || a.tm_yday != b.tm_yday || a.tm_gmtoff != b.tm_gmtoff ||
        a.tm_isdst != b.tm_isdst) {
        print_error("%s at %lld: ours %04d-%02d-%02d %02d:%02d:%02d off %ld dst %d, glibc "
                    "%04d-%02d-%02d %02d:%02d:%02d off %ld dst %d\n",
                    name, (long long)t, a.tm_year + 1900, a.tm_mon + 1, a.tm_mday, a.tm_hour,
                    a.tm_min, a.tm_sec, a.tm_gmtoff, a.tm_isdst, b.tm_year + 1900,
                    b.tm_mon + 1, b.tm_mday, b.tm_hour, b.tm_min, b.tm_sec, b.tm_gmtoff,
                    b.tm_isdst);
        return -1;
    }
    return 0;
}

static bool is_tzif(const char *path)
{
    char magic[4];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, magic, 4) : -1;
    if (fd >= 0)
        close(fd);
    return n == 4 && memcmp(magic, "TZif", 4) == 0;
}

struct walk {
    int zones, mismatches;
    unsigned seed;
};

static void check_zone(struct walk *w, const char *name, int samples)
{
    char err[256] = "";
    struct bv_tz *tz = NULL;
    int rc = bv_tz_load(name, &tz, err, sizeof(err));
    if (rc != 0) {
        print_error("%s: %s\n", name, err);
        w->mismatches++;
        return;
    }
    char env[BV_TZ_NAME_MAX + 2];
    snprintf(env, sizeof(env), ":%s", name);
    setenv("TZ", env, 1);
    tzset();
    /* 1900 .. 2200: the table and, past 2037, the footer rule */
    for (int i = 0; i < samples; i++) {
        time_t t = -2208988800LL + (time_t)(rand_r(&w->seed) % 9497) * 1000003LL +
                   rand_r(&w->seed) % 1000003;
        if (compare_glibc(tz, name, t) != 0 && ++w->mismatches > 20)
            break;
    }
    bv_tz_free(tz);
    w->zones++;
}

static void walk_dir(struct walk *w, const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s%s%s", BV_TZ_DIR, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        char sub[256], full[800];
        struct stat st;
        if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
            continue;
        snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        snprintf(full, sizeof(full), "%s/%s", BV_TZ_DIR, sub);
        if (strcmp(sub, "right") == 0 || strcmp(sub, "posix") == 0 ||
            strcmp(sub, "localtime") == 0 || stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            walk_dir(w, sub);
        else if (S_ISREG(st.st_mode) && is_tzif(full))
            check_zone(w, sub, 40);
    }
    closedir(d);
}

static void test_tz_against_glibc(void **state)
{
    (void)state;
    struct walk w = { 0, 0, 12 };
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    /* the zones this test names, hard, then every zone on the machine, lightly */
    static const char *const named[] = {
        "America/New_York", "Europe/Berlin",  "Australia/Sydney", "America/Santiago",
        "Europe/Dublin",    "Asia/Tehran",    "Africa/Casablanca", "Pacific/Apia",
        "America/St_Johns", "Antarctica/Troll", "Pacific/Chatham", "Asia/Kolkata",
    };
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
        check_zone(&w, named[i], 3000);
    walk_dir(&w, "");
    if (old)
        setenv("TZ", old, 1);
    else
        unsetenv("TZ");
    tzset();
    free(old);
    print_message("%d zones compared with glibc\n", w.zones);
    assert_true(w.zones > 300);
    assert_int_equal(w.mismatches, 0);
}

/* A TZif v2 file: the v1 block empty (one type), then the v2 block. */
struct tzif_spec {
    int ntrans;
    const int64_t *trans;
    const uint8_t *idx;
    int ntypes;
    const int32_t *utoff;
    const uint8_t *isdst;
    const char *footer;
    char version;
};

static size_t put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
    return 4;
}

static size_t put_header(uint8_t *p, char version, uint32_t nt, uint32_t ntypes)
{
    memcpy(p, "TZif", 4);
    p[4] = version;
    memset(p + 5, 0, 15);
    size_t n = 20;
    n += put32(p + n, 0);          /* isut */
    n += put32(p + n, 0);          /* isstd */
    n += put32(p + n, 0);          /* leap */
    n += put32(p + n, nt);
    n += put32(p + n, ntypes);
    n += put32(p + n, 4);          /* chars */
    return n;
}

static size_t build_tzif(const struct tzif_spec *s, uint8_t *buf)
{
    size_t n = put_header(buf, s->version ? s->version : '2', 0, 1);
    memset(buf + n, 0, 6 + 4);                                 /* v1: one type, 4 chars */
    n += 10;
    n += put_header(buf + n, s->version ? s->version : '2', s->ntrans, s->ntypes);
    for (int i = 0; i < s->ntrans; i++) {
        n += put32(buf + n, (uint32_t)((uint64_t)s->trans[i] >> 32));
        n += put32(buf + n, (uint32_t)s->trans[i]);
    }
    for (int i = 0; i < s->ntrans; i++)
        buf[n++] = s->idx[i];
    for (int i = 0; i < s->ntypes; i++) {
        n += put32(buf + n, (uint32_t)s->utoff[i]);
        buf[n++] = s->isdst[i];
        buf[n++] = 0;
    }
    memcpy(buf + n, "XYZ", 4);
    n += 4;
    n += (size_t)sprintf((char *)buf + n, "\n%s\n", s->footer);
    return n;
}

static int load_spec(const struct tzif_spec *s, struct bv_tz **tz, char *err, size_t len)
{
    uint8_t buf[2048];
    size_t n = build_tzif(s, buf);
    return bv_tz_from_tzif("test", buf, n, tz, err, len);
}

static void test_tzif_crafted(void **state)
{
    (void)state;
    const int64_t trans[] = { 1000000, 2000000, 3000000 };
    const uint8_t idx[] = { 1, 0, 1 }, bad_idx[] = { 1, 0, 2 }, dst[] = { 0, 1 };
    const int32_t off[] = { -18000, -14400 }, big[] = { -18000, 100000 };
    const uint8_t bad_dst[] = { 0, 2 };
    const int64_t unordered[] = { 1000000, 1000000, 3000000 };
    struct tzif_spec ok = { 3, trans, idx, 2, off, dst, "EST5EDT,M3.2.0,M11.1.0", 0 };
    struct bv_tz *tz;
    char err[200];
    struct tm tm;

    assert_int_equal(load_spec(&ok, &tz, err, sizeof(err)), 0);
    assert_int_equal(bv_tz_localtime(tz, 500000, &tm), 0);          /* before: type 0 */
    assert_int_equal(tm.tm_gmtoff, -18000);
    assert_int_equal(bv_tz_localtime(tz, 1500000, &tm), 0);
    assert_int_equal(tm.tm_gmtoff, -14400);
    assert_int_equal(tm.tm_isdst, 1);
    assert_int_equal(bv_tz_localtime(tz, at("2030-07-01T00:00Z"), &tm), 0);   /* footer */
    assert_int_equal(tm.tm_gmtoff, -14400);
    assert_int_equal(bv_tz_localtime(tz, at("2030-12-01T00:00Z"), &tm), 0);
    assert_int_equal(tm.tm_gmtoff, -18000);
    bv_tz_free(tz);

    /* every truncation of a valid file is refused, never read past */
    uint8_t buf[2048];
    size_t n = build_tzif(&ok, buf);
    for (size_t len = 0; len < n; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, buf, len);
        assert_int_equal(bv_tz_from_tzif("t", copy, len, &tz, err, sizeof(err)), -EINVAL);
        assert_null(tz);
        free(copy);
    }

    static const struct {
        const char *footer;
        bool ok;
    } footers[] = {
        { "", true }, { "UTC0", true }, { "<+0530>-5:30", true },
        { "CET-1CEST,M3.5.0,M10.5.0/3", true }, { "IST-1GMT0,M10.5.0,M3.5.0/1", true },
        { "<-04>4<-03>,M9.1.6/24,M4.1.6/24", true }, { "EST5EDT,0/0,J365/25", true },
        { "XXX3YYY,J60/-1,100/167:59:59", true },
        { "EST5EDT", false }, { "EST", false }, { "E5", false }, { "EST25", false },
        { "EST5EDT,M3.2.0", false }, { "EST5EDT,M13.2.0,M11.1.0", false },
        { "EST5EDT,M3.6.0,M11.1.0", false }, { "EST5EDT,M3.2.7,M11.1.0", false },
        { "EST5EDT,J0,J365", false }, { "EST5EDT,366,1", false },
        { "EST5EDT,M3.2.0/168,M11.1.0", false }, { "EST5EDT,M3.2.0,M11.1.0x", false },
        { "<EST5", false }, { "EST5:60", false },
    };
    for (size_t i = 0; i < sizeof(footers) / sizeof(footers[0]); i++) {
        struct tzif_spec s = ok;
        s.footer = footers[i].footer;
        print_message("footer '%s'\n", s.footer);
        int rc = load_spec(&s, &tz, err, sizeof(err));
        assert_int_equal(rc, footers[i].ok ? 0 : -EINVAL);
        if (!footers[i].ok)
            assert_non_null(strstr(err, "footer rule"));
        bv_tz_free(tz);
    }

    struct tzif_spec bad;
    bad = ok, bad.idx = bad_idx;
    assert_int_equal(load_spec(&bad, &tz, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "names type 2 of 2"));
    bad = ok, bad.trans = unordered;
    assert_int_equal(load_spec(&bad, &tz, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not ascending"));
    bad = ok, bad.utoff = big;
    assert_int_equal(load_spec(&bad, &tz, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "time type 1 invalid"));
    bad = ok, bad.isdst = bad_dst;
    assert_int_equal(load_spec(&bad, &tz, err, sizeof(err)), -EINVAL);
    bad = ok, bad.version = '9';
    assert_int_equal(load_spec(&bad, &tz, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unsupported TZif version"));
    bad = ok, bad.ntypes = 0, bad.ntrans = 0;
    assert_int_equal(load_spec(&bad, &tz, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "counts out of bounds"));

    /* bytes after the footer, and a wrong magic */
    n = build_tzif(&ok, buf);
    buf[n++] = 'x';
    assert_int_equal(bv_tz_from_tzif("t", buf, n, &tz, err, sizeof(err)), -EINVAL);
    n = build_tzif(&ok, buf);
    buf[0] = 'X';
    assert_int_equal(bv_tz_from_tzif("t", buf, n, &tz, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not a TZif file"));
    /* a leap second record */
    n = build_tzif(&ok, buf);
    put32(buf + 54 + 28, 1);
    assert_int_equal(bv_tz_from_tzif("t", buf, n, &tz, err, sizeof(err)), -EINVAL);
}

/* Random text never crashes the parser; what it accepts always runs, and its
 * errors stay inside the expression.  Mutated copies of a real TZif file load
 * or are refused, and a loaded one answers every query. */
static void test_random_inputs(void **state)
{
    (void)state;
    static const char alphabet[] = "0123456789012345*/-,,  \t@JANMONSUNjanfriDEC?L#x";
    unsigned seed = 4242;
    int accepted = 0;
    for (int i = 0; i < 20000; i++) {
        char expr[48];
        int len = rnd(&seed, 0, 40);
        for (int k = 0; k < len; k++)
            expr[k] = alphabet[rnd(&seed, 0, (int)sizeof(alphabet) - 2)];
        expr[len] = '\0';
        if (i % 3 == 0)         /* five fields more often than chance gives */
            snprintf(expr, sizeof(expr), "%d %d-%d %d/%d * %d", rnd(&seed, 0, 70),
                     rnd(&seed, 0, 30), rnd(&seed, 0, 30), rnd(&seed, 0, 40),
                     rnd(&seed, 0, 40), rnd(&seed, 0, 9));
        struct bv_cron c;
        struct bv_cron_error e;
        time_t t;
        if (bv_cron_parse(expr, &c, &e) == 0) {
            accepted++;
            assert_int_equal(bv_cron_next(&c, NULL, at("2024-01-01T00:00Z"), &t), 0);
            assert_true(t > at("2024-01-01T00:00Z"));
        } else {
            assert_int_equal(strncmp(e.msg, "cron: ", 6), 0);
            assert_true(e.field >= 0 && e.field <= 5);
            assert_true(e.offset <= strlen(expr));
        }
    }
    print_message("%d of 20000 random expressions accepted\n", accepted);
    assert_true(accepted > 500);

    static uint8_t file[BV_TZ_FILE_MAX];
    int fd = open(BV_TZ_DIR "/America/New_York", O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, file, sizeof(file));
    close(fd);
    assert_true(n > 44);
    struct bv_cron every = parse_ok("*/10 * * * *");
    int loaded = 0;
    for (int i = 0; i < 3000; i++) {
        uint8_t *copy = malloc((size_t)n);
        memcpy(copy, file, (size_t)n);
        for (int k = rnd(&seed, 1, 4); k > 0; k--)
            copy[rnd(&seed, 0, (int)n - 1)] = (uint8_t)rand_r(&seed);
        struct bv_tz *tz = NULL;
        char err[200];
        if (bv_tz_from_tzif("m", copy, (size_t)n, &tz, err, sizeof(err)) == 0) {
            loaded++;
            for (int k = 0; k < 8; k++) {
                time_t t0 = at("1900-01-01T00:00Z") + (time_t)rnd(&seed, 0, 200 * 365) * 86400, t;
                struct tm tm;
                enum bv_tz_local_kind kind;
                assert_int_equal(bv_tz_localtime(tz, t0, &tm), 0);
                int rc = bv_tz_from_local(tz, t0, &t, &kind);
                assert_true(rc == 0 || rc == -EIO);
                rc = bv_cron_next(&every, tz, t0, &t);
                assert_true(rc == 0 || rc == -EIO);
                assert_true(rc != 0 || t > t0);
            }
        } else {
            assert_null(tz);
        }
        bv_tz_free(tz);
        free(copy);
    }
    print_message("%d of 3000 mutated TZif files loaded\n", loaded);
}

/* ---- differential against croniter ------------------------------------------------- */

static const char *croniter_python(void)
{
    static const char *const candidates[] = { "python3", "/usr/bin/python3" };
    const char *env = getenv("BV_PYTHON");
    char cmd[300];
    if (env) {
        snprintf(cmd, sizeof(cmd), "%s -c 'import croniter' >/dev/null 2>&1", env);
        return system(cmd) == 0 ? env : NULL;
    }
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        snprintf(cmd, sizeof(cmd), "%s -c 'import croniter' >/dev/null 2>&1", candidates[i]);
        if (system(cmd) == 0)
            return candidates[i];
    }
    return NULL;
}

static int rnd(unsigned *seed, int lo, int hi)
{
    return lo + rand_r(seed) % (hi - lo + 1);
}

/* A value of field f (0..4) as a number or, sometimes, a name. */
static void put_value(char *out, size_t len, int f, int v, unsigned *seed)
{
    static const char *const mon[] = { "jan", "FEB", "Mar", "apr", "MAY", "jun",
                                       "JUL", "aug", "SEP", "oct", "NOV", "dec" };
    static const char *const dow[] = { "sun", "MON", "Tue", "wed", "THU", "fri", "SAT" };
    if (f == 3 && rnd(seed, 0, 3) == 0)
        snprintf(out, len, "%s", mon[v - 1]);
    else if (f == 4 && v < 7 && rnd(seed, 0, 3) == 0)
        snprintf(out, len, "%s", dow[v]);
    else
        snprintf(out, len, "%d", v);
}

/* A random field; restricted day fields never start with '*', so both
 * tools agree on the day rule (croniter treats "*" + step as restricted). */
static void random_field(char *out, size_t len, int f, bool day_restricted, unsigned *seed)
{
    static const int lo[] = { 0, 0, 1, 1, 0 }, hi[] = { 59, 23, 31, 12, 7 };
    if ((f == 2 || f == 4) ? !day_restricted : rnd(seed, 0, 4) == 0) {
        snprintf(out, len, "*");
        return;
    }
    int items = rnd(seed, 1, 3);
    size_t n = 0;
    for (int i = 0; i < items && n < len; i++) {
        int a = rnd(seed, lo[f], hi[f]), b = rnd(seed, a, hi[f]), s = rnd(seed, 1, hi[f]);
        char va[8], vb[8];
        put_value(va, sizeof(va), f, a, seed);
        put_value(vb, sizeof(vb), f, b, seed);
        const char *sep = i ? "," : "";
        switch (rnd(seed, (f == 2 || f == 4) ? 1 : 0, 4)) {
        case 0: n += snprintf(out + n, len - n, "%s*/%d", sep, rnd(seed, 1, hi[f] / 2 + 1)); break;
        case 1: n += snprintf(out + n, len - n, "%s%s", sep, va); break;
        case 2: n += snprintf(out + n, len - n, "%s%s-%s", sep, va, vb); break;
        case 3: n += snprintf(out + n, len - n, "%s%s-%s/%d", sep, va, vb, s); break;
        default: n += snprintf(out + n, len - n, "%s%d/%d", sep, a, s); break;
        }
    }
}

#define DIFF_EXPRS 400
#define DIFF_RUNS 6

static const char croniter_script[] =
    "import sys\n"
    "from datetime import datetime, timezone\n"
    "from croniter import croniter\n"
    "for line in open(sys.argv[1]):\n"
    "    expr, start = line.rstrip('\\n').split('\\t')\n"
    "    it = croniter(expr, datetime.fromtimestamp(int(start), tz=timezone.utc))\n"
    "    print(' '.join(str(int(it.get_next(float))) for _ in range(6)))\n";

static void test_croniter_differential(void **state)
{
    (void)state;
    const char *py = croniter_python();
    if (!py) {
        print_message("skipped: croniter differential (no python3 with croniter; "
                      "apt-get install python3-croniter)\n");
        skip();
    }
    char dir[] = "/tmp/bvcronXXXXXX", in[64], script[64], outp[64], cmd[400];
    assert_non_null(mkdtemp(dir));
    snprintf(in, sizeof(in), "%s/in", dir);
    snprintf(script, sizeof(script), "%s/c.py", dir);
    snprintf(outp, sizeof(outp), "%s/out", dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs(croniter_script, f);
    fclose(f);

    static char exprs[DIFF_EXPRS][256];
    static time_t want[DIFF_EXPRS][DIFF_RUNS];
    int used = 0, refused = 0, full = 0;
    unsigned seed = 20240229;
    f = fopen(in, "w");
    for (int i = 0; i < DIFF_EXPRS; i++) {
        char fields[5][48];
        int restricted = rnd(&seed, 0, 3);      /* 0 none, 1 dom, 2 dow, 3 both */
        for (int k = 0; k < 5; k++)
            random_field(fields[k], sizeof(fields[k]), k,
                         (k == 2 && (restricted & 1)) || (k == 4 && (restricted & 2)), &seed);
        snprintf(exprs[used], sizeof(exprs[used]), "%s %s %s %s %s", fields[0], fields[1],
                 fields[2], fields[3], fields[4]);
        struct bv_cron c;
        struct bv_cron_error e;
        if (bv_cron_parse(exprs[used], &c, &e) != 0) {
            print_message("refused '%s': %s\n", exprs[used], e.msg);
            assert_int_equal(e.field, 3);         /* only "never runs" */
            refused++;
            continue;
        }
        /* croniter reads a restricted day field that covers every day as '*' (vixie
         * looks at the first character only): such expressions differ by design */
        if (c.flags == 0 && (c.wdays == 0x7f || c.mdays == ALL_MDAY)) {
            full++;
            continue;
        }
        time_t t = at("2000-01-01T00:00Z") + (time_t)rnd(&seed, 0, 30 * 365) * 86400 +
                   rnd(&seed, 0, 86399);
        fprintf(f, "%s\t%lld\n", exprs[used], (long long)t);
        for (int r = 0; r < DIFF_RUNS; r++) {
            assert_int_equal(bv_cron_next(&c, NULL, t, &t), 0);
            want[used][r] = t;
        }
        used++;
    }
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s %s %s > %s", py, script, in, outp);
    assert_int_equal(system(cmd), 0);
    f = fopen(outp, "r");
    assert_non_null(f);
    int mismatches = 0;
    for (int i = 0; i < used; i++) {
        long long got[DIFF_RUNS];
        assert_int_equal(fscanf(f, "%lld %lld %lld %lld %lld %lld", &got[0], &got[1], &got[2],
                                &got[3], &got[4], &got[5]),
                         DIFF_RUNS);
        for (int r = 0; r < DIFF_RUNS; r++) {
            if (got[r] == (long long)want[i][r])
                continue;
            char a[32], b[32];
            iso(want[i][r], a, sizeof(a));
            iso((time_t)got[r], b, sizeof(b));
            print_error("'%s' run %d: ours %s, croniter %s\n", exprs[i], r + 1, a, b);
            mismatches++;
            break;
        }
    }
    fclose(f);
    unlink(in);
    unlink(script);
    unlink(outp);
    rmdir(dir);
    print_message("%d expressions agree with croniter (%d refused as never running, %d "
                  "left out: a full restricted day field)\n", used - mismatches, refused, full);
    assert_int_equal(mismatches, 0);
    assert_true(used > DIFF_EXPRS / 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax_elements),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_next_utc),
        cmocka_unit_test(test_leap_years),
        cmocka_unit_test(test_dom_dow_rule),
        cmocka_unit_test(test_next_limits),
        cmocka_unit_test(test_dst_new_york),
        cmocka_unit_test(test_dst_berlin),
        cmocka_unit_test(test_from_local_kinds),
        cmocka_unit_test(test_dst_against_brute_force),
        cmocka_unit_test(test_tz_names),
        cmocka_unit_test(test_tz_against_glibc),
        cmocka_unit_test(test_tzif_crafted),
        cmocka_unit_test(test_random_inputs),
        cmocka_unit_test(test_croniter_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
