/*
 * /api/v1/jobs: create backup jobs, query live jobs and history, verbs.
 * Parsing and formatting only: the operations are runtime/jobs.c's (and
 * runtime/verify.c's for type verify).  The backup body reader is shared
 * with transactions' drive-backup action.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "app.h"
#include "runtime/jobs.h"
#include "runtime/verify.h"

static const char *const job_types[] = { "backup", "verify", NULL };
static const char *const bitmap_modes[] = { "on-success", "always", "never", NULL };
static const char *const modes[] = { "existing", "absolute-paths", NULL };

/* speed: QMP's texts for a wrong type and a negative value */
static int read_speed(const cJSON *v, uint64_t *out, char *err, size_t errlen)
{
    if (!v)
        return 0;
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d > 9007199254740992.0) {
        snprintf(err, errlen, "Invalid parameter type for 'speed', expected: integer");
        return -1;
    }
    if (d < 0) {
        snprintf(err, errlen, "Parameter 'speed' expects a non-negative value");
        return -1;
    }
    *out = (uint64_t)d;
    return 0;
}

int api_backup_spec_read(const cJSON *obj, bool with_type, struct bv_backup_spec *s, char *err,
                         size_t errlen)
{
    int type = 0, sync = -1, bmode = -1, mode = 1, src_err = 0, tgt_err = 0;
    const cJSON *speed = NULL;
    memset(s, 0, sizeof(*s));
    s->auto_finalize = s->auto_dismiss = true;
    const struct bvj_field f[] = {
        { "type", BVJ_ENUM, with_type, &type, .names = job_types },
        { "device", BVJ_STRING, true, &s->device },
        { "job_id", BVJ_STRING, false, &s->job_id },
        { "sync", BVJ_ENUM, true, &sync, .names = bv_backup_sync_names },
        { "bitmap", BVJ_STRING, false, &s->bitmap },
        { "bitmap_mode", BVJ_ENUM, false, &bmode, .names = bitmap_modes },
        { "target", BVJ_STRING, true, &s->target },
        { "format", BVJ_STRING, false, &s->format },
        { "mode", BVJ_ENUM, false, &mode, .names = modes },
        { "compress", BVJ_BOOL, false, &s->compress },
        { "speed", BVJ_ANY, false, &speed },
        { "on_source_error", BVJ_ENUM, false, &src_err, .names = bv_job_error_policy_names },
        { "on_target_error", BVJ_ENUM, false, &tgt_err, .names = bv_job_error_policy_names },
        { "auto_finalize", BVJ_BOOL, false, &s->auto_finalize },
        { "auto_dismiss", BVJ_BOOL, false, &s->auto_dismiss },
    };
    size_t nf = BVJ_COUNT(f);
    if (bvj_read(obj, with_type ? f : f + 1, with_type ? nf : nf - 1, err, errlen) < 0)
        return -1;
    if (with_type && type != 0) {
        snprintf(err, errlen, "Job type '%s' is not available in this build",
                 job_types[type]);
        return -1;
    }
    if (read_speed(speed, &s->speed, err, errlen) < 0)
        return -1;
    s->sync = (enum bv_backup_sync)sync;
    s->bitmap_mode = bmode;
    s->mode_existing = mode == 0;
    s->on_source_error = (enum bv_job_error_policy)src_err;
    s->on_target_error = (enum bv_job_error_policy)tgt_err;
    return 0;
}

static void add_time(cJSON *o, const char *key, const char *v)
{
    if (v[0])
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

void api_reply_started_job(struct bv_request *req, struct bv_reply *rep,
                           const struct bv_job_info *info, const char *type)
{
    struct bv_job_view *v = malloc(sizeof(*v));
    if (v && bv_jobs_get(req->app, info->id, v, NULL) == 0) {
        bv_reply_json(rep, 201, api_job_json(v));
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", info->id);
        cJSON_AddStringToObject(o, "type", type);
        bv_reply_json(rep, 201, o);
    }
    free(v);
}

cJSON *api_job_json(const struct bv_job_view *v)
{
    const struct bv_job_info *i = &v->info;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", i->id);
    cJSON_AddStringToObject(o, "type", i->type);
    cJSON_AddStringToObject(o, "device", i->device);
    cJSON_AddStringToObject(o, "status", bv_job_status_name(i->status));
    cJSON_AddNumberToObject(o, "offset", (double)i->offset);
    cJSON_AddNumberToObject(o, "len", (double)i->len);
    cJSON_AddNumberToObject(o, "speed", (double)i->speed);
    cJSON_AddNumberToObject(o, "rate", floor(v->rate));
    if (i->error[0])
        cJSON_AddStringToObject(o, "error", i->error);
    else
        cJSON_AddNullToObject(o, "error");
    cJSON_AddBoolToObject(o, "busy", i->busy);
    cJSON_AddBoolToObject(o, "paused", i->paused);
    cJSON_AddStringToObject(o, "io_status", bv_job_iostatus_name(i->iostatus));
    cJSON_AddBoolToObject(o, "auto_finalize", i->auto_finalize);
    cJSON_AddBoolToObject(o, "auto_dismiss", i->auto_dismiss);
    add_time(o, "created_at", v->created_at);
    add_time(o, "started_at", v->started_at);
    add_time(o, "finished_at", v->finished_at);
    cJSON *p = cJSON_Parse(v->params);
    cJSON *field;
    cJSON_ArrayForEach(field, p)
        if (!cJSON_GetObjectItemCaseSensitive(o, field->string))
            cJSON_AddItemReferenceToObject(o, field->string, field);
    cJSON *copy = cJSON_Duplicate(o, true);     /* detach from p's items */
    cJSON_Delete(o);
    cJSON_Delete(p);
    return copy;
}

static void reply_job(struct bv_request *req, struct bv_reply *rep, int status, const char *id)
{
    struct bv_job_view *v = malloc(sizeof(*v));
    bv_error *err = NULL;
    int r = v ? bv_jobs_get(req->app, id, v, &err) : -ENOMEM;
    if (r < 0)
        api_fail(rep, 0, r, err);
    else
        bv_reply_json(rep, status, api_job_json(v));
    free(v);
}

/* ---- verify --------------------------------------------------------------- */

static const char *const verify_modes[] = { "compare", "checksum", NULL };

/* {"drive"} | {"backup"} | {"file","format"?}: exactly one name. */
static int verify_side_read(const cJSON *o, const char *what, struct bv_verify_side *s,
                            char *err, size_t errlen)
{
    const char *drive = NULL, *backup = NULL, *file = NULL;
    int fmt = -1;
    const struct bvj_field f[] = {
        { "drive", BVJ_STRING, false, &drive },
        { "backup", BVJ_STRING, false, &backup },
        { "file", BVJ_STRING, false, &file },
        { "format", BVJ_ENUM, false, &fmt, .names = api_format_names },
    };
    char inner[400];
    if (bvj_read(o, f, BVJ_COUNT(f), inner, sizeof(inner)) < 0) {
        snprintf(err, errlen, "'%s': %s", what, inner);
        return -1;
    }
    if ((drive != NULL) + (backup != NULL) + (file != NULL) != 1) {
        snprintf(err, errlen, "'%s' needs exactly one of 'drive', 'backup' or 'file'", what);
        return -1;
    }
    if (fmt >= 0 && !file) {
        snprintf(err, errlen, "'%s': 'format' goes only with 'file'", what);
        return -1;
    }
    s->kind = drive ? BV_VSIDE_DRIVE : backup ? BV_VSIDE_BACKUP : BV_VSIDE_FILE;
    s->name = drive ? drive : backup ? backup : file;
    s->format = fmt >= 0 ? bv_format_name(api_format(fmt)) : NULL;
    return 0;
}

static int verify_read(const cJSON *obj, struct bv_verify_request *rq, char *err, size_t errlen)
{
    int type = 0, mode = -1;
    const cJSON *test = NULL, *ref = NULL;
    memset(rq, 0, sizeof(*rq));
    const struct bvj_field f[] = {
        { "type", BVJ_ENUM, true, &type, .names = job_types },
        { "mode", BVJ_ENUM, true, &mode, .names = verify_modes },
        { "test", BVJ_OBJECT, false, &test },
        { "reference", BVJ_OBJECT, false, &ref },
        { "backup", BVJ_STRING, false, &rq->backup },
        { "drive", BVJ_STRING, false, &rq->drive },
    };
    if (bvj_read(obj, f, BVJ_COUNT(f), err, errlen) < 0)
        return -1;
    rq->checksum = mode == 1;
    if (rq->checksum) {
        if (test || ref) {
            snprintf(err, errlen, "A checksum verify takes 'backup' or 'drive', not "
                     "'test'/'reference'");
            return -1;
        }
        if ((rq->backup != NULL) == (rq->drive != NULL)) {
            snprintf(err, errlen, "A checksum verify needs exactly one of 'backup' or 'drive'");
            return -1;
        }
        return 0;
    }
    if (rq->backup || rq->drive) {
        snprintf(err, errlen, "A compare verify takes 'test' and 'reference', not "
                 "'backup'/'drive'");
        return -1;
    }
    if (!test || !ref) {
        snprintf(err, errlen, "Parameter '%s' is missing", test ? "reference" : "test");
        return -1;
    }
    if (verify_side_read(test, "test", &rq->test, err, errlen) < 0 ||
        verify_side_read(ref, "reference", &rq->reference, err, errlen) < 0)
        return -1;
    return 0;
}

static void create_verify(struct bv_request *req, struct bv_reply *rep, const cJSON *obj)
{
    struct bv_verify_request rq;
    char err[512];
    if (verify_read(obj, &rq, err, sizeof(err)) < 0) {
        bv_reply_error(rep, 400, NULL, "%s", err);
        return;
    }
    struct bv_job_info info;
    bv_error *e = NULL;
    int r = bv_verify_start(req->app, &rq, &info, &e);
    if (r < 0)
        api_fail(rep, 0, r, e);
    else
        reply_job(req, rep, 201, info.id);
}

void api_jobs_create(struct bv_request *req, struct bv_reply *rep)
{
    cJSON *obj = bv_req_json(req, rep);
    if (!obj)
        return;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "verify") == 0) {
        create_verify(req, rep, obj);
        cJSON_Delete(obj);
        return;
    }
    struct bv_backup_spec s;
    char err[512];
    if (api_backup_spec_read(obj, true, &s, err, sizeof(err)) < 0) {
        bv_reply_error(rep, 400, NULL, "%s", err);
        cJSON_Delete(obj);
        return;
    }
    struct bv_job_info info;
    bv_error *e = NULL;
    int r = bv_jobs_backup(req->app, &s, &info, &e);
    if (r < 0)
        api_fail(rep, 0, r, e);
    else
        reply_job(req, rep, 201, info.id);
    cJSON_Delete(obj);
}

void api_jobs_list(struct bv_request *req, struct bv_reply *rep)
{
    const char *status = bv_req_query(req, "status");
    const char *type = bv_req_query(req, "type");
    const char *hist = bv_req_query(req, "history");
    if (hist && strcmp(hist, "true") != 0 && strcmp(hist, "false") != 0) {
        bv_reply_error(rep, 400, NULL, "Parameter 'history' expects true or false");
        return;
    }
    if (status && bv_job_status_parse(status) < 0) {
        bv_reply_error(rep, 400, NULL, "Parameter 'status' does not accept value '%s'", status);
        return;
    }
    if (type && bvj_enum_index(job_types, type) < 0 && strcmp(type, "restore") != 0 &&
        strcmp(type, "prune") != 0 && strcmp(type, "replicate") != 0 &&
        strcmp(type, "import") != 0) {
        bv_reply_error(rep, 400, NULL, "Parameter 'type' does not accept value '%s'", type);
        return;
    }
    struct bv_job_view *v = NULL;
    size_t n = bv_jobs_list(req->app, hist && strcmp(hist, "true") == 0, status, type, &v);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "jobs");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, api_job_json(&v[i]));
    free(v);
    bv_reply_json(rep, 200, o);
}

void api_jobs_get(struct bv_request *req, struct bv_reply *rep)
{
    reply_job(req, rep, 200, req->params[0]);
}

static void verb(struct bv_request *req, struct bv_reply *rep, enum bv_job_verb v)
{
    uint64_t speed = 0;
    if (v == BV_JOB_VERB_SET_SPEED) {
        const cJSON *sp = NULL;
        const struct bvj_field f[] = { { "speed", BVJ_ANY, true, &sp } };
        cJSON *obj = api_read_body(req, rep, f, BVJ_COUNT(f));
        if (!obj)
            return;
        char err[256];
        int r = read_speed(sp, &speed, err, sizeof(err));
        cJSON_Delete(obj);
        if (r < 0) {
            bv_reply_error(rep, 400, NULL, "%s", err);
            return;
        }
    } else if (req->body_len) {
        /* verbs take no body; an empty object is fine */
        cJSON *obj = api_read_body(req, rep, NULL, 0);
        if (!obj)
            return;
        cJSON_Delete(obj);
    }
    bv_error *e = NULL;
    int r = bv_jobs_verb(req->app, req->params[0], v, speed, NULL, &e);
    if (r < 0)
        api_fail(rep, 0, r, e);
    else
        reply_job(req, rep, 200, req->params[0]);
}

void api_jobs_pause(struct bv_request *req, struct bv_reply *rep) { verb(req, rep, BV_JOB_VERB_PAUSE); }
void api_jobs_resume(struct bv_request *req, struct bv_reply *rep) { verb(req, rep, BV_JOB_VERB_RESUME); }
void api_jobs_cancel(struct bv_request *req, struct bv_reply *rep) { verb(req, rep, BV_JOB_VERB_CANCEL); }
void api_jobs_finalize(struct bv_request *req, struct bv_reply *rep) { verb(req, rep, BV_JOB_VERB_FINALIZE); }
void api_jobs_dismiss(struct bv_request *req, struct bv_reply *rep) { verb(req, rep, BV_JOB_VERB_DISMISS); }
void api_jobs_set_speed(struct bv_request *req, struct bv_reply *rep) { verb(req, rep, BV_JOB_VERB_SET_SPEED); }
