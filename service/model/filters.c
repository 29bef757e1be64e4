/*
 * Filters JSON text → typed options: see model/filters.h.  The blkdebug
 * parser builds the sentence in a local buffer and hands it out once, as a
 * bv_error, at the top.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "model/filters.h"

static const char *const iotype_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status", NULL
};

static int parse_event(const char *name, enum bv_block_event *ev, const char *where,
                       char *err, size_t errlen)
{
    if (bv_block_event_parse(name, ev) < 0) {
        snprintf(err, errlen, "%s: unknown blkdebug event '%s'", where, name);
        return -1;
    }
    return 0;
}

static int parse_set_state(const cJSON *o, struct bv_blkdebug_config *cfg, int i,
                           char *err, size_t errlen)
{
    const char *event = NULL;
    uint64_t state = 0, new_state = 0;
    const struct bvj_field f[] = {
        { "event", BVJ_STRING, true, &event },
        { "state", BVJ_U64, false, &state, .max = UINT32_MAX },
        { "new_state", BVJ_U64, true, &new_state, .min = 1, .max = UINT32_MAX },
    };
    char where[64], inner[384];
    snprintf(where, sizeof(where), "blkdebug.set_state[%d]", i);
    if (!cJSON_IsObject(o) || bvj_read(o, f, BVJ_COUNT(f), inner, sizeof(inner)) < 0) {
        snprintf(err, errlen, "%s: %s", where, cJSON_IsObject(o) ? inner : "an object is expected");
        return -1;
    }
    enum bv_block_event ev;
    if (parse_event(event, &ev, where, err, errlen) < 0)
        return -1;
    bv_error *e = NULL;
    if (bv_blkdebug_add_set_state(cfg, ev, (uint32_t)state, (uint32_t)new_state, &e) < 0) {
        snprintf(err, errlen, "%s: %s", where, e ? e->msg : "too many rules");
        bv_error_free(e);
        return -1;
    }
    return 0;
}

static int parse_iotypes(const cJSON *arr, unsigned *mask, const char *where, char *err,
                         size_t errlen)
{
    const cJSON *it;
    *mask = 0;
    cJSON_ArrayForEach(it, arr) {
        int i = cJSON_IsString(it) ? bvj_enum_index(iotype_names, it->valuestring) : -1;
        if (i < 0) {
            snprintf(err, errlen, "%s: iotype must hold read, write, write-zeroes, discard, "
                     "flush or block-status", where);
            return -1;
        }
        *mask |= 1u << i;
    }
    return 0;
}

static int parse_inject(const cJSON *o, struct bv_blkdebug_config *cfg, int i,
                        char *err, size_t errlen)
{
    const char *event = NULL;
    uint64_t state = 0, eno = EIO, offset = 0, sector = 0;
    bool has_off = false, has_sector = false, once = false, immediately = false;
    const cJSON *iotype = NULL;
    const struct bvj_field f[] = {
        { "event", BVJ_STRING, true, &event },
        { "errno", BVJ_U64, false, &eno, .min = 1, .max = BV_BLKDEBUG_MAX_ERRNO },
        { "state", BVJ_U64, false, &state, .max = UINT32_MAX },
        { "offset", BVJ_SIZE, false, &offset, &has_off },
        { "sector", BVJ_U64, false, &sector, &has_sector, .max = UINT64_MAX / 512 },
        { "once", BVJ_BOOL, false, &once },
        { "immediately", BVJ_BOOL, false, &immediately },
        { "iotype", BVJ_ARRAY, false, &iotype },
    };
    char where[64], inner[384];
    snprintf(where, sizeof(where), "blkdebug.inject_error[%d]", i);
    if (!cJSON_IsObject(o) || bvj_read(o, f, BVJ_COUNT(f), inner, sizeof(inner)) < 0) {
        snprintf(err, errlen, "%s: %s", where, cJSON_IsObject(o) ? inner : "an object is expected");
        return -1;
    }
    if (has_off && has_sector) {
        snprintf(err, errlen, "%s: give 'offset' or 'sector', not both", where);
        return -1;
    }
    enum bv_block_event ev;
    if (parse_event(event, &ev, where, err, errlen) < 0)
        return -1;
    struct bv_blkdebug_inject_error *r = bv_blkdebug_add_inject_error(cfg, ev);
    if (!r) {
        snprintf(err, errlen, "%s: at most %d inject_error rules", where, BV_BLKDEBUG_MAX_RULES);
        return -1;
    }
    r->error = (int)eno;
    r->state = (uint32_t)state;
    if (has_off)
        r->offset = offset;
    else if (has_sector)
        r->offset = sector * 512;
    r->once = once;
    r->immediately = immediately;
    if (iotype && parse_iotypes(iotype, &r->iotypes, where, err, errlen) < 0)
        return -1;
    return 0;
}

static int blkdebug_parse(const cJSON *obj, struct bv_blkdebug_config *cfg, char *err,
                          size_t errlen)
{
    const cJSON *ss = NULL, *ie = NULL;
    const struct bvj_field f[] = {
        { "set_state", BVJ_ARRAY, false, &ss },
        { "inject_error", BVJ_ARRAY, false, &ie },
    };
    char inner[384];
    memset(cfg, 0, sizeof(*cfg));
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errlen, "'blkdebug' must be an object");
        return -1;
    }
    if (bvj_read(obj, f, BVJ_COUNT(f), inner, sizeof(inner)) < 0) {
        snprintf(err, errlen, "blkdebug: %s", inner);
        return -1;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, ss) {
        if (parse_set_state(it, cfg, i++, err, errlen) < 0)
            return -1;
    }
    i = 0;
    cJSON_ArrayForEach(it, ie) {
        if (parse_inject(it, cfg, i++, err, errlen) < 0)
            return -1;
    }
    bv_error *e = NULL;
    if (bv_blkdebug_config_validate(cfg, &e) < 0) {
        snprintf(err, errlen, "blkdebug: %s", e ? e->msg : "invalid rules");
        bv_error_free(e);
        return -1;
    }
    return 0;
}

static int verify_parse(const cJSON *bv, struct bv_drive_filters *out, char *err, size_t errlen)
{
    const cJSON *test = NULL, *raw = NULL;
    const struct bvj_field f[] = {
        { "test", BVJ_OBJECT, true, &test },
        { "raw", BVJ_OBJECT, true, &raw },
    };
    const char *tfile = NULL, *rfile = NULL;
    int tfmt = -1;
    const struct bvj_field tf[] = {
        { "file", BVJ_STRING, true, &tfile },
        { "format", BVJ_ENUM, false, &tfmt, .names = bv_format_names },
    };
    const struct bvj_field rf[] = {
        { "file", BVJ_STRING, true, &rfile },
    };
    char inner[384];
    if (!cJSON_IsObject(bv)) {
        snprintf(err, errlen, "'blkverify' must be an object");
        return -EINVAL;
    }
    if (bvj_read(bv, f, BVJ_COUNT(f), inner, sizeof(inner)) < 0 ||
        bvj_read(test, tf, BVJ_COUNT(tf), inner, sizeof(inner)) < 0 ||
        bvj_read(raw, rf, BVJ_COUNT(rf), inner, sizeof(inner)) < 0) {
        snprintf(err, errlen, "blkverify: %s", inner);
        return -EINVAL;
    }
    out->has_blkverify = true;
    out->test_format = tfmt >= 0 ? bv_format_from_index(tfmt) : BV_FMT_NONE;
    out->test_file = strdup(tfile);
    out->raw_file = strdup(rfile);
    if (!out->test_file || !out->raw_file) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int bv_filters_decode(const char *text, struct bv_drive_filters *out, bv_error **errp)
{
    char err[512] = "";
    int r = -EINVAL;
    memset(out, 0, sizeof(*out));
    cJSON *root = cJSON_Parse(text && *text ? text : "{}");
    if (!cJSON_IsObject(root)) {
        snprintf(err, sizeof(err), "filters must be a JSON object");
        goto out;
    }
    const cJSON *bd = cJSON_GetObjectItemCaseSensitive(root, "blkdebug");
    const cJSON *bv = cJSON_GetObjectItemCaseSensitive(root, "blkverify");
    if (bd) {
        if (blkdebug_parse(bd, &out->blkdebug, err, sizeof(err)) < 0)
            goto out;
        out->has_blkdebug = true;
    }
    r = bv ? verify_parse(bv, out, err, sizeof(err)) : 0;
out:
    cJSON_Delete(root);
    if (r < 0) {
        bv_filters_clear(out);
        bv_error_setf(errp, -r, "%s", err);
    }
    return r;
}

void bv_filters_clear(struct bv_drive_filters *f)
{
    free(f->test_file);
    free(f->raw_file);
    memset(f, 0, sizeof(*f));
}
