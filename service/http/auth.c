/*
 * Token comparison that takes the same time whatever prefix matches, so the
 * token cannot be guessed byte by byte from response times.  An empty
 * configured token matches nothing: configuration refuses one, and this is
 * the second line, so "Authorization: Bearer " can never pass.
 *
 * A presented secret that is not the configured token is looked up among
 * the scoped tokens (runtime/tokens.c), which hashes it and compares with
 * every stored hash the same way.
 */
#include <string.h>
#include <strings.h>

#include "app.h"
#include "http/auth.h"
#include "runtime/tokens.h"

bool bv_auth_ok(const char *token, const char *header)
{
    if (!token)
        return true;
    if (!token[0] || !header || strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    const char *given = header + 7;
    while (*given == ' ')
        given++;
    return given[0] && bv_tokens_equal(given, token);
}

static const char *bearer(const char *header)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return NULL;
    const char *given = header + 7;
    while (*given == ' ')
        given++;
    return given[0] ? given : NULL;
}

enum bv_auth_result bv_auth_check(struct bv_app *app, const char *header, enum bv_role *role)
{
    *role = BV_ROLE_ADMIN;
    if (!app->cfg.token)
        return BV_AUTH_PASS;
    if (bv_auth_ok(app->cfg.token, header))
        return BV_AUTH_PASS;
    const char *given = bearer(header);
    if (!given)
        return BV_AUTH_MISSING;
    switch (bv_tokens_check(app, given, role)) {
    case BV_TOKEN_OK:
        return BV_AUTH_PASS;
    case BV_TOKEN_EXPIRED:
        return BV_AUTH_EXPIRED;
    default:
        return BV_AUTH_MISSING;
    }
}
