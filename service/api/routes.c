/*
 * The route table.  Order matters only where patterns overlap: literal
 * routes come before the static catch-all at the end.
 */
#include "api/api.h"
#include "http/router.h"

const struct bv_route bv_routes[] = {
    { "GET", "/api/v1/health", api_health, 0 },
    { "GET", "/api/v1/events", api_events_list, 0 },
    { "GET", "/metrics", api_metrics, 0 },
    /* the web UI: everything else that is not under /api */
    { "GET", "/", api_static, BV_ROUTE_PUBLIC },
    { "GET", "/{*path}", api_static, BV_ROUTE_PUBLIC },
};
const size_t bv_nroutes = sizeof(bv_routes) / sizeof(bv_routes[0]);
