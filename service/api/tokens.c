/* POST/GET /api/v1/tokens, DELETE /api/v1/tokens/{name}: see runtime/tokens.h.
 * The secret appears in the POST's answer only. */
#include <errno.h>
#include <string.h>

#include "api/common.h"
#include "api/tokens.h"
#include "app.h"
#include "bvdb/tokens.h"
#include "runtime/tokens.h"

static void add_opt_str(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

void api_tokens_create(struct bv_request *req, struct bv_reply *rep)
{
    const char *name = NULL, *expires = NULL;
    int role = 0;
    const struct bvj_field f[] = {
        { "name", BVJ_STRING, true, &name },
        { "role", BVJ_ENUM, true, &role, .names = bv_role_names },
        { "expires_at", BVJ_STRING, false, &expires },
    };
    cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
    if (!obj)
        return;
    struct bv_token_spec s = { .name = name, .role = bv_role_from_index(role),
                               .expires_at = expires };
    char secret[BV_TOKEN_SECRET_SIZE];
    int64_t expires_ms = 0;
    bv_error *e = NULL;
    int r = bv_tokens_create(req->app, &s, secret, &expires_ms, &e);
    if (r < 0) {
        api_fail(rep, 0, r, e);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddStringToObject(o, "role", bv_role_name(s.role));
        cJSON_AddStringToObject(o, "secret", secret);
        add_opt_str(o, "expires_at", expires);
        explicit_bzero(secret, sizeof(secret));
        bv_reply_json(rep, 201, o);
    }
    cJSON_Delete(obj);
}

static int add_token(const struct bvdb_token *t, void *opaque)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "role", t->role);
    cJSON_AddStringToObject(o, "created_at", t->created_at);
    add_opt_str(o, "expires_at", t->expires_at);
    cJSON_AddItemToArray(opaque, o);
    return 0;
}

void api_tokens_list(struct bv_request *req, struct bv_reply *rep)
{
    cJSON *arr = cJSON_CreateArray();
    if (bvdb_token_list(req->app->db, add_token, arr) < 0) {
        cJSON_Delete(arr);
        bv_reply_error(rep, 500, "InternalError", "cannot read tokens from the catalog");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "tokens", arr);
    bv_reply_json(rep, 200, o);
}

void api_tokens_delete(struct bv_request *req, struct bv_reply *rep)
{
    bv_error *e = NULL;
    int r = bv_tokens_delete(req->app, req->params[0], &e);
    if (r == -ENOENT) {
        bv_reply_error(rep, 404, "NotFound", "%s", e ? e->msg : "no such token");
        bv_error_free(e);
    } else if (r < 0) {
        api_fail(rep, 0, r, e);
    } else {
        bv_reply_empty(rep, 204);
    }
}
