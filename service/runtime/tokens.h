/*
 * Scoped API tokens (issue 17): made, listed, deleted, and checked on every
 * authenticated request.  A secret is "bvt_" and 64 hex digits from the key
 * generator, handed out once; the catalog keeps only its SHA-256, and a
 * presented secret is hashed and compared with every stored hash in constant
 * time (no early exit, no lookup by hash), so neither the secret nor which
 * token matched leaks through timing.  The configured token
 * (--token-file/BLOCKVAULT_TOKEN) is the admin token and is not stored.
 */
#ifndef BV_RUNTIME_TOKENS_H
#define BV_RUNTIME_TOKENS_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/error.h"
#include "model/roles.h"

struct bv_app;

#define BV_TOKEN_NAME_MAX 64
#define BV_TOKEN_SECRET_SIZE (4 + 64 + 1)      /* "bvt_" + hex + NUL */
#define BV_TOKENS_MAX 1000                      /* the catalog holds at most this many */

struct bv_token_spec {
    const char *name;              /* [A-Za-z0-9._-], 1..BV_TOKEN_NAME_MAX */
    enum bv_role role;             /* reader, operator or admin */
    const char *expires_at;        /* RFC 3339 (Z or ±HH:MM), NULL: never; in the future */
};

/* Make a token; secret gets its only copy.  EINVAL: bad name or time;
 * EEXIST: the name is taken; E2BIG: BV_TOKENS_MAX reached.  *created_ms and
 * *expires_ms (0: never) say what was stored. */
int bv_tokens_create(struct bv_app *app, const struct bv_token_spec *s,
                     char secret[BV_TOKEN_SECRET_SIZE], int64_t *expires_ms, bv_error **errp);
/* ENOENT: no such token. */
int bv_tokens_delete(struct bv_app *app, const char *name, bv_error **errp);

/* a == b (NUL-terminated secrets or hashes), in time that depends on b's
 * length only: the one comparison of secrets, for scoped tokens and for the
 * configured admin token (http/auth.c). */
bool bv_tokens_equal(const char *a, const char *b);

enum bv_token_check { BV_TOKEN_OK, BV_TOKEN_UNKNOWN, BV_TOKEN_EXPIRED };
/* Which role does secret carry (by the service's clock)? */
enum bv_token_check bv_tokens_check(struct bv_app *app, const char *secret, enum bv_role *role);

/* RFC 3339 text to unix ms; -1 when it is not one. */
int64_t bv_tokens_parse_time(const char *s);

#endif
