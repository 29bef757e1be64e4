/*
 * Backup chains: POST/GET /api/v1/drives/{id}/backups, GET /api/v1/backups/{bid},
 * GET /api/v1/backups/{bid}/data.  Parsing and formatting only: the
 * operations are runtime/backups.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "api/remotes.h"
#include "app.h"
#include "runtime/backups.h"
#include "runtime/drives.h"
#include "runtime/remotes.h"
#include "runtime/jobs.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"

#define MAX_READ_LENGTH (64u << 20)
static const char *const kinds[] = { "full", "incremental", NULL };

static void add_opt(cJSON *o, const char *key, const char *v)
{
    if (v && v[0])
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

cJSON *api_backup_json(const struct bv_backup_rec *b)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", b->id);
    cJSON_AddStringToObject(o, "drive", b->drive);
    cJSON_AddStringToObject(o, "chain", b->chain);
    add_opt(o, "parent", b->parent);
    cJSON_AddStringToObject(o, "kind", b->kind);
    cJSON_AddStringToObject(o, "file", b->file);
    cJSON_AddStringToObject(o, "status", b->status);
    add_opt(o, "created_at", b->created_at);
    add_opt(o, "completed_at", b->completed_at);
    cJSON_AddNumberToObject(o, "virtual_size", (double)b->virtual_size);
    cJSON_AddNumberToObject(o, "data_bytes", (double)b->data_bytes);
    add_opt(o, "checksum", b->checksum);
    add_opt(o, "verified_at", b->verified_at);
    if (b->reason[0])
        cJSON_AddStringToObject(o, "reason", b->reason);
    cJSON_AddBoolToObject(o, "damaged", b->damaged);
    cJSON_AddBoolToObject(o, "compress", b->compress);
    add_opt(o, "job_id", b->job_id);
    return o;
}

void api_backups_create(struct bv_request *req, struct bv_reply *rep)
{
    int kind = 0;
    struct bv_backup_request rq = { .drive = req->params[0] };
    const struct bvj_field f[] = {
        { "kind", BVJ_ENUM, true, &kind, .names = kinds },
        { "compress", BVJ_BOOL, false, &rq.compress },
        { "verify", BVJ_BOOL, false, &rq.verify },
    };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    rq.incremental = kind == 1;
    struct bv_backup_rec b;
    struct bv_job_info info;
    bv_error *e = NULL;
    int r = bv_backups_create(req->app, &rq, &b, &info, &e);
    cJSON_Delete(obj);
    if (r < 0) {
        api_fail(rep, 0, r, e);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "backup", api_backup_json(&b));
    struct bv_job_view *v = malloc(sizeof(*v));
    if (v && bv_jobs_get(req->app, b.job_id, v, NULL) == 0)
        cJSON_AddItemToObject(o, "job", api_job_json(v));
    else
        cJSON_AddNullToObject(o, "job");
    free(v);
    bv_reply_json(rep, 201, o);
}

void api_backups_list(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_vm_drive *vm = bv_vm_drives_get(req->app, req->params[0]);   /* chains as any */
    bv_vm_drives_put(req->app, vm);
    if (!vm && bv_drives_detached_get(req->app, req->params[0], NULL) < 0 &&
        !bv_remotes_drive_remote_only(req->app, req->params[0], NULL, 0, NULL)) {
        struct bv_drive_entry *e = api_drive_get(req, rep);   /* else: its backups */
        if (!e)
            return;
        bv_registry_put(req->app, e);
    }
    struct bv_backup_rec *v = NULL;
    int n = bv_backups_list(req->app, req->params[0], &v);
    if (n < 0) {
        bv_reply_error(rep, 500, NULL, "cannot read the catalog");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *chains = cJSON_AddArrayToObject(o, "chains");
    for (int i = 0; i < n; i++) {
        cJSON *chain = NULL, *c;
        cJSON_ArrayForEach(c, chains)
            if (strcmp(cJSON_GetObjectItem(c, "id")->valuestring, v[i].chain) == 0)
                chain = c;
        if (!chain) {
            chain = cJSON_CreateObject();
            cJSON_AddStringToObject(chain, "id", v[i].chain);
            cJSON_AddArrayToObject(chain, "backups");
            cJSON_AddItemToArray(chains, chain);
        }
        cJSON *bo = api_backup_json(&v[i]);
        api_backup_add_remotes(req->app, bo, &v[i]);
        cJSON_AddItemToArray(cJSON_GetObjectItem(chain, "backups"), bo);
    }
    free(v);
    bv_reply_json(rep, 200, o);
}

void api_backups_get(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_backup_rec b;
    bv_error *e = NULL;
    int r = bv_backups_get(req->app, req->params[0], &b, &e);
    if (r < 0) {
        api_fail(rep, 404, r, e);
        return;
    }
    cJSON *o = api_backup_json(&b);
    api_backup_add_remotes(req->app, o, &b);
    bv_reply_json(rep, 200, o);
}

static int query_size(struct bv_request *req, struct bv_reply *rep, const char *key,
                      uint64_t *out)
{
    const char *s = bv_req_query(req, key);
    if (!s) {
        bv_reply_error(rep, 400, NULL, "query parameter '%s' is missing", key);
        return -1;
    }
    if (bvj_parse_size(s, out) < 0) {
        bv_reply_error(rep, 400, NULL, "query parameter '%s' must be a byte count", key);
        return -1;
    }
    return 0;
}

void api_backups_data(struct bv_request *req, struct bv_reply *rep)
{
    uint64_t off = 0, len = 0;
    if (query_size(req, rep, "offset", &off) < 0 || query_size(req, rep, "length", &len) < 0)
        return;
    if (len > MAX_READ_LENGTH) {
        bv_reply_error(rep, 413, NULL, "length %llu exceeds the limit of %u bytes per request",
                       (unsigned long long)len, MAX_READ_LENGTH);
        return;
    }
    bv_node *n = NULL;
    bv_error *e = NULL;
    int r = bv_backups_open_point(req->app, req->params[0], &n, &e);
    if (r < 0) {
        api_fail(rep, r == -ENODEV ? 404 : 0, r, e);
        return;
    }
    uint64_t size = bv_node_size(n);
    if (off > size || len > size - off) {
        bv_reply_error(rep, 400, NULL, "range [%llu, +%llu) lies past the end of backup '%s' "
                       "(%llu bytes)", (unsigned long long)off, (unsigned long long)len,
                       req->params[0], (unsigned long long)size);
        bv_node_close(n, NULL);
        return;
    }
    char *buf = malloc(len ? len : 1);
    r = buf ? bv_node_pread(n, buf, len, off, &e) : -ENOMEM;
    bv_node_close(n, NULL);
    if (r < 0) {
        free(buf);
        const char *cls = "IOError";
        bv_reply_error(rep, 500, cls, "%s", e ? e->msg : strerror(-r));
        bv_error_free(e);
        return;
    }
    bv_reply_bytes(rep, 200, "application/octet-stream", buf, len);
}
