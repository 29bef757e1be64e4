/* GET /api/v1/health and GET /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "api/api.h"
#include "app.h"

void api_health(struct bv_request *req, struct bv_reply *rep)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "version", BV_VERSION);
    cJSON_AddNumberToObject(o, "uptime_s", (double)(time(NULL) - req->app->started));
    bv_reply_json(rep, 200, o);
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
    fclose(f);
    bv_reply_bytes(rep, 200, "text/plain; version=0.0.4", text, len);
}
