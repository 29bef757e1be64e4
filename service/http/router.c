/*
 * Route matching over the const table.  Linear scan: the table is small
 * (tens of routes) and matching is a few string compares per route.
 * Captures are copied into a scratch buffer owned by the connection, so
 * req->params stay valid for the handler's lifetime.  The query's names are
 * checked against the route's list once the route is known (router.h).
 */
#include <stdio.h>
#include <string.h>

#include <microhttpd.h>

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

/* "after, wait, name, limit" (or "none") for an error text. */
static void list_names(const char *const *names, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (unsigned i = 0; names && names[i] && used < len; i++) {
        int n = snprintf(out + used, len - used, "%s%s", i ? ", " : "", names[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (!out[0])
        snprintf(out, len, "none");
}

bool bv_route_query_arg(const struct bv_route *route, const char *key, const char *value,
                        uint32_t *seen, char *msg, size_t msg_len)
{
    unsigned i = 0;
    const char *const *names = route->query;
    if (!key[0]) {
        snprintf(msg, msg_len, "the query contains a parameter without a name ('&&' or '&=')");
        return false;
    }
    while (names && names[i] && i < BV_MAX_ROUTE_QUERY && strcmp(names[i], key) != 0)
        i++;
    if (!names || !names[i] || i == BV_MAX_ROUTE_QUERY) {
        char takes[256];
        list_names(names, takes, sizeof(takes));
        snprintf(msg, msg_len, "query parameter '%s' is unexpected (this call takes: %s)", key,
                 takes);
        return false;
    }
    if (*seen & (UINT32_C(1) << i)) {
        snprintf(msg, msg_len, "query parameter '%s' is given more than once", key);
        return false;
    }
    if (!value) {
        snprintf(msg, msg_len, "query parameter '%s' needs a value ('%s=...')", key, key);
        return false;
    }
    *seen |= UINT32_C(1) << i;
    return true;
}

struct query_walk {
    const struct bv_route *route;
    uint32_t seen;
    bool bad;
    char msg[400];
};

static enum MHD_Result query_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    struct query_walk *w = cls;
    (void)kind; (void)key_size; (void)value_size;
    w->bad = !bv_route_query_arg(w->route, key, value, &w->seen, w->msg, sizeof(w->msg));
    return w->bad ? MHD_NO : MHD_YES;
}

bool bv_route_query_ok(const struct bv_route *route, const struct bv_request *req,
                       struct bv_reply *rep)
{
    struct query_walk w = { .route = route };
    if (route->flags & BV_ROUTE_ANY_QUERY)
        return true;
    MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND, query_one, &w);
    if (w.bad)
        bv_reply_error(rep, 400, NULL, "%s", w.msg);
    return !w.bad;
}

enum bv_role bv_route_role(const struct bv_route *route)
{
    if (route->role != BV_ROLE_DEFAULT)
        return route->role;
    return strcmp(route->method, "GET") == 0 ? BV_ROLE_READER : BV_ROLE_ADMIN;
}
