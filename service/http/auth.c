/*
 * Token comparison that takes the same time whatever prefix matches, so the
 * token cannot be guessed byte by byte from response times.  An empty
 * configured token matches nothing: configuration refuses one, and this is
 * the second line, so "Authorization: Bearer " can never pass.
 */
#include <string.h>
#include <strings.h>

#include "http/auth.h"

static bool equal_ct(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)((i < la ? a[i] : 0) ^ b[i]);
    return diff == 0;
}

bool bv_auth_ok(const char *token, const char *header)
{
    if (!token)
        return true;
    if (!token[0] || !header || strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    const char *given = header + 7;
    while (*given == ' ')
        given++;
    return given[0] && equal_ct(given, token);
}
