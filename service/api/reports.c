/* GET /api/v1/reports and /api/v1/reports/{rid}: corruption and verification reports. */
#include <stdlib.h>

#include "api/api.h"
#include "app.h"
#include "bvdb/reports.h"

#define MAX_LISTED_REPORTS 1000

static void add_opt_str(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static cJSON *report_json(const struct bvdb_report *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    add_opt_str(o, "job_id", r->job_id);
    add_opt_str(o, "drive", r->drive_id);
    cJSON_AddStringToObject(o, "kind", r->kind);
    cJSON_AddStringToObject(o, "status", r->status);
    add_opt_str(o, "test", r->test);
    add_opt_str(o, "reference", r->reference);
    if (r->has_mismatch) {
        cJSON_AddNumberToObject(o, "first_mismatch_sector", (double)r->first_mismatch_sector);
        cJSON_AddNumberToObject(o, "first_mismatch_offset", (double)r->first_mismatch_offset);
    } else {
        cJSON_AddNullToObject(o, "first_mismatch_sector");
        cJSON_AddNullToObject(o, "first_mismatch_offset");
    }
    cJSON_AddNumberToObject(o, "mismatched_bytes", (double)r->mismatched_bytes);
    cJSON *ext = cJSON_Parse(r->extents ? r->extents : "[]");
    cJSON_AddItemToObject(o, "extents", ext ? ext : cJSON_CreateArray());
    cJSON_AddNumberToObject(o, "extents_total", (double)r->extents_total);
    cJSON *smp = cJSON_Parse(r->samples ? r->samples : "[]");
    cJSON_AddItemToObject(o, "samples", smp ? smp : cJSON_CreateArray());
    cJSON *aff = cJSON_Parse(r->affected ? r->affected : "[]");
    cJSON_AddItemToObject(o, "affected_backups", aff ? aff : cJSON_CreateArray());
    cJSON_AddStringToObject(o, "created_at", r->created_at);
    return o;
}

static int add_report(const struct bvdb_report *r, void *opaque)
{
    cJSON_AddItemToArray(opaque, report_json(r));
    return 0;
}

void api_reports_list(struct bv_request *req, struct bv_reply *rep)
{
    cJSON *arr = cJSON_CreateArray();
    if (bvdb_report_list(req->app->db, MAX_LISTED_REPORTS, add_report, arr) < 0) {
        cJSON_Delete(arr);
        bv_reply_error(rep, 500, NULL, "cannot read reports from the catalog");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "reports", arr);
    bv_reply_json(rep, 200, o);
}

static void keep_report(const struct bvdb_report *r, void *opaque)
{
    *(cJSON **)opaque = report_json(r);
}

void api_reports_get(struct bv_request *req, struct bv_reply *rep)
{
    cJSON *o = NULL;
    int r = bvdb_report_get(req->app->db, req->params[0], keep_report, &o);
    if (r < 0 || !o)
        bv_reply_error(rep, 404, "NotFound", "Report '%s' not found", req->params[0]);
    else
        bv_reply_json(rep, 200, o);
}
