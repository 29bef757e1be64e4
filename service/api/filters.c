/*
 * blkdebug rules from JSON, with QEMU's names and defaults (qemu-semantics
 * §7): the state machine starts at 1, a missing state means any state,
 * errno defaults to 5, offset is a byte offset in the image file (QEMU's
 * sector × 512; "sector" is accepted too), an unknown event is refused.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api/filters.h"
#include "json/json.h"

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

int api_blkdebug_parse(const cJSON *obj, struct bv_blkdebug_config *cfg, char *err,
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
