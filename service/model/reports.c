/* Report records as JSON text: see model/reports.h. */
#include <cjson/cJSON.h>

#include "model/reports.h"

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
