/*
 * The route table.  Order matters only where patterns overlap: literal
 * routes come before captures at the same depth, and the static catch-all
 * is last.  The fifth field lists the query parameters a route takes
 * (BV_QUERY(...)); a route that leaves it out takes none (router.h).
 * .role is the least token role that may call it (model/roles.h); a route
 * that leaves it out needs reader for GET and admin for anything else.
 */
#include "api/api.h"
#include "api/notifications.h"
#include "api/catalog.h"
#include "api/remotes.h"
#include "api/storage.h"
#include "api/tokens.h"
#include "http/router.h"

#define D "/api/v1/drives/{id}"
#define B D "/bitmaps/{name}"
#define OPERATOR .role = BV_ROLE_OPERATOR

const struct bv_route bv_routes[] = {
    { "GET", "/api/v1/health", api_health, 0 },
    { "GET", "/api/v1/events", api_events_list, 0, BV_QUERY("after", "wait", "name", "limit") },
    { "GET", "/api/v1/events/stream", api_events_stream, 0, BV_QUERY("after") },
    { "GET", "/metrics", api_metrics, 0 },

    { "POST", "/api/v1/images", api_images_create, 0 },
    { "GET", "/api/v1/images", api_images_list, 0 },
    { "POST", "/api/v1/images/compare", api_images_compare, 0, OPERATOR },
    { "POST", "/api/v1/images/check", api_images_check, 0, OPERATOR },
    { "POST", "/api/v1/images/rebase", api_images_rebase, 0 },
    { "GET", "/api/v1/images/{*file}", api_images_get, 0 },
    { "DELETE", "/api/v1/images/{*file}", api_images_delete, 0 },

    { "POST", "/api/v1/drives", api_drives_create, 0 },
    { "GET", "/api/v1/drives", api_drives_list, 0 },
    { "GET", D, api_drives_get, 0 },
    { "DELETE", D, api_drives_delete, 0,
      BV_QUERY("delete_file", "force", "keep_backups", "delete_backups") },
    { "POST", D "/resize", api_drives_resize, 0 },
    { "PUT", D "/data", api_drives_data_put, BV_ROUTE_BINARY, BV_QUERY("offset", "flush") },
    { "GET", D "/data", api_drives_data_get, 0, BV_QUERY("offset", "length") },
    { "POST", D "/io", api_drives_io, 0 },
    { "GET", "/api/v1/exports", api_exports_list, 0 },

    { "GET", D "/bitmaps", api_bitmaps_list, 0 },
    { "POST", D "/bitmaps", api_bitmaps_create, 0 },
    { "GET", B, api_bitmaps_get, 0 },
    { "DELETE", B, api_bitmaps_delete, 0 },
    { "GET", B "/extents", api_bitmaps_extents, 0 },
    { "POST", B "/clear", api_bitmaps_clear, 0 },
    { "POST", B "/enable", api_bitmaps_enable, 0 },
    { "POST", B "/disable", api_bitmaps_disable, 0 },
    { "POST", B "/merge", api_bitmaps_merge, 0 },

    { "POST", D "/backups", api_backups_create, 0, OPERATOR },
    { "GET", D "/backups", api_backups_list, 0 },
    { "GET", "/api/v1/backups/{bid}", api_backups_get, 0 },
    { "DELETE", "/api/v1/backups/{bid}", api_backups_delete, 0 },
    { "GET", "/api/v1/backups/{bid}/data", api_backups_data, 0, BV_QUERY("offset", "length") },
    { "POST", "/api/v1/backups/{bid}/restore", api_backups_restore, 0, OPERATOR },
    { "POST", "/api/v1/backups/{bid}/replicate", api_backups_replicate, 0, OPERATOR },

    { "POST", "/api/v1/remotes", api_remotes_create, 0 },
    { "GET", "/api/v1/remotes", api_remotes_list, 0 },
    { "GET", "/api/v1/remotes/{name}", api_remotes_get, 0 },
    { "DELETE", "/api/v1/remotes/{name}", api_remotes_delete, 0 },
    { "POST", "/api/v1/remotes/{name}/import", api_remotes_import, 0 },

    { "POST", "/api/v1/jobs", api_jobs_create, 0, OPERATOR },
    { "GET", "/api/v1/jobs", api_jobs_list, 0, BV_QUERY("status", "type", "history") },
    { "GET", "/api/v1/jobs/{jid}", api_jobs_get, 0 },
    { "POST", "/api/v1/jobs/{jid}/pause", api_jobs_pause, 0, OPERATOR },
    { "POST", "/api/v1/jobs/{jid}/resume", api_jobs_resume, 0, OPERATOR },
    { "POST", "/api/v1/jobs/{jid}/cancel", api_jobs_cancel, 0, OPERATOR },
    { "POST", "/api/v1/jobs/{jid}/finalize", api_jobs_finalize, 0, OPERATOR },
    { "POST", "/api/v1/jobs/{jid}/dismiss", api_jobs_dismiss, 0, OPERATOR },
    { "POST", "/api/v1/jobs/{jid}/set_speed", api_jobs_set_speed, 0, OPERATOR },
    { "POST", "/api/v1/transactions", api_transactions_run, 0, OPERATOR },

    { "POST", "/api/v1/policies", api_policies_create, 0 },
    { "GET", "/api/v1/policies", api_policies_list, 0 },
    { "GET", "/api/v1/policies/{name}", api_policies_get, 0 },
    { "PUT", "/api/v1/policies/{name}", api_policies_put, 0 },
    { "DELETE", "/api/v1/policies/{name}", api_policies_delete, 0 },
    { "POST", "/api/v1/policies/{name}/run", api_policies_run, 0, OPERATOR },
    { "GET", "/api/v1/policies/{name}/runs", api_policies_runs, 0 },
    { "GET", "/api/v1/policies/{name}/retention", api_policies_retention, 0 },
    { "POST", "/api/v1/test/clock", api_test_clock, 0 },

    { "GET", "/api/v1/reports", api_reports_list, 0 },
    { "GET", "/api/v1/reports/{rid}", api_reports_get, 0 },

    { "POST", "/api/v1/tokens", api_tokens_create, 0 },
    { "GET", "/api/v1/tokens", api_tokens_list, 0, .role = BV_ROLE_ADMIN },
    { "DELETE", "/api/v1/tokens/{name}", api_tokens_delete, 0 },
    { "GET", "/api/v1/storage", api_storage_get, 0 },

    /* notifications: admin changes them; reads are reader calls, as every GET (the
     * contract); the secret is never returned, so URLs should not carry credentials */
    { "POST", "/api/v1/notifications", api_notifications_create, 0 },
    { "GET", "/api/v1/notifications", api_notifications_list, 0 },
    { "GET", "/api/v1/notifications/{name}", api_notifications_get, 0 },
    { "DELETE", "/api/v1/notifications/{name}", api_notifications_delete, 0 },
    { "GET", "/api/v1/notifications/{name}/deliveries", api_notifications_deliveries, 0,
      BV_QUERY("limit") },
    { "POST", "/api/v1/catalog/backup", api_catalog_backup, 0 },
    { "GET", "/api/v1/catalog/upkeep", api_catalog_upkeep_get, 0 },
    { "POST", "/api/v1/catalog/upkeep", api_catalog_upkeep_run, 0 },

    /* the web UI: everything else that is not under /api */
    { "GET", "/", api_static, BV_ROUTE_PUBLIC | BV_ROUTE_ANY_QUERY },
    { "GET", "/{*path}", api_static, BV_ROUTE_PUBLIC | BV_ROUTE_ANY_QUERY },
};
const size_t bv_nroutes = sizeof(bv_routes) / sizeof(bv_routes[0]);
