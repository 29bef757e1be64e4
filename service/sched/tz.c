/*
 * A small TZif reader (RFC 8536) and POSIX TZ rule evaluator: see sched/tz.h.
 *
 * Layout of a TZif file: a 44-byte header (magic "TZif", version, six
 * big-endian counts), a data block with 32-bit transition times, and for
 * version 2 and later a second header, a data block with 64-bit times and a
 * footer "\nTZ-string\n".  We use the 64-bit block when there is one (the
 * 32-bit block is skipped after its counts are checked) and the 32-bit one
 * of a version-1 file otherwise.
 *
 * A zone in memory is: types (UT offset, is-DST), ascending transition
 * instants each naming the type in force from it on, type 0 before the
 * first transition, and after the last one (or always, with no transitions)
 * the footer's rule when it has one.  Two queries drive everything:
 * state_at(t), the type in force at t (binary search, or the rule's
 * transitions for t's year and its neighbours), and next_change(t), the
 * first transition after t.  Local → UTC walks the intervals between
 * transitions inside a window of ±26 h around the local time (no offset
 * reaches 26 h: RFC 8536 bounds them, we refuse any that does), which finds
 * every instant showing that local time, or the gap it falls into.
 *
 * Costs: a load reads one file of at most BV_TZ_FILE_MAX bytes; a query is
 * O(log transitions) plus a few rule evaluations.  Nothing is global.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sched/calendar.h"
#include "sched/tz.h"

_Static_assert(sizeof(time_t) == 8, "64-bit time_t required");

#define TZ_MAX_TYPES 256
#define TZ_MAX_TRANS 8192
#define TZ_MAX_CHARS 4096
#define TZ_MAX_FOOTER 128
#define TZ_UTOFF_MIN (-89999)       /* RFC 8536: more than -25 h */
#define TZ_UTOFF_MAX 93599          /* … and less than 26 h */
#define TZ_WINDOW (26 * 3600)       /* > |any offset|: see from_local */
#define TZ_WINDOW_STEPS 64          /* transitions walked in one window, at most */

/* Instants accepted: 0001-01-01T00:00:00 .. 9999-12-31T23:59:59 (UTC or local). */
#define TZ_T_MIN (-62135596800LL)
#define TZ_T_MAX 253402300799LL

struct tzif_header {
    char magic[4];
    char version;
    char reserved[15];
    uint8_t isutcnt[4], isstdcnt[4], leapcnt[4], timecnt[4], typecnt[4], charcnt[4];
} __attribute__((packed));
_Static_assert(sizeof(struct tzif_header) == 44, "TZif header is 44 bytes");

struct tz_state {
    int32_t utoff;               /* seconds east of UTC */
    bool isdst;
};

/* One end of a DST period in a POSIX TZ rule. */
struct tz_rule_date {
    char kind;                   /* 'J': Jn (1-365, no Feb 29), 'D': n (0-365), 'M': Mm.w.d */
    int n, m, w, d;
    int32_t secs;                /* local time of day, -167 h .. 167 h */
};

struct tz_rule {
    struct tz_state std, dst;
    bool has_dst;
    struct tz_rule_date start;   /* std → dst, in standard local time */
    struct tz_rule_date end;     /* dst → std, in daylight local time */
};

struct bv_tz {
    char name[BV_TZ_NAME_MAX + 1];
    uint32_t ntypes;
    struct tz_state types[TZ_MAX_TYPES];
    uint32_t ntrans;
    int64_t *trans;              /* ntrans, strictly ascending */
    uint8_t *trans_type;         /* ntrans, each < ntypes */
    bool has_rule;               /* footer rule governs t >= last transition */
    struct tz_rule rule;
};

struct tz_change {
    int64_t at;
    struct tz_state to;
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- POSIX TZ rule (the footer) ---------------------------------------- */

static bool p_number(const char **s, int max, int *out)
{
    const char *p = *s;
    int v = 0;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        if (v > max)
            return false;
    }
    *s = p;
    *out = v;
    return true;
}

/* [+-]hh[:mm[:ss]] with hh <= maxh; returns seconds (sign applied). */
static bool p_hms(const char **s, int maxh, int32_t *out)
{
    int sign = 1, h, m = 0, sec = 0;
    if (**s == '+' || **s == '-')
        sign = *(*s)++ == '-' ? -1 : 1;
    if (!p_number(s, maxh, &h))
        return false;
    if (**s == ':') {
        (*s)++;
        if (!p_number(s, 59, &m))
            return false;
        if (**s == ':') {
            (*s)++;
            if (!p_number(s, 59, &sec))
                return false;
        }
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    return true;
}

static bool p_name(const char **s)
{
    const char *p = *s;
    size_t n = 0;
    if (*p == '<') {
        for (p++; (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= '0' && *p <= '9') || *p == '+' || *p == '-'; p++)
            n++;
        if (*p++ != '>')
            return false;
    } else {
        for (; (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'); p++)
            n++;
    }
    *s = p;
    return n >= 3;
}

static bool p_date(const char **s, struct tz_rule_date *d)
{
    d->secs = 7200;
    if (**s == 'J') {
        (*s)++;
        d->kind = 'J';
        if (!p_number(s, 365, &d->n) || d->n < 1)
            return false;
    } else if (**s == 'M') {
        (*s)++;
        d->kind = 'M';
        if (!p_number(s, 12, &d->m) || d->m < 1 || *(*s)++ != '.' ||
            !p_number(s, 5, &d->w) || d->w < 1 || *(*s)++ != '.' || !p_number(s, 6, &d->d))
            return false;
    } else {
        d->kind = 'D';
        if (!p_number(s, 365, &d->n))
            return false;
    }
    if (**s == '/') {
        (*s)++;
        return p_hms(s, 167, &d->secs);
    }
    return true;
}

/* The footer "std offset [dst [offset] ,start[/time],end[/time]]".  POSIX
 * offsets count west of UTC; ours count east. */
static bool parse_rule(const char *s, struct tz_rule *r)
{
    int32_t off;
    memset(r, 0, sizeof(*r));
    if (!p_name(&s) || !p_hms(&s, 24, &off))
        return false;
    r->std.utoff = -off;
    if (*s == '\0')
        return true;
    if (!p_name(&s))
        return false;
    r->has_dst = true;
    r->dst.isdst = true;
    r->dst.utoff = r->std.utoff + 3600;
    if (*s != ',') {
        if (!p_hms(&s, 24, &off))
            return false;
        r->dst.utoff = -off;
    }
    /* a DST zone without its rule would mean "the system default rule" */
    if (*s++ != ',' || !p_date(&s, &r->start) || *s++ != ',' || !p_date(&s, &r->end))
        return false;
    return *s == '\0';
}

static int64_t rule_day(const struct tz_rule_date *d, int64_t y)
{
    int64_t jan1 = cal_days_from_civil(y, 1, 1);
    if (d->kind == 'J')
        return jan1 + d->n - 1 + (cal_is_leap(y) && d->n >= 60);
    if (d->kind == 'D')
        return jan1 + d->n;
    int64_t first = cal_days_from_civil(y, d->m, 1);
    int64_t day = first + (d->d - cal_weekday(first) + 7) % 7 + (int64_t)(d->w - 1) * 7;
    while (day >= first + cal_month_days(y, d->m))
        day -= 7;
    return day;
}

/* The two changes of year y, in order of instant; at a tie the change to
 * standard time sorts first, so a rule meaning "DST all year" stays DST. */
static void rule_changes(const struct tz_rule *r, int64_t y, struct tz_change out[2])
{
    struct tz_change a = {
        .at = rule_day(&r->start, y) * CAL_DAY + r->start.secs - r->std.utoff, .to = r->dst
    };
    struct tz_change b = {
        .at = rule_day(&r->end, y) * CAL_DAY + r->end.secs - r->dst.utoff, .to = r->std
    };
    bool swap = b.at < a.at || (b.at == a.at && !b.to.isdst);
    out[0] = swap ? b : a;
    out[1] = swap ? a : b;
}

static int64_t year_of(int64_t t)
{
    int64_t y;
    int m, d;
    cal_civil_from_days(cal_floordiv(t, CAL_DAY), &y, &m, &d);
    return y;
}

/* Changes of years y-1 .. y+2 (changes may cross a year end by a week). */
static void rule_window(const struct tz_rule *r, int64_t t, struct tz_change out[8])
{
    int64_t y = year_of(t);
    for (int i = 0; i < 4; i++)
        rule_changes(r, y - 1 + i, &out[2 * i]);
}

static struct tz_state rule_state_at(const struct tz_rule *r, int64_t t)
{
    if (!r->has_dst)
        return r->std;
    struct tz_change ch[8];
    rule_window(r, t, ch);
    struct tz_state st = ch[0].to.isdst ? r->std : r->dst;
    for (int i = 0; i < 8 && ch[i].at <= t; i++)
        st = ch[i].to;
    return st;
}

static int64_t rule_next_change(const struct tz_rule *r, int64_t t)
{
    if (!r->has_dst)
        return INT64_MAX;
    struct tz_change ch[8];
    rule_window(r, t, ch);
    for (int i = 0; i < 8; i++)
        if (ch[i].at > t)
            return ch[i].at;
    return INT64_MAX;
}

/* ---- queries ------------------------------------------------------------ */

static const struct bv_tz utc_zone = { .name = "UTC", .ntypes = 1 };

/* Index of the last transition <= t, or -1. */
static int64_t trans_index(const struct bv_tz *tz, int64_t t)
{
    int64_t lo = 0, hi = tz->ntrans;       /* answer in [lo-1, hi-1] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1;
}

static struct tz_state state_at(const struct bv_tz *tz, int64_t t)
{
    if (tz->ntrans == 0)
        return tz->has_rule ? rule_state_at(&tz->rule, t) : tz->types[0];
    int64_t i = trans_index(tz, t);
    if (i < 0)
        return tz->types[0];
    if (i == (int64_t)tz->ntrans - 1 && tz->has_rule)
        return rule_state_at(&tz->rule, t);
    return tz->types[tz->trans_type[i]];
}

static int64_t next_change(const struct bv_tz *tz, int64_t t)
{
    if (tz->ntrans > 0 && t < tz->trans[tz->ntrans - 1])
        return tz->trans[trans_index(tz, t) + 1];
    return tz->has_rule ? rule_next_change(&tz->rule, t) : INT64_MAX;
}

const char *bv_tz_name(const struct bv_tz *tz)
{
    return tz ? tz->name : utc_zone.name;
}

int bv_tz_localtime(const struct bv_tz *tz, time_t t, struct tm *out)
{
    if (t < TZ_T_MIN || t > TZ_T_MAX)
        return -ERANGE;
    struct tz_state st = state_at(tz ? tz : &utc_zone, t);
    int64_t local = (int64_t)t + st.utoff, y;
    int64_t days = cal_floordiv(local, CAL_DAY), secs = local - days * CAL_DAY;
    int m, d;
    cal_civil_from_days(days, &y, &m, &d);
    memset(out, 0, sizeof(*out));
    out->tm_year = (int)(y - 1900);
    out->tm_mon = m - 1;
    out->tm_mday = d;
    out->tm_hour = (int)(secs / 3600);
    out->tm_min = (int)(secs / 60 % 60);
    out->tm_sec = (int)(secs % 60);
    out->tm_wday = cal_weekday(days);
    out->tm_yday = (int)(days - cal_days_from_civil(y, 1, 1));
    out->tm_isdst = st.isdst;
    out->tm_gmtoff = st.utoff;
    out->tm_zone = NULL;
    return 0;
}

/* Walk the constant-offset intervals [s, e) of [L - W, L + W]: interval
 * [s, e) with offset o shows local times [s + o, e + o), so it holds the
 * instant L - o iff s <= L - o < e; a change at e from o to o2 > o skips
 * local times [e + o, e + o2). */
int bv_tz_from_local(const struct bv_tz *tz, int64_t local, time_t *out,
                     enum bv_tz_local_kind *kind)
{
    if (local < TZ_T_MIN || local > TZ_T_MAX)
        return -ERANGE;
    if (!tz)
        tz = &utc_zone;
    int64_t s = local - TZ_WINDOW, hi = local + TZ_WINDOW, first = 0;
    struct tz_state st = state_at(tz, s);
    int found = 0;
    for (int step = 0; step < TZ_WINDOW_STEPS; step++) {
        int64_t e = next_change(tz, s);
        int64_t t = local - st.utoff;
        if (t >= s && t < e && t <= hi && found++ == 0)
            first = t;
        if (e > hi)
            break;
        struct tz_state st2 = state_at(tz, e);
        if (!found && local >= e + st.utoff && local < e + st2.utoff) {
            *out = (time_t)e;
            if (kind)
                *kind = BV_TZ_LOCAL_SKIPPED;
            return 0;
        }
        s = e;
        st = st2;
    }
    if (!found)
        return -EIO;
    *out = (time_t)first;
    if (kind)
        *kind = found > 1 ? BV_TZ_LOCAL_REPEATED : BV_TZ_LOCAL_UNIQUE;
    return 0;
}

/* ---- TZif parsing --------------------------------------------------------- */

struct cursor {
    const uint8_t *p;
    size_t left;
};

struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chars;
};

static const uint8_t *take(struct cursor *c, size_t n)
{
    if (c->left < n)
        return NULL;
    const uint8_t *p = c->p;
    c->p += n;
    c->left -= n;
    return p;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64s(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static int parse_header(struct cursor *c, struct tzif_counts *n, char *version,
                        char *err, size_t errlen)
{
    const struct tzif_header *h = (const struct tzif_header *)take(c, sizeof(*h));
    if (!h || memcmp(h->magic, "TZif", 4) != 0)
        return fail(err, errlen, -EINVAL, "not a TZif file (bad magic or too short)");
    if (h->version != 0 && (h->version < '2' || h->version > '4'))
        return fail(err, errlen, -EINVAL, "unsupported TZif version 0x%02x",
                    (unsigned char)h->version);
    *version = h->version;
    *n = (struct tzif_counts){ be32(h->isutcnt), be32(h->isstdcnt), be32(h->leapcnt),
                               be32(h->timecnt), be32(h->typecnt), be32(h->charcnt) };
    if (n->type == 0 || n->type > TZ_MAX_TYPES || n->chars == 0 || n->chars > TZ_MAX_CHARS ||
        n->time > TZ_MAX_TRANS || n->leap > TZ_MAX_TRANS ||
        (n->isut != 0 && n->isut != n->type) || (n->isstd != 0 && n->isstd != n->type))
        return fail(err, errlen, -EINVAL,
                    "TZif counts out of bounds (types %u, transitions %u, chars %u)",
                    n->type, n->time, n->chars);
    return 0;
}

static size_t block_size(const struct tzif_counts *n, size_t tsize)
{
    /* every count is bounded by parse_header: no overflow */
    return n->time * tsize + n->time + n->type * 6 + n->chars + n->leap * (tsize + 4) +
           n->isstd + n->isut;
}

static int parse_types(struct cursor *c, const struct tzif_counts *n, struct bv_tz *tz,
                       char *err, size_t errlen)
{
    const uint8_t *p = take(c, (size_t)n->type * 6);
    tz->ntypes = n->type;
    for (uint32_t i = 0; i < n->type; i++, p += 6) {
        int32_t off = (int32_t)be32(p);
        if (off < TZ_UTOFF_MIN || off > TZ_UTOFF_MAX || p[4] > 1 || p[5] >= n->chars)
            return fail(err, errlen, -EINVAL, "TZif time type %u invalid (offset %d s)", i,
                        (int)off);
        tz->types[i] = (struct tz_state){ .utoff = off, .isdst = p[4] };
    }
    return 0;
}

/* The data block whose counts are n, times tsize (4 or 8) bytes wide. */
static int parse_block(struct cursor *c, const struct tzif_counts *n, size_t tsize,
                       struct bv_tz *tz, char *err, size_t errlen)
{
    if (c->left < block_size(n, tsize))
        return fail(err, errlen, -EINVAL, "TZif data truncated");
    if (n->leap)
        return fail(err, errlen, -EINVAL,
                    "TZif file counts leap seconds (a \"right/\" zone): not POSIX time");
    tz->ntrans = n->time;
    tz->trans = calloc(n->time ? n->time : 1, sizeof(*tz->trans));
    tz->trans_type = calloc(n->time ? n->time : 1, 1);
    if (!tz->trans || !tz->trans_type)
        return fail(err, errlen, -ENOMEM, "out of memory");
    const uint8_t *tp = take(c, n->time * tsize), *ip = take(c, n->time);
    for (uint32_t i = 0; i < n->time; i++) {
        int64_t t = tsize == 8 ? be64s(tp + 8 * i) : (int64_t)(int32_t)be32(tp + 4 * i);
        if (i > 0 && t <= tz->trans[i - 1])
            return fail(err, errlen, -EINVAL, "TZif transitions not ascending at %u", i);
        if (ip[i] >= n->type)
            return fail(err, errlen, -EINVAL, "TZif transition %u names type %u of %u", i,
                        ip[i], n->type);
        tz->trans[i] = t;
        tz->trans_type[i] = ip[i];
    }
    int rc = parse_types(c, n, tz, err, errlen);
    take(c, n->chars + n->isstd + n->isut);
    return rc;
}

static int parse_footer(struct cursor *c, struct bv_tz *tz, char *err, size_t errlen)
{
    const uint8_t *nl = take(c, 1);
    size_t len = 0;
    if (!nl || *nl != '\n')
        return fail(err, errlen, -EINVAL, "TZif footer missing");
    while (len < c->left && c->p[len] != '\n')
        len++;
    if (len >= c->left || len > TZ_MAX_FOOTER || len + 1 != c->left)
        return fail(err, errlen, -EINVAL, "TZif footer malformed");
    char text[TZ_MAX_FOOTER + 1];
    memcpy(text, c->p, len);
    text[len] = '\0';
    if (memchr(text, '\0', len))
        return fail(err, errlen, -EINVAL, "TZif footer malformed");
    tz->has_rule = len > 0;
    if (len > 0 && !parse_rule(text, &tz->rule))
        return fail(err, errlen, -EINVAL, "TZif footer rule '%.64s' not understood", text);
    return 0;
}

int bv_tz_from_tzif(const char *name, const void *buf, size_t len, struct bv_tz **out,
                    char *err, size_t errlen)
{
    struct cursor c = { buf, len };
    struct tzif_counts n;
    char version;
    int rc;
    *out = NULL;
    struct bv_tz *tz = calloc(1, sizeof(*tz));
    if (!tz)
        return fail(err, errlen, -ENOMEM, "out of memory");
    snprintf(tz->name, sizeof(tz->name), "%s", name);
    rc = parse_header(&c, &n, &version, err, errlen);
    if (rc == 0 && version != 0) {
        if (c.left < block_size(&n, 4))
            rc = fail(err, errlen, -EINVAL, "TZif data truncated");
        else {
            take(&c, block_size(&n, 4));
            rc = parse_header(&c, &n, &version, err, errlen);
        }
    }
    if (rc == 0)
        rc = parse_block(&c, &n, version ? 8 : 4, tz, err, errlen);
    if (rc == 0 && version != 0)
        rc = parse_footer(&c, tz, err, errlen);
    if (rc < 0) {
        bv_tz_free(tz);
        return rc;
    }
    *out = tz;
    return 0;
}

/* ---- loading by name ------------------------------------------------------ */

static int check_name(const char *name, char *err, size_t errlen)
{
    size_t len = strnlen(name, BV_TZ_NAME_MAX + 1);
    if (len == 0 || len > BV_TZ_NAME_MAX)
        return fail(err, errlen, -EINVAL, "time zone name must be 1 to %d characters",
                    BV_TZ_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '+' || ch == '-' || ch == '/';
        if (!ok)
            return fail(err, errlen, -EINVAL,
                        "time zone name '%s': character %zu is not one of A-Z a-z 0-9 _ + - /",
                        name, i + 1);
        if (ch == '/' && (i == 0 || i + 1 == len || name[i + 1] == '/'))
            return fail(err, errlen, -EINVAL,
                        "time zone name '%s': expected Area/City (no leading, trailing or "
                        "doubled '/')", name);
    }
    return 0;
}

static int read_zone_file(const char *name, uint8_t **buf, size_t *len, char *err,
                          size_t errlen)
{
    char path[sizeof(BV_TZ_DIR) + BV_TZ_NAME_MAX + 2];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", BV_TZ_DIR, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), rc = 0;
    if (fd < 0)
        return fail(err, errlen, errno == ENOENT || errno == ENOTDIR ? -ENOENT : -errno,
                    "unknown time zone '%s' (no %s): %s", name, path, strerror(errno));
    *buf = NULL;
    if (fstat(fd, &st) < 0)
        rc = fail(err, errlen, -errno, "time zone '%s': %s", name, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = fail(err, errlen, -EINVAL, "time zone '%s' is not a zone (%s is not a file)",
                  name, path);
    else if (st.st_size > BV_TZ_FILE_MAX)
        rc = fail(err, errlen, -EFBIG, "time zone '%s': %s is larger than %d bytes", name,
                  path, BV_TZ_FILE_MAX);
    else if (!(*buf = malloc(st.st_size ? (size_t)st.st_size : 1)))
        rc = fail(err, errlen, -ENOMEM, "out of memory");
    *len = 0;
    while (rc == 0 && *len < (size_t)st.st_size) {
        ssize_t r = read(fd, *buf + *len, (size_t)st.st_size - *len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            rc = fail(err, errlen, -EIO, "time zone '%s': cannot read %s", name, path);
        else
            *len += (size_t)r;
    }
    close(fd);
    if (rc < 0) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

int bv_tz_load(const char *name, struct bv_tz **out, char *err, size_t errlen)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = check_name(name, err, errlen);
    if (rc < 0)
        return rc;
    if (strcmp(name, "UTC") == 0) {
        struct bv_tz *tz = calloc(1, sizeof(*tz));
        if (!tz)
            return fail(err, errlen, -ENOMEM, "out of memory");
        *tz = utc_zone;
        *out = tz;
        return 0;
    }
    rc = read_zone_file(name, &buf, &len, err, errlen);
    if (rc == 0) {
        char inner[200] = "";
        rc = bv_tz_from_tzif(name, buf, len, out, inner, sizeof(inner));
        if (rc < 0)
            fail(err, errlen, rc, "time zone '%s': %s", name, inner);
    }
    free(buf);
    return rc;
}

void bv_tz_free(struct bv_tz *tz)
{
    if (!tz)
        return;
    free(tz->trans);
    free(tz->trans_type);
    free(tz);
}
