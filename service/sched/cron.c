/*
 * Cron expressions: see sched/cron.h for the syntax and the DST rule.
 *
 * Parsing is one pass per field over the original string, so every error
 * can name the field and the byte offset of what is wrong.  A field becomes
 * a bit mask; the day-of-week mask has bit 7 folded into bit 0.
 *
 * Search works on the local calendar, not on instants: from the local
 * minute after `after`, step over months not in the month mask, days that
 * fail the day rule, hours and minutes not in their masks (each skip is a
 * jump, so a yearly schedule costs a dozen steps, not half a million
 * minutes), then map the local minute to an instant with bv_tz_from_local.
 * That map is monotone, so the first matching local minute whose instant is
 * after `after` is the answer; minutes of a repeated hour whose first
 * occurrence is already past are stepped over one by one (at most the
 * length of the overlap).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sched/calendar.h"
#include "sched/cron.h"

#define SCAN_DAYS (146097 + 366)   /* one Gregorian cycle (400 years) and a year */
#define MAX_PASSES 2000            /* > minutes in any repeated span (< 26 h) */
#define QUOTE_MAX 32               /* bytes of the expression quoted in a message */

static const char *const month_names[] = { "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                           "JUL", "AUG", "SEP", "OCT", "NOV", "DEC" };
static const char *const day_names[] = { "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT" };

struct field_spec {
    const char *name;
    int lo, hi;
    const char *const *names;      /* names[i] means lo + i; NULL: numbers only */
    int nnames;
    const char *name_kind;         /* "month", "day": for "unknown … name" */
};

static const struct field_spec specs[5] = {
    { "minute", 0, 59, NULL, 0, NULL },
    { "hour", 0, 23, NULL, 0, NULL },
    { "day-of-month", 1, 31, NULL, 0, NULL },
    { "month", 1, 12, month_names, 12, "month" },
    { "day-of-week", 0, 7, day_names, 7, "day" },
};

static const struct {
    const char *name, *expansion;
} macros[] = {
    { "@hourly", "0 * * * *" },  { "@daily", "0 0 * * *" },   { "@midnight", "0 0 * * *" },
    { "@weekly", "0 0 * * 0" },  { "@monthly", "0 0 1 * *" }, { "@yearly", "0 0 1 1 *" },
    { "@annually", "0 0 1 1 *" },
};

struct parser {
    const char *expr;
    struct bv_cron_error *err;
    int field;                     /* 1..5 while parsing a field, else 0 */
};

const char *bv_cron_field_name(int field)
{
    return field >= 1 && field <= 5 ? specs[field - 1].name : "";
}

/* ---- errors --------------------------------------------------------------- */

/* Copy at most QUOTE_MAX bytes of [s, s+len) as printable ASCII. */
static void quote(char *dst, size_t cap, const char *s, size_t len)
{
    size_t n = 0, lim = len > QUOTE_MAX ? QUOTE_MAX : len;
    for (size_t i = 0; i < lim && n + 4 < cap; i++)
        dst[n++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (lim < len && n + 4 < cap) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
}

/* Fill the error: offset of `at`, and "cron: field N (name) 'quote': why"
 * (or "cron: why" outside a field).  Returns -EINVAL. */
static int perr(struct parser *p, const char *at, const char *q, size_t qlen,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int perr(struct parser *p, const char *at, const char *q, size_t qlen,
                const char *fmt, ...)
{
    if (!p->err)
        return -EINVAL;
    char why[120], qs[QUOTE_MAX + 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    p->err->field = p->field;
    p->err->offset = (size_t)(at - p->expr);
    if (p->field == 0) {
        snprintf(p->err->msg, sizeof(p->err->msg), "cron: %s", why);
        return -EINVAL;
    }
    quote(qs, sizeof(qs), q, qlen);
    snprintf(p->err->msg, sizeof(p->err->msg), "cron: field %d (%s) '%s': %s", p->field,
             specs[p->field - 1].name, qs, why);
    return -EINVAL;
}

static int bad_char(struct parser *p, const char *at, const char *es, const char *ee)
{
    unsigned char ch = (unsigned char)*at;
    if (ch >= 0x20 && ch < 0x7f)
        return perr(p, at, es, (size_t)(ee - es), "unexpected character '%c'", ch);
    return perr(p, at, es, (size_t)(ee - es), "unexpected byte 0x%02x", ch);
}

/* ---- fields ---------------------------------------------------------------- */

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool is_alpha(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

/* A number or (in month/day-of-week) a name at *s, before ee.  range_end:
 * the name SUN ending a range means 7. */
static int parse_value(struct parser *p, const struct field_spec *f, const char **s,
                       const char *ee, const char *es, bool range_end, int *out)
{
    const char *t = *s;
    if (t < ee && *t >= '0' && *t <= '9') {
        long v = 0;
        for (; t < ee && *t >= '0' && *t <= '9'; t++)
            v = v > 9999 ? v : v * 10 + (*t - '0');
        if (v < f->lo || v > f->hi)
            return perr(p, *s, *s, (size_t)(t - *s), "value out of range %d-%d", f->lo, f->hi);
        *out = (int)v;
    } else if (t < ee && is_alpha(*t)) {
        while (t < ee && is_alpha(*t))
            t++;
        size_t n = (size_t)(t - *s);
        int i = 0;
        if (!f->names)
            return perr(p, *s, *s, n, "names are allowed only in the month and day-of-week "
                                      "fields");
        while (i < f->nnames && !(n == 3 && strncasecmp(*s, f->names[i], 3) == 0))
            i++;
        if (i == f->nnames)
            return perr(p, *s, *s, n, "unknown %s name (%s..%s)", f->name_kind, f->names[0],
                        f->names[f->nnames - 1]);
        *out = f->lo + i;
        if (range_end && f->names == day_names && i == 0)
            *out = 7;
    } else if (t == ee) {
        return perr(p, t, es, (size_t)(ee - es), "a range end is missing after '-'");
    } else {
        return bad_char(p, t, es, ee);
    }
    *s = t;
    return 0;
}

static int parse_step(struct parser *p, const struct field_spec *f, const char **s,
                      const char *ee, const char *es, int *step)
{
    const char *t = *s;
    long v = 0;
    if (t == ee)
        return perr(p, t, es, (size_t)(ee - es), "a step is missing after '/'");
    if (*t < '0' || *t > '9')
        return bad_char(p, t, es, ee);
    for (; t < ee && *t >= '0' && *t <= '9'; t++)
        v = v > 9999 ? v : v * 10 + (*t - '0');
    if (v < 1 || v > f->hi)
        return perr(p, *s, *s, (size_t)(t - *s), "step out of range 1-%d", f->hi);
    *step = (int)v;
    *s = t;
    return 0;
}

/* One list element [es, ee): *, N, N-M, each optionally /S. */
static int parse_element(struct parser *p, const struct field_spec *f, const char *es,
                         const char *ee, uint64_t *mask)
{
    const char *s = es;
    int lo = f->lo, hi = f->hi, step = 1, rc;
    bool single = false;
    if (*s == '*') {
        s++;
    } else {
        if ((rc = parse_value(p, f, &s, ee, es, false, &lo)) < 0)
            return rc;
        hi = lo;
        single = true;
        if (s < ee && *s == '-') {
            const char *end = ++s;
            if ((rc = parse_value(p, f, &s, ee, es, lo > 0, &hi)) < 0)
                return rc;
            if (hi < lo)
                return perr(p, end, es, (size_t)(ee - es), "range runs backwards (%d > %d)", lo,
                            hi);
            single = false;
        }
    }
    if (s < ee && *s == '/') {
        s++;
        if ((rc = parse_step(p, f, &s, ee, es, &step)) < 0)
            return rc;
        if (single)                        /* vixie: N/S is N to the maximum by S */
            hi = f->hi;
    }
    if (s != ee)
        return bad_char(p, s, es, ee);
    for (int v = lo; v <= hi; v += step)
        *mask |= 1ULL << v;
    return 0;
}

/* The comma list [fs, fe) of field p->field. */
static int parse_field(struct parser *p, const char *fs, const char *fe, uint64_t *mask)
{
    const struct field_spec *f = &specs[p->field - 1];
    const char *es = fs;
    *mask = 0;
    for (;;) {
        const char *ee = memchr(es, ',', (size_t)(fe - es));
        if (!ee)
            ee = fe;
        if (ee == es)
            return perr(p, es, fs, (size_t)(fe - fs), "empty element in the list");
        int rc = parse_element(p, f, es, ee, mask);
        if (rc < 0)
            return rc;
        if (ee == fe)
            return 0;
        es = ee + 1;
    }
}

/* ---- expressions ----------------------------------------------------------- */

/* Some (month, day) pair of the masks exists on the calendar (Feb 29 counts:
 * it comes back every 4 or 8 years). */
static bool days_exist(const struct bv_cron *c)
{
    static const int max_days[13] = { 0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    for (int m = 1; m <= 12; m++)
        for (int d = 1; d <= max_days[m]; d++)
            if ((c->months >> m & 1) && (c->mdays >> d & 1))
                return true;
    return false;
}

static void store_field(struct bv_cron *c, int field, uint64_t mask)
{
    switch (field) {
    case 1: c->minutes = mask; break;
    case 2: c->hours = (uint32_t)mask; break;
    case 3: c->mdays = (uint32_t)mask; break;
    case 4: c->months = (uint16_t)mask; break;
    default: c->wdays = (uint8_t)((mask | mask >> 7) & 0x7f); break;
    }
}

/* Split at blanks; up to 6 fields are located (the 6th only to point at). */
static int split_fields(struct parser *p, const char *s, const char *fs[6], const char *fe[6])
{
    int n = 0;
    for (;;) {
        while (is_blank(*s))
            s++;
        if (!*s)
            break;
        if (n < 6)
            fs[n] = s;
        while (*s && !is_blank(*s))
            s++;
        if (n < 6)
            fe[n] = s;
        n++;
    }
    if (n != 5)
        return perr(p, n > 5 ? fs[5] : s, NULL, 0, "expected 5 fields, got %d", n);
    return 0;
}

static int parse_fields(struct parser *p, const char *s, struct bv_cron *out)
{
    const char *fs[6], *fe[6];
    int rc = split_fields(p, s, fs, fe);
    for (int i = 0; rc == 0 && i < 5; i++) {
        uint64_t mask;
        p->field = i + 1;
        rc = parse_field(p, fs[i], fe[i], &mask);
        if (rc == 0)
            store_field(out, i + 1, mask);
    }
    if (rc < 0)
        return rc;
    out->flags = (*fs[2] == '*' ? BV_CRON_DOM_STAR : 0) | (*fs[4] == '*' ? BV_CRON_DOW_STAR : 0);
    if (out->flags && !days_exist(out)) {
        char months[QUOTE_MAX + 4];
        quote(months, sizeof(months), fs[3], (size_t)(fe[3] - fs[3]));
        p->field = 3;
        return perr(p, fs[2], fs[2], (size_t)(fe[2] - fs[2]),
                    "no month of field 4 ('%s') has such a day, so it never runs", months);
    }
    p->field = 0;
    return 0;
}

static int parse_macro(struct parser *p, const char *s, struct bv_cron *out)
{
    const char *e = s;
    while (*e && !is_blank(*e))
        e++;
    size_t n = (size_t)(e - s);
    const char *rest = e;
    while (is_blank(*rest))
        rest++;
    for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
        if (strlen(macros[i].name) != n || strncasecmp(s, macros[i].name, n) != 0)
            continue;
        if (*rest)
            return perr(p, rest, NULL, 0, "unexpected text after %s", macros[i].name);
        struct parser sub = { macros[i].expansion, NULL, 0 };
        return parse_fields(&sub, macros[i].expansion, out);
    }
    char q[QUOTE_MAX + 4];
    quote(q, sizeof(q), s, n);
    if (n == 7 && strncasecmp(s, "@reboot", 7) == 0)
        return perr(p, s, NULL, 0, "@reboot is not supported (a schedule needs times)");
    return perr(p, s, NULL, 0, "unknown macro '%s' (expected @hourly, @daily, @midnight, "
                               "@weekly, @monthly, @yearly or @annually)", q);
}

int bv_cron_parse(const char *expr, struct bv_cron *out, struct bv_cron_error *err)
{
    struct parser p = { expr, err, 0 };
    const char *s = expr;
    int rc;
    memset(out, 0, sizeof(*out));
    if (err)
        memset(err, 0, sizeof(*err));
    if (strnlen(expr, BV_CRON_EXPR_MAX + 1) > BV_CRON_EXPR_MAX)
        return perr(&p, expr + BV_CRON_EXPR_MAX, NULL, 0, "expression longer than %d bytes",
                    BV_CRON_EXPR_MAX);
    while (is_blank(*s))
        s++;
    rc = *s == '@' ? parse_macro(&p, s, out) : parse_fields(&p, s, out);
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- search ----------------------------------------------------------------- */

static int next_bit(uint64_t mask, int from, int max)
{
    for (int i = from; i <= max; i++)
        if (mask >> i & 1)
            return i;
    return -1;
}

static bool day_matches(const struct bv_cron *c, int mday, int wday)
{
    bool dom = c->mdays >> mday & 1, dow = c->wdays >> wday & 1;
    if (c->flags & (BV_CRON_DOM_STAR | BV_CRON_DOW_STAR))
        return dom && dow;
    return dom || dow;
}

/* Within day `days` (local), the first matching time of day >= hour:min,
 * in seconds, or -1. */
static int64_t time_in_day(const struct bv_cron *c, int hour, int min)
{
    int h = next_bit(c->hours, hour, 23), m = -1;
    if (h == hour)
        m = next_bit(c->minutes, min, 59);
    if (h >= 0 && m < 0) {
        h = h == hour ? next_bit(c->hours, hour + 1, 23) : h;
        m = next_bit(c->minutes, 0, 59);
    }
    return h < 0 || m < 0 ? -1 : (int64_t)h * 3600 + m * 60;
}

/* The first matching local minute >= local (a multiple of 60). */
static int next_local(const struct bv_cron *c, int64_t local, int64_t *out)
{
    int64_t days = cal_floordiv(local, CAL_DAY), y;
    int64_t sod = local - days * CAL_DAY, limit = days + SCAN_DAYS;
    int hour = (int)(sod / 3600), min = (int)(sod / 60 % 60), m, d;
    cal_civil_from_days(days, &y, &m, &d);
    while (days <= limit) {
        int mdays = cal_month_days(y, m);
        if (!(c->months >> m & 1)) {
            days += mdays - d + 1;
            d = mdays;                         /* the step below rolls the month */
        } else if (day_matches(c, d, cal_weekday(days))) {
            int64_t t = time_in_day(c, hour, min);
            if (t >= 0) {
                *out = days * CAL_DAY + t;
                return 0;
            }
            days++;
        } else {
            days++;
        }
        hour = min = 0;
        if (++d > mdays) {
            d = 1;
            if (++m > 12) {
                m = 1;
                y++;
            }
        }
    }
    return -ENOENT;
}

int bv_cron_next(const struct bv_cron *c, const struct bv_tz *tz, time_t after, time_t *out)
{
    struct tm lt;
    int rc = bv_tz_localtime(tz, after, &lt);
    if (rc < 0)
        return rc;
    if (!c->minutes || !c->hours || !c->mdays || !c->months || !c->wdays)
        return -ENOENT;
    int64_t local = (cal_floordiv((int64_t)after + lt.tm_gmtoff, 60) + 1) * 60;
    for (int pass = 0; pass < MAX_PASSES; pass++) {
        int64_t cand;
        time_t t;
        if ((rc = next_local(c, local, &cand)) < 0 ||
            (rc = bv_tz_from_local(tz, cand, &t, NULL)) < 0)
            return rc;
        if (t > after) {
            *out = t;
            return 0;
        }
        local = cand + 60;
    }
    return -EIO;
}
