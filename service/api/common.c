/* Shared handler helpers: see common.h. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/common.h"
#include "app.h"
#include "bv/path.h"
#include "log.h"

int api_status(int r, const bv_error *e, const char **cls)
{
    int err = e ? e->err : (r < 0 ? -r : r);
    *cls = NULL;
    switch (err) {
    case ENODEV:
        *cls = "DeviceNotFound";
        return 404;
    case EINVAL: case ENOENT: case ERANGE: case ENOTSUP: case ENAMETOOLONG:
    case ELOOP: case EACCES: case EPERM: case ENOTDIR: case EISDIR:
        return 400;
    case EEXIST: case EBUSY: case EALREADY:
        return 409;
    case EFBIG: case E2BIG:
        return 413;
    case ENOSPC:                   /* refused before the job started (runtime/capacity.h) */
        return 507;
    default:
        return 500;
    }
}

void api_fail(struct bv_reply *rep, int status, int r, bv_error *e)
{
    const char *cls = NULL;
    if (status <= 0)
        status = api_status(r, e, &cls);
    const char *msg = e ? e->msg : strerror(r < 0 ? -r : r);
    if (status >= 500)
        log_error("internal error: %s", msg);
    bv_reply_error(rep, status, cls, "%s", msg);
    bv_error_free(e);
}

cJSON *api_read_body(struct bv_request *req, struct bv_reply *rep,
                     const struct bvj_field *fields, size_t n)
{
    cJSON *obj = bv_req_json(req, rep);
    if (!obj)
        return NULL;
    char err[512];
    if (bvj_read(obj, fields, n, err, sizeof(err)) < 0) {
        bv_reply_error(rep, 400, NULL, "%s", err);
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

int api_file_id(struct bv_app *app, const char *path, struct bv_file_id *id, bv_error **errp)
{
    struct stat st;
    int r = bv_path_stat(app->root, path, &st, errp);
    if (r == 0) {
        id->dev = (uint64_t)st.st_dev;
        id->ino = (uint64_t)st.st_ino;
    }
    return r;
}
