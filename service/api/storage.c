/* GET /api/v1/storage → {"total","used","free","chains":[{"drive","chain","bytes"}]}. */
#include <stdlib.h>

#include "api/common.h"
#include "api/storage.h"
#include "app.h"
#include "runtime/capacity.h"

void api_storage_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_space sp;
    bv_error *e = NULL;
    int r = bv_capacity_space(req->app, &sp, &e);
    if (r < 0) {
        api_fail(rep, 500, r, e);
        return;
    }
    struct bv_chain_usage *u = NULL;
    int n = bv_capacity_chains(req->app, &u);
    if (n < 0) {
        bv_reply_error(rep, 500, "InternalError", "cannot read backups from the catalog");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "total", (double)sp.total);
    cJSON_AddNumberToObject(o, "used", (double)sp.used);
    cJSON_AddNumberToObject(o, "free", (double)sp.free);
    cJSON *arr = cJSON_AddArrayToObject(o, "chains");
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "drive", u[i].drive);
        cJSON_AddStringToObject(c, "chain", u[i].chain);
        cJSON_AddNumberToObject(c, "bytes", (double)u[i].bytes);
        cJSON_AddItemToArray(arr, c);
    }
    free(u);
    bv_reply_json(rep, 200, o);
}
