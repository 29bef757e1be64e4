/*
 * Retention selection: see sched/retention.h for the semantics.
 *
 * Each backup becomes an entry holding its period keys, computed once from
 * to_local: integers that are equal exactly when two backups fall in the
 * same hour, day, ISO week, month or year (only equality matters, never
 * their order).  The entries are sorted by drive, then newest first, so a
 * drive is a contiguous run.  In a run, keep_last takes the first N.  A
 * period rule sorts (key, position) pairs: the first pair of each key is
 * its period's newest backup; a walk newest first then keeps the first N of
 * those.  Grouping by sorted keys rather than comparing neighbours keeps the
 * verdict right when local time runs backwards across a period boundary.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sched/retention.h"

static const char *const reason_names[BV_RET_N_REASONS] = {
    [BV_RET_LAST] = "keep_last",
    [BV_RET_HOURLY] = "keep_hourly",
    [BV_RET_DAILY] = "keep_daily",
    [BV_RET_WEEKLY] = "keep_weekly",
    [BV_RET_MONTHLY] = "keep_monthly",
    [BV_RET_YEARLY] = "keep_yearly",
    [BV_RET_NEWEST] = "newest",
};

struct entry {
    const struct bv_retention_backup *b;
    size_t idx;                       /* position in the caller's arrays */
    int64_t key[BV_RET_N_RULES];      /* period keys; [BV_RET_LAST] unused */
};

struct key_pos {
    int64_t key;
    size_t pos;                       /* index in the drive's run, 0 = newest */
};

const char *bv_retention_reason_name(enum bv_retention_rule reason)
{
    return (unsigned)reason < BV_RET_N_REASONS ? reason_names[reason] : NULL;
}

int bv_retention_rule_parse(const char *name, enum bv_retention_rule *out)
{
    for (int r = 0; r < BV_RET_N_RULES; r++) {
        if (strcmp(name, reason_names[r]) == 0) {
            *out = (enum bv_retention_rule)r;
            return 0;
        }
    }
    return -ENOENT;
}

int bv_retention_validate(const struct bv_retention *r, bv_error **errp)
{
    bool any = false;
    for (int i = 0; i < BV_RET_N_RULES; i++) {
        if (r->keep[i] < 0)
            return bv_error_setf(errp, EINVAL, "retention.%s: must be 0 or more",
                                 reason_names[i]);
        any = any || r->keep[i] > 0;
    }
    if (!any)
        return bv_error_setf(errp, EINVAL,
                             "retention keeps nothing: set at least one keep_* rule above 0");
    return 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (m 1..12): count in
 * 400-year eras of years that start in March, so the leap day is last. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t year_of_era = y - era * 400;
    int64_t day_of_year = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

/* ISO 8601 week-year * 100 + week number (%G%V).  A week belongs to the
 * year holding its Thursday, and is numbered from that year's first one. */
static int64_t iso_week_key(int64_t y, int m, int d)
{
    int64_t days = days_from_civil(y, m, d);
    int64_t monday_based = ((days + 3) % 7 + 7) % 7;    /* 1970-01-01 was a Thursday */
    int64_t thursday = days - monday_based + 3;
    int64_t week_year = y;
    if (thursday < days_from_civil(y, 1, 1))
        week_year = y - 1;
    else if (thursday >= days_from_civil(y + 1, 1, 1))
        week_year = y + 1;
    return week_year * 100 + (thursday - days_from_civil(week_year, 1, 1)) / 7 + 1;
}

static int fill_keys(struct entry *e, bv_retention_to_local *to_local, void *opaque,
                     bv_error **errp)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_mon = -1;                   /* a converter that fills nothing is caught */
    if (to_local)
        to_local(opaque, e->b->created_at, &tm);
    else
        gmtime_r(&e->b->created_at, &tm);
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour < 0 || tm.tm_hour > 23)
        return bv_error_setf(errp, EINVAL, "backup %s: created_at %lld has no valid local time",
                             e->b->id, (long long)e->b->created_at);
    int64_t y = (int64_t)tm.tm_year + 1900;
    int m = tm.tm_mon + 1, d = tm.tm_mday;
    e->key[BV_RET_YEARLY] = y;
    e->key[BV_RET_MONTHLY] = y * 100 + m;
    e->key[BV_RET_WEEKLY] = iso_week_key(y, m, d);
    e->key[BV_RET_DAILY] = (y * 100 + m) * 100 + d;
    e->key[BV_RET_HOURLY] = e->key[BV_RET_DAILY] * 100 + tm.tm_hour;
    return 0;
}

/* By drive, then newest first (see the header's order), then input position. */
static int cmp_entry(const void *pa, const void *pb)
{
    const struct entry *a = pa, *b = pb;
    int c = strcmp(a->b->drive, b->b->drive);
    if (c != 0)
        return c;
    if (a->b->created_at != b->b->created_at)
        return a->b->created_at > b->b->created_at ? -1 : 1;
    if (a->b->seq != b->b->seq)
        return a->b->seq > b->b->seq ? -1 : 1;
    c = strcmp(a->b->id, b->b->id);
    if (c != 0)
        return -c;
    return a->idx > b->idx ? -1 : a->idx < b->idx;
}

static int cmp_key_pos(const void *pa, const void *pb)
{
    const struct key_pos *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* One period rule over one drive's run e[0..n) (newest first): head[] and
 * kp[] are n-entry scratch. */
static void keep_periods(const struct entry *e, size_t n, enum bv_retention_rule rule,
                         int64_t count, struct key_pos *kp, bool *head,
                         struct bv_retention_verdict *out)
{
    for (size_t i = 0; i < n; i++) {
        kp[i] = (struct key_pos){ .key = e[i].key[rule], .pos = i };
        head[i] = false;
    }
    qsort(kp, n, sizeof(*kp), cmp_key_pos);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || kp[i].key != kp[i - 1].key)
            head[kp[i].pos] = true;
    int64_t kept = 0;
    for (size_t i = 0; i < n && kept < count; i++) {
        if (head[i]) {
            out[e[i].idx].reasons |= BV_RET_BIT(rule);
            kept++;
        }
    }
}

static void decide_drive(const struct bv_retention *r, const struct entry *e, size_t n,
                         struct key_pos *kp, bool *head, struct bv_retention_verdict *out)
{
    for (size_t i = 0; i < n && (int64_t)i < r->keep[BV_RET_LAST]; i++)
        out[e[i].idx].reasons |= BV_RET_BIT(BV_RET_LAST);
    for (int rule = BV_RET_HOURLY; rule < BV_RET_N_RULES; rule++)
        if (r->keep[rule] > 0)
            keep_periods(e, n, (enum bv_retention_rule)rule, r->keep[rule], kp, head, out);
    if (out[e[0].idx].reasons == 0)
        out[e[0].idx].reasons = BV_RET_BIT(BV_RET_NEWEST);
}

/* Entries for every backup, sorted by drive then newest first. */
static int build_entries(const struct bv_retention_backup *backups, size_t n,
                         bv_retention_to_local *to_local, void *opaque, struct entry *e,
                         bv_error **errp)
{
    for (size_t i = 0; i < n; i++) {
        if (!backups[i].id || !backups[i].drive)
            return bv_error_setf(errp, EINVAL, "backup #%zu has no %s", i,
                                 backups[i].id ? "drive" : "id");
        e[i] = (struct entry){ .b = &backups[i], .idx = i };
        int ret = fill_keys(&e[i], to_local, opaque, errp);
        if (ret < 0)
            return ret;
    }
    qsort(e, n, sizeof(*e), cmp_entry);
    return 0;
}

int bv_retention_apply(const struct bv_retention *r,
                       const struct bv_retention_backup *backups, size_t n,
                       bv_retention_to_local *to_local, void *opaque,
                       struct bv_retention_verdict *out, bv_error **errp)
{
    struct entry *e = NULL;
    struct key_pos *kp = NULL;
    bool *head = NULL;
    int ret;

    for (size_t i = 0; i < n; i++)
        out[i] = (struct bv_retention_verdict){ .keep = true, .reasons = 0 };
    ret = bv_retention_validate(r, errp);
    if (ret < 0 || n == 0)
        goto out;
    e = calloc(n, sizeof(*e));
    kp = calloc(n, sizeof(*kp));
    head = calloc(n, sizeof(*head));
    if (!e || !kp || !head) {
        ret = bv_error_setf(errp, ENOMEM, "retention of %zu backups: out of memory", n);
        goto out;
    }
    ret = build_entries(backups, n, to_local, opaque, e, errp);
    if (ret < 0)
        goto out;
    /* Nothing fails from here on: the verdicts replace the safe "keep all". */
    size_t hi;
    for (size_t lo = 0; lo < n; lo = hi) {
        for (hi = lo + 1; hi < n && strcmp(e[hi].b->drive, e[lo].b->drive) == 0; hi++)
            ;
        for (size_t i = lo; i < hi; i++)
            out[e[i].idx].reasons = 0;
        decide_drive(r, e + lo, hi - lo, kp, head, out);
        for (size_t i = lo; i < hi; i++)
            out[e[i].idx].keep = out[e[i].idx].reasons != 0;
    }
out:
    free(head);
    free(kp);
    free(e);
    return ret;
}
