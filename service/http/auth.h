/* Bearer-token checks in constant time, and who a request is (its role). */
#ifndef BV_HTTP_AUTH_H
#define BV_HTTP_AUTH_H

#include <stdbool.h>

#include "model/roles.h"

struct bv_app;

/* true if header (the Authorization value, may be NULL) carries token.  No
 * token (NULL): everything passes; an empty token: nothing does. */
bool bv_auth_ok(const char *token, const char *header);

enum bv_auth_result { BV_AUTH_PASS, BV_AUTH_MISSING, BV_AUTH_EXPIRED };
/* The role of the request with this Authorization header: admin for the
 * configured token (or for everyone when none is configured), else the
 * scoped token's role (runtime/tokens.h). */
enum bv_auth_result bv_auth_check(struct bv_app *app, const char *header, enum bv_role *role);

#endif
