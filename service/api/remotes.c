/*
 * /api/v1/remotes: S3 remotes; POST /api/v1/backups/{bid}/replicate.  Parsing and formatting
 * only: runtime/remotes.c checks, stores and replicates.  The secret key is read from the
 * body and never written into a reply.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/common.h"
#include "api/remotes.h"
#include "app.h"
#include "bv/path.h"
#include "runtime/backups.h"
#include "runtime/jobs.h"
#include "runtime/linkread.h"
#include "runtime/remotes.h"

static cJSON *remote_json(const struct bv_remote_view *v)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", v->name);
    cJSON_AddStringToObject(o, "endpoint", v->endpoint);
    cJSON_AddStringToObject(o, "bucket", v->bucket);
    cJSON_AddStringToObject(o, "region", v->region);
    cJSON_AddStringToObject(o, "access_key", v->access_key);
    cJSON_AddBoolToObject(o, "path_style", v->path_style);
    cJSON_AddBoolToObject(o, "object_lock", v->object_lock);
    cJSON_AddStringToObject(o, "created_at", v->created_at);
    return o;
}

void api_remotes_create(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_remote_spec s = { .path_style = true };
    const struct bvj_field f[] = {
        { "name", BVJ_STRING, true, &s.name },
        { "endpoint", BVJ_STRING, true, &s.endpoint },
        { "bucket", BVJ_STRING, true, &s.bucket },
        { "region", BVJ_STRING, false, &s.region },
        { "access_key", BVJ_STRING, true, &s.access_key },
        { "secret_key", BVJ_STRING, true, &s.secret_key },
        { "path_style", BVJ_BOOL, false, &s.path_style },
        { "create_bucket", BVJ_BOOL, false, &s.create_bucket },
        { "object_lock", BVJ_BOOL, false, &s.object_lock },
    };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    struct bv_remote_view v;
    bv_error *e = NULL;
    int r = bv_remotes_create(req->app, &s, &v, &e);
    /* scrub the secret from the parsed body before it is freed */
    cJSON *sk = cJSON_GetObjectItemCaseSensitive(obj, "secret_key");
    if (cJSON_IsString(sk))
        explicit_bzero(sk->valuestring, strlen(sk->valuestring));
    cJSON_Delete(obj);
    if (r < 0)
        api_fail(rep, 0, r, e);
    else
        bv_reply_json(rep, 201, remote_json(&v));
}

void api_remotes_list(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_remote_view *v = NULL;
    int n = bv_remotes_list(req->app, &v);
    if (n < 0) {
        bv_reply_error(rep, 500, NULL, "cannot read the catalog");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "remotes");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, remote_json(&v[i]));
    free(v);
    bv_reply_json(rep, 200, o);
}

void api_remotes_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_remote_view v;
    bv_error *e = NULL;
    if (bv_remotes_get(req->app, req->params[0], &v, &e) < 0)
        api_fail(rep, 404, -ENOENT, e);
    else
        bv_reply_json(rep, 200, remote_json(&v));
}

void api_remotes_delete(struct bv_request *req, struct bv_reply *rep)
{
    bv_error *e = NULL;
    int r = bv_remotes_delete(req->app, req->params[0], &e);
    if (r < 0)
        api_fail(rep, r == -ENOENT ? 404 : 0, r, e);
    else
        bv_reply_empty(rep, 204);
}

void api_backups_replicate(struct bv_request *req, struct bv_reply *rep)
{
    const char *remote = NULL;
    const struct bvj_field f[] = { { "remote", BVJ_STRING, true, &remote } };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    struct bv_job_info info;
    bv_error *e = NULL;
    int r = bv_remotes_replicate(req->app, req->params[0], remote, &info, &e);
    cJSON_Delete(obj);
    if (r < 0) {
        api_fail(rep, r == -ENODEV ? 404 : r == -ENOENT ? 400 : 0, r, e);
        return;
    }
    api_reply_started_job(req, rep, &info, "replicate");
}

void api_remotes_import(struct bv_request *req, struct bv_reply *rep)
{
    if (req->body_len > 0) {
        const struct bvj_field *none = NULL;
        cJSON *obj = api_read_body(req, rep, none, 0);   /* {} or nothing */
        if (!obj)
            return;
        cJSON_Delete(obj);
    }
    struct bv_job_info info;
    bv_error *e = NULL;
    int r = bv_remotes_import(req->app, req->params[0], &info, &e);
    if (r < 0) {
        api_fail(rep, r == -ENODEV ? 404 : 0, r, e);
        return;
    }
    api_reply_started_job(req, rep, &info, "import");
}

static cJSON *remote_drive_json(struct bv_app *app, const char *id)
{
    char remote[BV_REMOTE_NAME_MAX + 1] = "";
    uint64_t size = 0;
    if (!bv_remotes_drive_remote_only(app, id, remote, sizeof(remote), &size))
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "format", "remote-only");
    cJSON_AddNullToObject(o, "file");
    cJSON_AddNumberToObject(o, "size", (double)size);
    cJSON_AddNullToObject(o, "allocated");
    cJSON_AddNullToObject(o, "backing");
    cJSON_AddArrayToObject(o, "filters");
    cJSON_AddStringToObject(o, "remote", remote);
    return o;
}

void api_remote_drives_list(struct bv_request *req, cJSON *arr)
{
    char **ids = NULL;
    size_t n = bv_remotes_drives_list(req->app, &ids);
    for (size_t i = 0; i < n; i++) {
        cJSON *o = remote_drive_json(req->app, ids[i]);
        if (o)
            cJSON_AddItemToArray(arr, o);
        free(ids[i]);
    }
    free(ids);
}

bool api_remote_drives_get(struct bv_request *req, struct bv_reply *rep)
{
    cJSON *o = remote_drive_json(req->app, req->params[0]);
    if (!o)
        return false;
    bv_reply_json(rep, 200, o);
    return true;
}

void api_backup_add_remotes(struct bv_app *app, cJSON *o, const struct bv_backup_rec *b)
{
    char *text = bv_remotes_of_backup_json(app, b->id);
    cJSON *arr = text ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON_AddItemToObject(o, "remotes", arr ? arr : cJSON_CreateArray());
    cJSON_AddBoolToObject(o, "local", bv_linkread_is_local(app, b));
}
