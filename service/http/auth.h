/* Bearer-token check in constant time. */
#ifndef BV_HTTP_AUTH_H
#define BV_HTTP_AUTH_H

#include <stdbool.h>

/* true if header (the Authorization value, may be NULL) carries token.  No
 * token (NULL): everything passes; an empty token: nothing does. */
bool bv_auth_ok(const char *token, const char *header);

#endif
