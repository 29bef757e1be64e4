/*
 * Route matching over the const table.  Linear scan: the table is small
 * (tens of routes) and matching is a few string compares per route.
 * Captures are copied into a scratch buffer owned by the connection, so
 * req->params stay valid for the handler's lifetime.
 */
#include <string.h>

#include "http/router.h"

/* Match one pattern; returns true and fills params. */
static bool match(const char *pat, const char *path, struct bv_request *req,
                  char *scratch, size_t scratch_len)
{
    size_t used = 0;
    req->nparams = 0;
    while (*pat && *path) {
        if (*pat != '/' || *path != '/')
            return false;
        pat++;
        path++;
        const char *pend = strchr(pat, '/');
        size_t plen = pend ? (size_t)(pend - pat) : strlen(pat);
        bool rest = plen > 3 && pat[0] == '{' && pat[1] == '*';
        const char *send = rest ? path + strlen(path) : strchr(path, '/');
        size_t slen = send ? (size_t)(send - path) : strlen(path);
        if (plen >= 2 && pat[0] == '{') {
            if (slen == 0 || req->nparams >= BV_MAX_ROUTE_PARAMS || used + slen + 1 > scratch_len)
                return false;
            memcpy(scratch + used, path, slen);
            scratch[used + slen] = '\0';
            req->params[req->nparams++] = scratch + used;
            used += slen + 1;
        } else if (plen != slen || memcmp(pat, path, plen) != 0) {
            return false;
        }
        pat += plen;
        path += slen;
    }
    return *pat == '\0' && *path == '\0';
}

enum bv_route_match bv_route_find(const struct bv_route *table, size_t n, const char *method,
                                  const char *path, struct bv_request *req,
                                  const struct bv_route **out, char *scratch, size_t scratch_len)
{
    enum bv_route_match res = BV_ROUTE_NO_PATH;
    for (size_t i = 0; i < n; i++) {
        if (!match(table[i].pattern, path, req, scratch, scratch_len))
            continue;
        if (strcmp(table[i].method, method) == 0) {
            *out = &table[i];
            return BV_ROUTE_FOUND;
        }
        res = BV_ROUTE_NO_METHOD;
    }
    req->nparams = 0;
    return res;
}
