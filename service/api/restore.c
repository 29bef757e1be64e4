/*
 * POST /api/v1/backups/{bid}/restore: parsing and formatting only; the
 * operation is runtime/restore.c's.  201 with the restore job.
 */
#include <errno.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "runtime/jobs.h"
#include "runtime/restore.h"

void api_backups_restore(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_restore_request rq = { .backup = req->params[0] };
    const struct bvj_field f[] = {
        { "drive", BVJ_STRING, false, &rq.drive },
        { "file", BVJ_STRING, false, &rq.file },
        { "format", BVJ_STRING, false, &rq.format },
        { "compress", BVJ_BOOL, false, &rq.compress },
        { "force", BVJ_BOOL, false, &rq.force },
    };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    struct bv_job_info info;
    bv_error *e = NULL;
    int r = bv_restore_start(req->app, &rq, &info, &e);
    cJSON_Delete(obj);
    if (r < 0) {
        api_fail(rep, 0, r, e);
        return;
    }
    api_reply_started_job(req, rep, &info, "restore");
}
