/*
 * The route table: method, path pattern, handler and flags, as data.
 * Patterns are literal segments, "{name}" (one segment) or "{*name}" (the
 * rest of the path, slashes included; last only).  Captures land in
 * req->params in pattern order.
 */
#ifndef BV_HTTP_ROUTER_H
#define BV_HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "http/reply.h"

typedef void (*bv_handler)(struct bv_request *req, struct bv_reply *rep);

enum {
    BV_ROUTE_PUBLIC = 1 << 0,      /* no token needed (health of the UI shell, /metrics) */
    BV_ROUTE_BINARY = 1 << 1,      /* body is octet-stream, large limit */
};

struct bv_route {
    const char *method;
    const char *pattern;
    bv_handler handler;
    unsigned flags;
};

enum bv_route_match { BV_ROUTE_FOUND, BV_ROUTE_NO_PATH, BV_ROUTE_NO_METHOD };

/* Find the route for method+path in table[n]; fills req->params.  path
 * segments are limited to BV_MAX_ROUTE_PARAMS captures. */
enum bv_route_match bv_route_find(const struct bv_route *table, size_t n, const char *method,
                                  const char *path, struct bv_request *req,
                                  const struct bv_route **out, char *scratch, size_t scratch_len);

/* The service's table (api/routes.c). */
extern const struct bv_route bv_routes[];
extern const size_t bv_nroutes;

#endif
