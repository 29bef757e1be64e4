/*
 * Retention selection (sched/retention.c): restic's documented examples,
 * each rule by hand, calendar boundaries (ISO weeks across new year and
 * week-53 years, months, years), time zones where the local day is not the
 * UTC day, a zone change that runs local time backwards, several drives,
 * ties, and a simulated month of hourly backups checked against a
 * brute-force oracle that works differently: period keys are strftime
 * strings and every question is answered by scanning all pairs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "sched/retention.h"

/* ---- fixtures ---- */

struct set {
    size_t n, cap;
    struct bv_retention_backup *b;
    char (*ids)[16];
    struct bv_retention_verdict *out;
};

static struct set *set_new(size_t cap)
{
    struct set *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->cap = cap;
    s->b = calloc(cap, sizeof(*s->b));
    s->ids = calloc(cap, sizeof(*s->ids));
    s->out = calloc(cap, sizeof(*s->out));
    assert_true(s->b && s->ids && s->out);
    return s;
}

static void set_free(struct set *s)
{
    free(s->b);
    free(s->ids);
    free(s->out);
    free(s);
}

/* Adds backup "b<k>" with seq k (k = 1, 2, …). */
static void set_add(struct set *s, const char *drive, time_t t)
{
    assert_true(s->n < s->cap);
    snprintf(s->ids[s->n], sizeof(s->ids[0]), "b%zu", s->n + 1);
    s->b[s->n] = (struct bv_retention_backup){
        .id = s->ids[s->n], .drive = drive, .created_at = t, .seq = (int64_t)s->n + 1 };
    s->n++;
}

static time_t at(int y, int mo, int d, int h, int mi)
{
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi };
    return timegm(&tm);
}

static void to_utc(void *opaque, time_t t, struct tm *out)
{
    (void)opaque;
    gmtime_r(&t, out);
}

/* A fixed offset east of UTC, in seconds (*(long *)opaque). */
static void to_fixed(void *opaque, time_t t, struct tm *out)
{
    time_t local = t + *(const long *)opaque;
    gmtime_r(&local, out);
}

/* A zone that moves from UTC+1 to UTC-1 at 'change' (local time jumps back
 * two hours, across midnight when change is 23:30 UTC). */
struct zone_change {
    time_t change;
};

static void to_changing(void *opaque, time_t t, struct tm *out)
{
    const struct zone_change *z = opaque;
    time_t local = t + (t < z->change ? 3600 : -3600);
    gmtime_r(&local, out);
}

static void apply(struct set *s, const struct bv_retention *r, bv_retention_to_local *conv,
                  void *opaque)
{
    bv_error *e = NULL;
    int ret = bv_retention_apply(r, s->b, s->n, conv, opaque, s->out, &e);
    if (ret < 0)
        fail_msg("apply: %s", e ? e->msg : "?");
    assert_null(e);
}

/* "b3 b4" : the kept ids, in input order. */
static const char *kept_ids(const struct set *s)
{
    static char buf[4096];
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n; i++)
        if (s->out[i].keep)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", len ? " " : "",
                                    s->b[i].id);
    assert_true(len < sizeof(buf));
    return buf;
}

/* "keep_daily,keep_weekly": a verdict's reasons. */
static const char *reasons_of(unsigned mask)
{
    static char buf[256];
    size_t len = 0;
    buf[0] = '\0';
    for (int r = 0; r < BV_RET_N_REASONS; r++)
        if (mask & BV_RET_BIT(r))
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", len ? "," : "",
                                    bv_retention_reason_name((enum bv_retention_rule)r));
    return buf;
}

static size_t find(const struct set *s, time_t t)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->b[i].created_at == t)
            return i;
    fail_msg("no backup at %lld", (long long)t);
    return 0;
}

static size_t count_kept(const struct set *s, int reason)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        if (reason < 0 ? s->out[i].keep : (s->out[i].reasons & BV_RET_BIT(reason)) != 0)
            k++;
    return k;
}

/* ---- the oracle: strftime keys, all pairs ---- */

static void period_key(int rule, const struct tm *tm, char *buf, size_t len)
{
    switch (rule) {
    case BV_RET_HOURLY: strftime(buf, len, "%Y-%m-%d %H", tm); break;
    case BV_RET_DAILY: strftime(buf, len, "%Y-%m-%d", tm); break;
    case BV_RET_WEEKLY: strftime(buf, len, "%G-W%V", tm); break;
    case BV_RET_MONTHLY: strftime(buf, len, "%Y-%m", tm); break;
    case BV_RET_YEARLY: strftime(buf, len, "%Y", tm); break;
    default: fail_msg("no period for rule %d", rule);
    }
}

/* Is backup a (at input position ai) newer than b (at bi)? */
static bool newer(const struct set *s, size_t ai, size_t bi)
{
    const struct bv_retention_backup *a = &s->b[ai], *b = &s->b[bi];
    if (a->created_at != b->created_at)
        return a->created_at > b->created_at;
    if (a->seq != b->seq)
        return a->seq > b->seq;
    int c = strcmp(a->id, b->id);
    return c != 0 ? c > 0 : ai > bi;
}

static void oracle(const struct set *s, const struct bv_retention *r,
                   bv_retention_to_local *conv, void *opaque, unsigned *want)
{
    size_t n = s->n;
    char (*key)[BV_RET_N_RULES][32] = calloc(n, sizeof(*key));
    bool *head = calloc(n, sizeof(*head));
    assert_true(key && head);
    for (size_t i = 0; i < n; i++) {
        struct tm tm;
        conv(opaque, s->b[i].created_at, &tm);
        for (int rule = BV_RET_HOURLY; rule < BV_RET_N_RULES; rule++)
            period_key(rule, &tm, key[i][rule], sizeof(key[i][rule]));
        want[i] = 0;
    }
    for (int rule = 0; rule < BV_RET_N_RULES; rule++) {
        if (r->keep[rule] == 0)
            continue;
        /* keep_last: every backup heads its own "period". */
        for (size_t i = 0; i < n; i++) {
            head[i] = true;
            for (size_t j = 0; j < n && rule != BV_RET_LAST; j++)
                if (j != i && strcmp(s->b[j].drive, s->b[i].drive) == 0 &&
                    newer(s, j, i) && strcmp(key[j][rule], key[i][rule]) == 0)
                    head[i] = false;
        }
        for (size_t i = 0; i < n; i++) {
            int64_t rank = 0;
            for (size_t j = 0; j < n; j++)
                if (head[j] && j != i && strcmp(s->b[j].drive, s->b[i].drive) == 0 &&
                    newer(s, j, i))
                    rank++;
            if (head[i] && rank < r->keep[rule])
                want[i] |= BV_RET_BIT(rule);
        }
    }
    for (size_t i = 0; i < n; i++) {
        bool newest = true;
        for (size_t j = 0; j < n; j++)
            if (j != i && strcmp(s->b[j].drive, s->b[i].drive) == 0 && newer(s, j, i))
                newest = false;
        if (newest && want[i] == 0)
            want[i] = BV_RET_BIT(BV_RET_NEWEST);
    }
    free(key);
    free(head);
}

static void check_against_oracle(struct set *s, const struct bv_retention *r,
                                 bv_retention_to_local *conv, void *opaque)
{
    unsigned *want = calloc(s->n, sizeof(*want));
    assert_non_null(want);
    apply(s, r, conv, opaque);
    oracle(s, r, conv, opaque, want);
    for (size_t i = 0; i < s->n; i++) {
        if (s->out[i].reasons != want[i] || s->out[i].keep != (want[i] != 0)) {
            char got[256];
            snprintf(got, sizeof(got), "%s", reasons_of(s->out[i].reasons));
            fail_msg("%s (%s, %lld): got [%s], oracle [%s]", s->b[i].id, s->b[i].drive,
                     (long long)s->b[i].created_at, got, reasons_of(want[i]));
        }
    }
    free(want);
}

/* ---- validation and names ---- */

static void test_validate(void **state)
{
    (void)state;
    bv_error *e = NULL;
    struct bv_retention none = { { 0 } };
    assert_int_equal(bv_retention_validate(&none, &e), -EINVAL);
    assert_string_equal(e->msg, "retention keeps nothing: set at least one keep_* rule above 0");
    bv_error_free(e);
    e = NULL;

    struct bv_retention neg = { .keep = { [BV_RET_DAILY] = 3, [BV_RET_WEEKLY] = -1 } };
    assert_int_equal(bv_retention_validate(&neg, &e), -EINVAL);
    assert_string_equal(e->msg, "retention.keep_weekly: must be 0 or more");
    bv_error_free(e);
    e = NULL;

    for (int rule = 0; rule < BV_RET_N_RULES; rule++) {
        struct bv_retention one = { { 0 } };
        one.keep[rule] = 1;
        assert_int_equal(bv_retention_validate(&one, NULL), 0);
    }

    /* An invalid retention decides nothing: every verdict stays "keep". */
    struct set *s = set_new(2);
    set_add(s, "d0", at(2026, 1, 1, 0, 0));
    set_add(s, "d0", at(2026, 1, 2, 0, 0));
    assert_int_equal(bv_retention_apply(&none, s->b, s->n, NULL, NULL, s->out, &e), -EINVAL);
    assert_string_equal(e->msg, "retention keeps nothing: set at least one keep_* rule above 0");
    bv_error_free(e);
    e = NULL;
    assert_true(s->out[0].keep && s->out[1].keep);
    assert_int_equal(s->out[0].reasons | s->out[1].reasons, 0);

    /* So does a backup without a drive. */
    struct bv_retention last = { .keep = { [BV_RET_LAST] = 1 } };
    s->b[0].drive = NULL;
    assert_int_equal(bv_retention_apply(&last, s->b, s->n, NULL, NULL, s->out, &e), -EINVAL);
    assert_string_equal(e->msg, "backup #0 has no drive");
    bv_error_free(e);
    assert_true(s->out[0].keep && s->out[1].keep);
    set_free(s);
}

static void test_names(void **state)
{
    (void)state;
    const char *want[] = { "keep_last", "keep_hourly", "keep_daily", "keep_weekly",
                           "keep_monthly", "keep_yearly", "newest" };
    for (int r = 0; r < BV_RET_N_REASONS; r++)
        assert_string_equal(bv_retention_reason_name((enum bv_retention_rule)r), want[r]);
    assert_null(bv_retention_reason_name(BV_RET_N_REASONS));
    enum bv_retention_rule rule;
    assert_int_equal(bv_retention_rule_parse("keep_monthly", &rule), 0);
    assert_int_equal(rule, BV_RET_MONTHLY);
    assert_int_equal(bv_retention_rule_parse("newest", &rule), -ENOENT);
    assert_int_equal(bv_retention_rule_parse("keep_daily ", &rule), -ENOENT);
}

/* ---- restic's documented examples (doc/060_forget.rst) ---- */

/* One backup every Sunday for 12 weeks (2019-09-01 … 2019-11-17, 11:00);
 * --keep-daily 4 keeps the last four Sundays.  Given newest first, to show
 * input order does not matter. */
static void test_restic_sundays(void **state)
{
    (void)state;
    struct set *s = set_new(12);
    for (int w = 11; w >= 0; w--)
        set_add(s, "mopped", at(2019, 9, 1, 11, 0) + (time_t)w * 7 * 86400);
    assert_int_equal(s->b[0].created_at, at(2019, 11, 17, 11, 0));
    struct bv_retention r = { .keep = { [BV_RET_DAILY] = 4 } };
    apply(s, &r, to_utc, NULL);
    assert_string_equal(kept_ids(s), "b1 b2 b3 b4");
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(reasons_of(s->out[i].reasons), "keep_daily");
    set_free(s);
}

/* A backup every day for 100 years, --keep-daily 7 --keep-weekly 5
 * --keep-monthly 12 --keep-yearly 75: the dailies, the weeklies not already
 * daily, the monthlies not already kept, the yearlies not already kept.
 * Ending on Wednesday 2026-07-15: daily 07-09…07-15 (7); weekly adds the
 * Sundays 07-05, 06-28, 06-21 (07-15 and 07-12 are dailies: 3); monthly adds
 * 06-30 … 2025-08-31 (11); yearly adds 2024-12-31 … 1952-12-31 (73, as
 * 2025-12-31 is a monthly): 94. */
static void test_restic_century(void **state)
{
    (void)state;
    time_t first = at(1926, 7, 16, 12, 0), last = at(2026, 7, 15, 12, 0);
    struct set *s = set_new((size_t)((last - first) / 86400 + 1));
    for (time_t t = first; t <= last; t += 86400)
        set_add(s, "mopped", t);
    struct bv_retention r = { .keep = { [BV_RET_DAILY] = 7, [BV_RET_WEEKLY] = 5,
                                        [BV_RET_MONTHLY] = 12, [BV_RET_YEARLY] = 75 } };
    apply(s, &r, NULL, NULL);
    assert_int_equal(count_kept(s, -1), 94);
    assert_int_equal(count_kept(s, BV_RET_DAILY), 7);
    assert_int_equal(count_kept(s, BV_RET_WEEKLY), 5);
    assert_int_equal(count_kept(s, BV_RET_MONTHLY), 12);
    assert_int_equal(count_kept(s, BV_RET_YEARLY), 75);
    static const struct {
        int y, m, d;
        const char *reasons;
    } spot[] = {
        { 2026, 7, 15, "keep_daily,keep_weekly,keep_monthly,keep_yearly" },
        { 2026, 7, 12, "keep_daily,keep_weekly" },
        { 2026, 7, 9, "keep_daily" },
        { 2026, 7, 8, "" },
        { 2026, 6, 21, "keep_weekly" },
        { 2026, 6, 14, "" },
        { 2026, 6, 30, "keep_monthly" },
        { 2025, 12, 31, "keep_monthly,keep_yearly" },
        { 2025, 8, 31, "keep_monthly" },
        { 2025, 7, 31, "" },
        { 2024, 12, 31, "keep_yearly" },
        { 1952, 12, 31, "keep_yearly" },
        { 1951, 12, 31, "" },
        { 1926, 7, 16, "" },
    };
    for (size_t i = 0; i < sizeof(spot) / sizeof(spot[0]); i++) {
        size_t k = find(s, at(spot[i].y, spot[i].m, spot[i].d, 12, 0));
        assert_string_equal(reasons_of(s->out[k].reasons), spot[i].reasons);
        assert_int_equal(s->out[k].keep, spot[i].reasons[0] != '\0');
    }
    set_free(s);
}

/* ---- each rule by hand ---- */

static void test_keep_last(void **state)
{
    (void)state;
    struct set *s = set_new(5);
    time_t t0 = at(2026, 3, 1, 0, 0);
    /* b1 … b5, given out of order */
    time_t offs[] = { 300, 100, 500, 200, 400 };
    for (int i = 0; i < 5; i++)
        set_add(s, "d0", t0 + offs[i]);
    struct bv_retention r = { .keep = { [BV_RET_LAST] = 2 } };
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b3 b5");
    assert_string_equal(reasons_of(s->out[2].reasons), "keep_last");
    r.keep[BV_RET_LAST] = 10;
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b1 b2 b3 b4 b5");
    set_free(s);
}

/* Hour 12 has no backup: it does not count. */
static void test_keep_hourly(void **state)
{
    (void)state;
    struct set *s = set_new(6);
    set_add(s, "d0", at(2026, 3, 1, 10, 5));
    set_add(s, "d0", at(2026, 3, 1, 10, 40));   /* b2: newest of 10:00 */
    set_add(s, "d0", at(2026, 3, 1, 11, 10));
    set_add(s, "d0", at(2026, 3, 1, 11, 59));   /* b4: newest of 11:00 */
    set_add(s, "d0", at(2026, 3, 1, 13, 0));    /* b5 */
    set_add(s, "d0", at(2026, 3, 1, 9, 59));    /* b6: 09:00, the 4th hour */
    struct bv_retention r = { .keep = { [BV_RET_HOURLY] = 3 } };
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b2 b4 b5");
    r.keep[BV_RET_HOURLY] = 4;
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b2 b4 b5 b6");
    set_free(s);
}

/* Day, month and year edges to the second. */
static void test_day_month_year_edges(void **state)
{
    (void)state;
    struct set *s = set_new(5);
    set_add(s, "d0", at(2025, 12, 31, 23, 59) + 59);   /* b1 */
    set_add(s, "d0", at(2026, 1, 1, 0, 0));            /* b2 */
    set_add(s, "d0", at(2026, 1, 31, 23, 59) + 59);    /* b3 */
    set_add(s, "d0", at(2026, 2, 1, 0, 0));            /* b4 */
    set_add(s, "d0", at(2026, 1, 1, 0, 0) + 1);        /* b5: same day as b2, newer */
    struct bv_retention r = { .keep = { [BV_RET_DAILY] = 3 } };
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b3 b4 b5");
    r.keep[BV_RET_DAILY] = 4;
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b1 b3 b4 b5");

    struct bv_retention m = { .keep = { [BV_RET_MONTHLY] = 2 } };
    apply(s, &m, NULL, NULL);
    assert_string_equal(kept_ids(s), "b3 b4");
    m.keep[BV_RET_MONTHLY] = 3;
    apply(s, &m, NULL, NULL);
    assert_string_equal(kept_ids(s), "b1 b3 b4");

    struct bv_retention y = { .keep = { [BV_RET_YEARLY] = 2 } };
    apply(s, &y, NULL, NULL);
    assert_string_equal(kept_ids(s), "b1 b4");
    y.keep[BV_RET_YEARLY] = 1;
    apply(s, &y, NULL, NULL);
    assert_string_equal(kept_ids(s), "b4");
    set_free(s);
}

/* Two backups at noon: same ISO week (keep_weekly 1 keeps only the newer)
 * or not (it keeps both with keep_weekly 2, and still one with 1). */
static void expect_week(int y1, int m1, int d1, int y2, int m2, int d2, bool same)
{
    struct set *s = set_new(2);
    set_add(s, "d0", at(y1, m1, d1, 12, 0));
    set_add(s, "d0", at(y2, m2, d2, 12, 0));
    struct bv_retention r = { .keep = { [BV_RET_WEEKLY] = 2 } };
    apply(s, &r, NULL, NULL);
    if (!same != s->out[0].keep)
        fail_msg("%04d-%02d-%02d and %04d-%02d-%02d: expected %s ISO week", y1, m1, d1, y2, m2,
                 d2, same ? "the same" : "different");
    assert_true(s->out[1].keep);
    set_free(s);
}

static void test_iso_weeks(void **state)
{
    (void)state;
    /* 2026 starts on a Thursday: it has a week 53, running to Sunday 2027-01-03. */
    expect_week(2026, 12, 31, 2027, 1, 1, true);
    expect_week(2026, 12, 28, 2027, 1, 3, true);
    expect_week(2027, 1, 3, 2027, 1, 4, false);
    /* 2020, a leap year starting on a Wednesday, has a week 53. */
    expect_week(2020, 12, 31, 2021, 1, 3, true);
    expect_week(2021, 1, 3, 2021, 1, 4, false);
    /* 2015 starts on a Thursday: week 53 again. */
    expect_week(2015, 12, 31, 2016, 1, 3, true);
    /* 2024-12-30 (Monday) opens 2025-W01; the Sunday before closes 2024-W52. */
    expect_week(2024, 12, 29, 2024, 12, 30, false);
    expect_week(2024, 12, 30, 2025, 1, 5, true);
    /* 2021-01-01 (a Friday) is in 2020-W53 with the Monday before it. */
    expect_week(2020, 12, 28, 2021, 1, 1, true);
    /* Mid-year: Sunday to Monday. */
    expect_week(2026, 7, 12, 2026, 7, 13, false);
    expect_week(2026, 7, 6, 2026, 7, 12, true);
}

/* Every day of 1999 … 2060 at noon, keep_weekly unbounded: a day is kept
 * exactly when the next day is in another %G-%V week. */
static void test_iso_weeks_exhaustive(void **state)
{
    (void)state;
    time_t first = at(1999, 1, 1, 12, 0), last = at(2060, 12, 31, 12, 0);
    struct set *s = set_new((size_t)((last - first) / 86400 + 1));
    for (time_t t = first; t <= last; t += 86400)
        set_add(s, "d0", t);
    struct bv_retention r = { .keep = { [BV_RET_WEEKLY] = INT64_MAX } };
    apply(s, &r, NULL, NULL);
    for (size_t i = 0; i < s->n; i++) {
        char wk[16] = "", next[16] = "";
        struct tm tm;
        gmtime_r(&s->b[i].created_at, &tm);
        strftime(wk, sizeof(wk), "%G-W%V", &tm);
        time_t t2 = s->b[i].created_at + 86400;
        gmtime_r(&t2, &tm);
        strftime(next, sizeof(next), "%G-W%V", &tm);
        bool want = i + 1 == s->n || strcmp(wk, next) != 0;
        if (s->out[i].keep != want)
            fail_msg("day %lld (%s): keep %d, want %d", (long long)s->b[i].created_at, wk,
                     s->out[i].keep, want);
    }
    assert_int_equal(count_kept(s, -1), 3236);    /* ISO weeks 1998-W53 … 2060-W53 */
    set_free(s);
}

/* ---- time zones ---- */

/* 08:00, 12:00 and 20:00 UTC on 2026-03-10 are one UTC day but two local
 * days 14 hours east (22:00 on the 10th, 02:00 and 10:00 on the 11th) and
 * 10 hours west (22:00 on the 9th, 02:00 and 10:00 on the 10th). */
static void test_timezone_day(void **state)
{
    (void)state;
    struct set *s = set_new(3);
    set_add(s, "d0", at(2026, 3, 10, 8, 0));
    set_add(s, "d0", at(2026, 3, 10, 12, 0));
    set_add(s, "d0", at(2026, 3, 10, 20, 0));
    struct bv_retention r = { .keep = { [BV_RET_DAILY] = 3 } };
    apply(s, &r, to_utc, NULL);
    assert_string_equal(kept_ids(s), "b3");
    long east = 14 * 3600, west = -10 * 3600;
    apply(s, &r, to_fixed, &east);
    assert_string_equal(kept_ids(s), "b1 b3");
    apply(s, &r, to_fixed, &west);
    assert_string_equal(kept_ids(s), "b1 b3");
    set_free(s);
}

/* New year and ISO week 14 hours east: 2026-12-31 20:00 UTC is 2027-01-01
 * 10:00 local; Sunday 2026-07-12 20:00 UTC is Monday 10:00 local. */
static void test_timezone_year_week(void **state)
{
    (void)state;
    long east = 14 * 3600;
    struct set *s = set_new(2);
    set_add(s, "d0", at(2026, 12, 31, 8, 0));
    set_add(s, "d0", at(2026, 12, 31, 20, 0));
    struct bv_retention y = { .keep = { [BV_RET_YEARLY] = 2 } };
    apply(s, &y, NULL, NULL);
    assert_string_equal(kept_ids(s), "b2");
    apply(s, &y, to_fixed, &east);
    assert_string_equal(kept_ids(s), "b1 b2");
    set_free(s);

    s = set_new(2);
    set_add(s, "d0", at(2026, 7, 12, 8, 0));
    set_add(s, "d0", at(2026, 7, 12, 20, 0));
    struct bv_retention w = { .keep = { [BV_RET_WEEKLY] = 2 } };
    apply(s, &w, NULL, NULL);
    assert_string_equal(kept_ids(s), "b2");
    apply(s, &w, to_fixed, &east);
    assert_string_equal(kept_ids(s), "b1 b2");
    set_free(s);
}

/* Local time runs back across midnight (UTC+1 → UTC-1 at 23:30 UTC): the
 * newest backup (b3, 23:00 local on the 1st) shares its day with b1, which
 * is not the newest of that day however many days are kept; restic's
 * neighbour comparison would count the 1st twice and keep b1. */
static void test_zone_runs_back(void **state)
{
    (void)state;
    struct zone_change z = { .change = at(2026, 3, 1, 23, 30) };
    struct set *s = set_new(3);
    set_add(s, "d0", at(2026, 3, 1, 20, 0));    /* b1: 21:00 local, day 1 */
    set_add(s, "d0", at(2026, 3, 1, 23, 10));   /* b2: 00:10 local, day 2 */
    set_add(s, "d0", at(2026, 3, 2, 0, 0));     /* b3: 23:00 local, day 1 */
    struct bv_retention r = { .keep = { [BV_RET_DAILY] = 1 } };
    apply(s, &r, to_changing, &z);
    assert_string_equal(kept_ids(s), "b3");
    r.keep[BV_RET_DAILY] = 10;
    apply(s, &r, to_changing, &z);
    assert_string_equal(kept_ids(s), "b2 b3");
    check_against_oracle(s, &r, to_changing, &z);
    set_free(s);
}

/* ---- drives, ties, the newest ---- */

static void test_drives(void **state)
{
    (void)state;
    struct set *s = set_new(6);
    set_add(s, "d0", at(2026, 5, 1, 10, 0));    /* b1 */
    set_add(s, "d1", at(2026, 5, 1, 11, 0));    /* b2 */
    set_add(s, "d0", at(2026, 5, 2, 10, 0));    /* b3 */
    set_add(s, "d1", at(2026, 5, 3, 11, 0));    /* b4 */
    set_add(s, "d0", at(2026, 5, 3, 10, 0));    /* b5: d0's newest */
    set_add(s, "d1", at(2026, 5, 3, 9, 0));     /* b6 */
    struct bv_retention r = { .keep = { [BV_RET_LAST] = 1 } };
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b4 b5");
    struct bv_retention d = { .keep = { [BV_RET_DAILY] = 2 } };
    apply(s, &d, NULL, NULL);
    assert_string_equal(kept_ids(s), "b2 b3 b4 b5");
    /* The newest of each drive carries every rule above 0. */
    struct bv_retention all = { .keep = { 1, 1, 1, 1, 1, 1 } };
    apply(s, &all, NULL, NULL);
    assert_string_equal(kept_ids(s), "b4 b5");
    assert_string_equal(reasons_of(s->out[3].reasons),
                        "keep_last,keep_hourly,keep_daily,keep_weekly,keep_monthly,keep_yearly");
    assert_int_equal(s->out[4].reasons, s->out[3].reasons);
    check_against_oracle(s, &d, to_utc, NULL);
    set_free(s);
}

/* Equal created_at: larger seq wins, then larger id, then input position;
 * the answer does not depend on input order. */
static void test_ties(void **state)
{
    (void)state;
    time_t t = at(2026, 5, 1, 10, 0);
    struct bv_retention r = { .keep = { [BV_RET_LAST] = 1, [BV_RET_DAILY] = 1 } };
    const int64_t seqs[3][3] = { { 5, 7, 6 }, { 7, 6, 5 }, { 6, 5, 7 } };
    for (int p = 0; p < 3; p++) {
        struct set *s = set_new(3);
        for (int i = 0; i < 3; i++) {
            set_add(s, "d0", t);
            s->b[i].seq = seqs[p][i];
        }
        apply(s, &r, NULL, NULL);
        for (int i = 0; i < 3; i++)
            assert_int_equal(s->out[i].keep, seqs[p][i] == 7);
        set_free(s);
    }
    /* Same seq: the larger id by strcmp ("b2" > "b10"). */
    struct set *s = set_new(3);
    set_add(s, "d0", t);
    set_add(s, "d0", t);
    set_add(s, "d0", t);
    s->b[0].id = "b10";
    s->b[1].id = "b2";
    s->b[2].id = "b1";
    for (int i = 0; i < 3; i++)
        s->b[i].seq = 1;
    apply(s, &r, NULL, NULL);
    assert_string_equal(kept_ids(s), "b2");
    /* Nothing to tell them apart: the later in the input. */
    s->b[0].id = s->b[1].id = s->b[2].id = "b";
    apply(s, &r, NULL, NULL);
    assert_false(s->out[0].keep);
    assert_false(s->out[1].keep);
    assert_true(s->out[2].keep);
    set_free(s);
}

static void test_empty(void **state)
{
    (void)state;
    struct bv_retention r = { .keep = { [BV_RET_LAST] = 1 } };
    assert_int_equal(bv_retention_apply(&r, NULL, 0, NULL, NULL, NULL, NULL), 0);
}

/* ---- a simulated month of hourly backups ---- */

/* January 2026, one backup an hour at :17: 744.  keep 24 hourly, 7 daily,
 * 4 weekly, 6 monthly: the last 24 hours (all of the 31st); the 25th … 30th
 * (the 31st is already kept); ISO weeks 2026-W03 and W02 (their Sundays,
 * the 18th and 11th; W05's newest is the 31st, W04's the 25th); January
 * is the only month.  24 + 6 + 2 = 32. */
static void test_month_of_hourly(void **state)
{
    (void)state;
    struct set *s = set_new(744);
    for (int h = 0; h < 744; h++)
        set_add(s, "d0", at(2026, 1, 1, 0, 17) + (time_t)h * 3600);
    struct bv_retention r = { .keep = { [BV_RET_HOURLY] = 24, [BV_RET_DAILY] = 7,
                                        [BV_RET_WEEKLY] = 4, [BV_RET_MONTHLY] = 6 } };
    check_against_oracle(s, &r, to_utc, NULL);
    assert_int_equal(count_kept(s, -1), 32);
    assert_int_equal(count_kept(s, BV_RET_HOURLY), 24);
    assert_int_equal(count_kept(s, BV_RET_DAILY), 7);
    assert_int_equal(count_kept(s, BV_RET_WEEKLY), 4);
    assert_int_equal(count_kept(s, BV_RET_MONTHLY), 1);
    assert_string_equal(reasons_of(s->out[find(s, at(2026, 1, 18, 23, 17))].reasons),
                        "keep_weekly");
    assert_string_equal(reasons_of(s->out[find(s, at(2026, 1, 25, 23, 17))].reasons),
                        "keep_daily,keep_weekly");
    set_free(s);
}

/* The same month on two drives, with jittered minutes, missed hours and
 * equal timestamps, in UTC+05:30 and in UTC: the oracle decides. */
static void test_month_irregular(void **state)
{
    (void)state;
    struct set *s = set_new(2 * 744);
    uint32_t x = 12345;
    time_t prev[2] = { 0, 0 };
    for (int h = 0; h < 744; h++) {
        for (int d = 0; d < 2; d++) {
            x = x * 1103515245u + 12345u;
            if ((x >> 16) % 10 == 0)
                continue;                            /* a missed hour */
            time_t t = at(2025, 12, 20, 0, 0) + (time_t)h * 3600 + (time_t)((x >> 8) % 3600);
            if ((x >> 20) % 17 == 0 && prev[d] != 0)
                t = prev[d];                         /* a tie with the drive's previous */
            set_add(s, d ? "d1" : "d0", t);
            prev[d] = t;
        }
    }
    struct bv_retention r = { .keep = { [BV_RET_HOURLY] = 24, [BV_RET_DAILY] = 7,
                                        [BV_RET_WEEKLY] = 4, [BV_RET_MONTHLY] = 6 } };
    long india = 5 * 3600 + 1800;
    check_against_oracle(s, &r, to_fixed, &india);
    check_against_oracle(s, &r, to_utc, NULL);
    struct bv_retention r2 = { .keep = { [BV_RET_LAST] = 30, [BV_RET_WEEKLY] = 2,
                                         [BV_RET_YEARLY] = 3 } };
    check_against_oracle(s, &r2, to_fixed, &india);
    set_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_restic_sundays),
        cmocka_unit_test(test_restic_century),
        cmocka_unit_test(test_keep_last),
        cmocka_unit_test(test_keep_hourly),
        cmocka_unit_test(test_day_month_year_edges),
        cmocka_unit_test(test_iso_weeks),
        cmocka_unit_test(test_iso_weeks_exhaustive),
        cmocka_unit_test(test_timezone_day),
        cmocka_unit_test(test_timezone_year_week),
        cmocka_unit_test(test_zone_runs_back),
        cmocka_unit_test(test_drives),
        cmocka_unit_test(test_ties),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_month_of_hourly),
        cmocka_unit_test(test_month_irregular),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
