/*
 * The route table: method, path pattern, handler and flags, as data.
 * Patterns are literal segments, "{name}" (one segment) or "{*name}" (the
 * rest of the path, slashes included; last only).  Captures land in
 * req->params in pattern order.
 *
 * Each route's role is data too, checked in one place (server.c, on the
 * headers, after authentication and routing): a route that names none needs
 * admin unless it is a GET, so a new endpoint cannot forget its guard.
 */
#ifndef BV_HTTP_ROUTER_H
#define BV_HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/reply.h"
#include "model/roles.h"

typedef void (*bv_handler)(struct bv_request *req, struct bv_reply *rep);

enum {
    BV_ROUTE_PUBLIC = 1 << 0,      /* no token needed (health of the UI shell, /metrics) */
    BV_ROUTE_BINARY = 1 << 1,      /* body is octet-stream, large limit */
    BV_ROUTE_ANY_QUERY = 1 << 2,   /* query not checked (the web UI's static files) */
};

/* A route's query list: BV_QUERY("offset", "flush"). */
#define BV_QUERY(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define BV_MAX_ROUTE_QUERY 32

struct bv_route {
    const char *method;
    const char *pattern;
    bv_handler handler;
    unsigned flags;
    const char *const *query;      /* accepted query names (at most BV_MAX_ROUTE_QUERY); NULL: none */
    enum bv_role role;             /* the least role that may call it (model/roles.h);
                                      BV_ROLE_DEFAULT: reader for GET, admin otherwise */
};

/* route->role, or what its method implies when it is BV_ROLE_DEFAULT. */
enum bv_role bv_route_role(const struct bv_route *route);

enum bv_route_match { BV_ROUTE_FOUND, BV_ROUTE_NO_PATH, BV_ROUTE_NO_METHOD };

/* Find the route for method+path in table[n]; fills req->params.  path
 * segments are limited to BV_MAX_ROUTE_PARAMS captures. */
enum bv_route_match bv_route_find(const struct bv_route *table, size_t n, const char *method,
                                  const char *path, struct bv_request *req,
                                  const struct bv_route **out, char *scratch, size_t scratch_len);

/* The query of req against route->query (see above).  true: go on; false:
 * rep holds the 400. */
bool bv_route_query_ok(const struct bv_route *route, const struct bv_request *req,
                       struct bv_reply *rep);

/* One query argument against route->query; *seen holds the names already
 * given (start at 0).  false: msg says why it is refused. */
bool bv_route_query_arg(const struct bv_route *route, const char *key, const char *value,
                        uint32_t *seen, char *msg, size_t msg_len);

/* The service's table (api/routes.c). */
extern const struct bv_route bv_routes[];
extern const size_t bv_nroutes;

#endif
