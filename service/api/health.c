/* GET /api/v1/health and GET /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "api/api.h"
#include "app.h"
#include "runtime/capacity.h"
#include "runtime/jobs.h"
#include "runtime/notify.h"
#include "runtime/policies.h"
#include "runtime/registry.h"
#include "runtime/upkeep.h"
#include "runtime/verify.h"
#include "runtime/vmdrives.h"

void api_health(struct bv_request *req, struct bv_reply *rep)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "version", BV_VERSION);
    cJSON_AddNumberToObject(o, "uptime_s", (double)(time(NULL) - req->app->started));
    bv_reply_json(rep, 200, o);
}

/* Label values are ids and bitmap names: escape backslash, quote and newline. */
static void put_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f);
        if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void write_bitmap_metrics(struct bv_app *app, FILE *f)
{
    fprintf(f, "# HELP blockvault_bitmap_dirty_bytes Dirty bytes recorded by each bitmap.\n"
               "# TYPE blockvault_bitmap_dirty_bytes gauge\n");
    struct bv_drive_entry **all = NULL;
    size_t n = bv_registry_all(app, &all);
    for (size_t i = 0; i < n; i++) {
        struct bv_bitmap_set *set = bv_drive_bitmaps(all[i]->drive);
        size_t nb = bv_bitmap_list(set, NULL, 0);
        struct bv_bitmap_info *bi = calloc(nb ? nb : 1, sizeof(*bi));
        nb = bi ? bv_bitmap_list(set, bi, nb) : 0;
        for (size_t j = 0; j < nb; j++) {
            fputs("blockvault_bitmap_dirty_bytes{drive=\"", f);
            put_label(f, all[i]->id);
            fputs("\",bitmap=\"", f);
            put_label(f, bi[j].name);
            fprintf(f, "\"} %llu\n", (unsigned long long)bi[j].count);
        }
        free(bi);
        bv_registry_put(app, all[i]);
    }
    free(all);
}

void api_metrics(struct bv_request *req, struct bv_reply *rep)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        bv_reply_error(rep, 500, NULL, "out of memory");
        return;
    }
    fprintf(f, "# HELP blockvault_http_requests_total HTTP requests served.\n"
               "# TYPE blockvault_http_requests_total counter\n"
               "blockvault_http_requests_total %llu\n",
            (unsigned long long)atomic_load(&req->app->http_requests));
    fprintf(f, "# HELP blockvault_uptime_seconds Seconds since start.\n"
               "# TYPE blockvault_uptime_seconds gauge\n"
               "blockvault_uptime_seconds %lld\n",
            (long long)(time(NULL) - req->app->started));
    fprintf(f, "# HELP blockvault_corruption_reports_total Corruption reports filed since start.\n"
               "# TYPE blockvault_corruption_reports_total counter\n"
               "blockvault_corruption_reports_total %llu\n",
            (unsigned long long)atomic_load(&req->app->corruption_reports));
    write_bitmap_metrics(req->app, f);
    bv_jobs_metrics(req->app, f);
    bv_policy_metrics(req->app, f);
    bv_verify_metrics(req->app, f);
    bv_capacity_metrics(req->app, f);
    bv_upkeep_metrics(req->app, f);
    bv_notify_metrics(req->app, f);
    bv_vm_drives_metrics(req->app, f);
    fclose(f);
    bv_reply_bytes(rep, 200, "text/plain; version=0.0.4", text, len);
}
