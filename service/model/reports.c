/* Report records as JSON text: see model/reports.h. */
#include <cjson/cJSON.h>

#include <stdio.h>

#include "bv/verify.h"
#include "model/reports.h"
#include "runtime/verify.h"

static char *print_delete(cJSON *j)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

char *bv_model_report_extents(const struct bv_blkverify_report *r)
{
    cJSON *a = cJSON_CreateArray();
    for (unsigned i = 0; a && i < r->nextents; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "offset", (double)r->extents[i].offset);
        cJSON_AddNumberToObject(e, "length", (double)r->extents[i].length);
        cJSON_AddItemToArray(a, e);
    }
    return print_delete(a);
}

char *bv_model_report_samples(const struct bv_blkverify_report *r)
{
    cJSON *a = cJSON_CreateArray();
    for (unsigned i = 0; a && i < r->nsamples; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "offset", (double)r->samples[i].offset);
        cJSON_AddStringToObject(e, "test_hex", r->samples[i].test_hex);
        cJSON_AddStringToObject(e, "reference_hex", r->samples[i].raw_hex);
        cJSON_AddItemToArray(a, e);
    }
    return print_delete(a);
}

char *bv_model_corruption_event(const char *report_id, const char *drive, uint64_t offset)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "report_id", report_id);
    cJSON_AddStringToObject(d, "drive", drive);
    cJSON_AddNumberToObject(d, "first_mismatch_offset", (double)offset);
    return print_delete(d);
}

char *bv_model_verify_extents(const struct bv_verify_extent *v, size_t n, size_t max)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n && i < max; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "offset", (double)v[i].offset);
        cJSON_AddNumberToObject(e, "length", (double)v[i].length);
        cJSON_AddItemToArray(a, e);
    }
    return print_delete(a);
}

static void hex(char *out, const uint8_t *p, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    out[2 * n] = '\0';
}

char *bv_model_verify_samples(const struct bv_model_sample *s, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        char t[33], r[33];
        unsigned len = s[i].len > 16 ? 16 : s[i].len;
        hex(t, s[i].test, len);
        hex(r, s[i].ref, len);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "offset", (double)s[i].offset);
        cJSON_AddStringToObject(e, "test_hex", t);
        if (s[i].has_ref)
            cJSON_AddStringToObject(e, "reference_hex", r);
        else
            cJSON_AddNullToObject(e, "reference_hex");
        cJSON_AddItemToArray(a, e);
    }
    return print_delete(a);
}

char *bv_model_id_array(char *const *ids, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(ids[i]));
    return print_delete(a);
}

char *bv_model_verify_event(const char *report_id, const char *job_id, const char *drive,
                            uint64_t offset)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "report_id", report_id);
    cJSON_AddStringToObject(d, "job_id", job_id);
    if (drive && drive[0])
        cJSON_AddStringToObject(d, "drive", drive);
    cJSON_AddNumberToObject(d, "first_mismatch_offset", (double)offset);
    return print_delete(d);
}

static const char *const side_kinds[] = { "drive", "backup", "file" };

static cJSON *side_json(const struct bv_verify_side *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, side_kinds[s->kind], s->name);
    if (s->kind == BV_VSIDE_FILE && s->format)
        cJSON_AddStringToObject(o, "format", s->format);
    return o;
}

char *bv_model_verify_params(const struct bv_verify_request *rq, char *const *links,
                             size_t n_links, const char *report_id)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "mode", rq->checksum ? "checksum" : "compare");
    if (rq->checksum) {
        if (rq->backup)
            cJSON_AddStringToObject(p, "backup", rq->backup);
        if (rq->drive)
            cJSON_AddStringToObject(p, "drive", rq->drive);
        cJSON *a = cJSON_AddArrayToObject(p, "links");
        for (size_t i = 0; a && i < n_links; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(links[i]));
    } else {
        cJSON_AddItemToObject(p, "test", side_json(&rq->test));
        cJSON_AddItemToObject(p, "reference", side_json(&rq->reference));
    }
    cJSON_AddStringToObject(p, "report_id", report_id);
    return print_delete(p);
}
