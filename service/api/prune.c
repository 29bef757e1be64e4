/*
 * DELETE /api/v1/backups/{bid}: start a prune job (runtime/prune.c does the
 * work).  Parsing and formatting only.
 */
#include <errno.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "runtime/jobs.h"
#include "runtime/prune.h"

void api_backups_delete(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_job_info info;
    bv_error *e = NULL;
    int r = bv_prune_start(req->app, req->params[0], &info, &e);
    if (r < 0) {
        api_fail(rep, r == -ENODEV ? 404 : 0, r, e);
        return;
    }
    api_reply_started_job(req, rep, &info, "prune");
}
