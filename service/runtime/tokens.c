/* Scoped API tokens: see tokens.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "app.h"
#include "bvdb/tokens.h"
#include "log.h"
#include "runtime/tokens.h"

bool bv_tokens_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)((i < la ? a[i] : 0) ^ b[i]);
    return diff == 0;
}

#define HASH_HEX (32 * 2 + 1)

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int hash_secret(const char *secret, char out[HASH_HEX])
{
    unsigned char d[32];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, secret, strlen(secret), d) < 0)
        return -EIO;
    hex(d, sizeof(d), out);
    return 0;
}

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > BV_TOKEN_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* "YYYY-MM-DDTHH:MM:SS", optional ".fraction", then "Z" or "±HH:MM". */
int64_t bv_tokens_parse_time(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!p)
        return -1;
    int64_t ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
               p[2] <= '9' && p[3] == ':' && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' &&
               p[5] <= '9') {
        off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
        if (*p == '-')
            off = -off;
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    time_t t = timegm(&tm);
    return t < 0 ? -1 : ((int64_t)t - off) * 1000 + ms;
}

static int count_cb(const struct bvdb_token *t, void *opaque)
{
    (void)t; (void)opaque;
    return 0;
}

static int make_secret(char secret[BV_TOKEN_SECRET_SIZE])
{
    unsigned char raw[32];
    if (gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof(raw)) < 0)
        return -EIO;
    memcpy(secret, "bvt_", 4);
    hex(raw, sizeof(raw), secret + 4);
    explicit_bzero(raw, sizeof(raw));
    return 0;
}

static int check_spec(struct bv_app *app, const struct bv_token_spec *s, int64_t *expires_ms,
                      bv_error **errp)
{
    if (!name_ok(s->name))
        return bv_error_setf(errp, EINVAL, "name: '%s' is not a valid token name (1 to %d of "
                             "A-Z a-z 0-9 . _ -)", s->name, BV_TOKEN_NAME_MAX);
    if (s->role < BV_ROLE_READER || s->role > BV_ROLE_ADMIN)
        return bv_error_setf(errp, EINVAL, "role: must be admin, operator or reader");
    *expires_ms = 0;
    if (!s->expires_at)
        return 0;
    *expires_ms = bv_tokens_parse_time(s->expires_at);
    if (*expires_ms < 0)
        return bv_error_setf(errp, EINVAL, "expires_at: '%s' is not an RFC 3339 time "
                             "(e.g. 2030-01-31T12:00:00Z)", s->expires_at);
    if (*expires_ms <= bv_app_now_ms(app))
        return bv_error_setf(errp, EINVAL, "expires_at: '%s' is not in the future",
                             s->expires_at);
    return 0;
}

int bv_tokens_create(struct bv_app *app, const struct bv_token_spec *s,
                     char secret[BV_TOKEN_SECRET_SIZE], int64_t *expires_ms, bv_error **errp)
{
    char hash[HASH_HEX], now[32];
    int r = check_spec(app, s, expires_ms, errp);
    if (r < 0)
        return r;
    int n = bvdb_token_list(app->db, count_cb, NULL);
    if (n < 0)
        return bv_error_setf(errp, -n, "cannot read tokens from the catalog");
    if (n >= BV_TOKENS_MAX)
        return bv_error_setf(errp, E2BIG, "at most %d tokens; delete one first", BV_TOKENS_MAX);
    if (make_secret(secret) < 0 || hash_secret(secret, hash) < 0)
        return bv_error_setf(errp, EIO, "cannot make a token secret");
    bv_app_now_str(app, now);
    struct bvdb_token t = { .name = s->name, .role = bv_role_name(s->role), .hash = hash,
                            .created_at = now, .expires_at = s->expires_at,
                            .expires_ms = *expires_ms };
    r = bvdb_token_insert(app->db, &t);
    if (r == -EEXIST)
        r = bv_error_setf(errp, EEXIST, "a token named '%s' already exists", s->name);
    else if (r < 0)
        r = bv_error_setf(errp, -r, "cannot store the token in the catalog");
    if (r < 0)
        explicit_bzero(secret, BV_TOKEN_SECRET_SIZE);
    return r;
}

int bv_tokens_delete(struct bv_app *app, const char *name, bv_error **errp)
{
    int r = bvdb_token_delete(app->db, name);
    if (r == -ENOENT)
        return bv_error_setf(errp, ENOENT, "Token '%s' not found", name);
    if (r < 0)
        return bv_error_setf(errp, -r, "cannot delete the token from the catalog");
    return 0;
}

struct check {
    const char *hash;
    bool found;
    enum bv_role role;
    int64_t expires_ms;
};

/* Every row is compared, whatever matched before. */
static int check_row(const struct bvdb_token *t, void *opaque)
{
    struct check *c = opaque;
    bool eq = bv_tokens_equal(c->hash, t->hash ? t->hash : "");
    if (eq && !c->found) {
        c->found = true;
        c->role = bv_role_parse(t->role);
        c->expires_ms = t->expires_ms;
    }
    return 0;
}

enum bv_token_check bv_tokens_check(struct bv_app *app, const char *secret, enum bv_role *role)
{
    char hash[HASH_HEX];
    struct check c = { .hash = hash };
    if (strncmp(secret, "bvt_", 4) != 0 || hash_secret(secret, hash) < 0)
        return BV_TOKEN_UNKNOWN;
    if (bvdb_token_list(app->db, check_row, &c) < 0) {
        log_error("cannot read tokens from the catalog; the request is refused");
        return BV_TOKEN_UNKNOWN;
    }
    if (!c.found || c.role == BV_ROLE_DEFAULT)
        return BV_TOKEN_UNKNOWN;
    if (c.expires_ms > 0 && bv_app_now_ms(app) >= c.expires_ms)
        return BV_TOKEN_EXPIRED;
    *role = c.role;
    return BV_TOKEN_OK;
}
