/*
 * Strict JSON reading: see json.h.  Before cJSON sees a body it is checked
 * for what cJSON would silently accept and C strings would then change: raw
 * NUL bytes, bytes that are not UTF-8 (they would be echoed back as invalid
 * JSON) and \u0000 escapes (a name would end at the NUL).  After parsing,
 * every object is checked for duplicate keys (cJSON keeps both and lookups
 * find the first).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define MAX_EXACT_DOUBLE 9007199254740992.0   /* 2^53 */

/* Length of the UTF-8 sequence starting at p (at most n bytes), 0 if invalid:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (len > n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/* Offset of the first byte that is not part of valid UTF-8, or n. */
static size_t utf8_invalid_at(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0)
            return i;
        i += k;
    }
    return n;
}

bool bvj_utf8_valid(const char *s, size_t n)
{
    return utf8_invalid_at(s, n) == n;
}

/* Offset of a \u0000 escape inside a string, or len. */
static size_t find_nul_escape(const char *text, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '"') {
            in_string = !in_string;
        } else if (in_string && text[i] == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0)
                return i;
            i++;                   /* skip the escaped character */
        }
    }
    return len;
}

/* The raw text's checks; 0 or -1 with err filled. */
static int check_text(const char *text, size_t len, char *err, size_t errlen)
{
    const char *nul = memchr(text, '\0', len);
    size_t bad;
    if (nul) {
        snprintf(err, errlen, "request body contains a NUL byte at byte %zu", (size_t)(nul - text));
        return -1;
    }
    if ((bad = utf8_invalid_at(text, len)) != len) {
        snprintf(err, errlen, "request body is not valid UTF-8 (at byte %zu)", bad);
        return -1;
    }
    if ((bad = find_nul_escape(text, len)) != len) {
        snprintf(err, errlen, "JSON strings must not contain NUL (\\u0000, at byte %zu)", bad);
        return -1;
    }
    return 0;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* The first key that appears twice in one object of the tree, or NULL.
 * Sorting the keys keeps an object with many keys O(n log n). */
static const char *duplicate_key(const cJSON *node, int depth)
{
    const cJSON *it;
    const char *dup = NULL;
    if (cJSON_IsObject(node) && node->child) {
        size_t n = 0, i = 0;
        cJSON_ArrayForEach(it, node)
            n++;
        const cJSON **keys = malloc(n * sizeof(*keys));
        if (!keys)
            return NULL;
        cJSON_ArrayForEach(it, node)
            keys[i++] = it;
        qsort(keys, n, sizeof(*keys), key_cmp);
        for (i = 1; i < n && !dup; i++)
            if (strcmp(keys[i - 1]->string, keys[i]->string) == 0)
                dup = keys[i]->string;
        free(keys);
    }
    if (depth < CJSON_NESTING_LIMIT)
        for (it = node->child; it && !dup; it = it->next)
            dup = duplicate_key(it, depth + 1);
    return dup;
}

cJSON *bvj_parse_object(const char *text, size_t len, char *err, size_t errlen)
{
    while (text && len && text[len - 1] == '\0')    /* a terminator passed in the length */
        len--;
    if (!text || len == 0) {
        snprintf(err, errlen, "request body is empty; a JSON object is expected");
        return NULL;
    }
    if (check_text(text, len, err, errlen) < 0)
        return NULL;
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!obj) {
        size_t at = end ? (size_t)(end - text) : 0;
        snprintf(err, errlen, "malformed JSON near byte %zu", at);
        return NULL;
    }
    /* nothing but white space may follow the value */
    for (const char *p = end; p && p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '\0') {
            cJSON_Delete(obj);
            snprintf(err, errlen, "malformed JSON: trailing data after the object");
            return NULL;
        }
    }
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        snprintf(err, errlen, "a JSON object is expected");
        return NULL;
    }
    const char *dup = duplicate_key(obj, 0);
    if (dup) {
        snprintf(err, errlen, "duplicate key '%s' in a JSON object", dup);
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

int bvj_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: return -1;
    }
    if (*end == 'B' || *end == 'b')       /* "64MB" reads as 64M too */
        end++;
    if (*end)
        return -1;
    if (v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int bvj_enum_index(const char *const *names, const char *s)
{
    for (int i = 0; names && names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

static const struct bvj_field *find_field(const struct bvj_field *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

static int number_u64(const cJSON *it, uint64_t *v)
{
    double d = it->valuedouble;
    if (!cJSON_IsNumber(it) || d < 0 || d != floor(d) || d > MAX_EXACT_DOUBLE)
        return -1;
    *v = (uint64_t)d;
    return 0;
}

static int read_number(const cJSON *it, const struct bvj_field *f, char *err, size_t errlen)
{
    uint64_t v;
    uint64_t max = f->max ? f->max : UINT64_MAX;
    if (cJSON_IsNumber(it)) {
        if (number_u64(it, &v) < 0) {
            snprintf(err, errlen, "Parameter '%s' expects a non-negative integer", f->name);
            return -1;
        }
    } else if (f->type == BVJ_SIZE && cJSON_IsString(it)) {
        if (bvj_parse_size(it->valuestring, &v) < 0) {
            snprintf(err, errlen, "Parameter '%s' expects a size (bytes, or a number with "
                     "suffix k, M, G or T)", f->name);
            return -1;
        }
    } else {
        snprintf(err, errlen, "Invalid parameter type for '%s', expected: %s", f->name,
                 f->type == BVJ_SIZE ? "size" : "integer");
        return -1;
    }
    if (v < f->min || v > max) {
        snprintf(err, errlen, "Parameter '%s' is out of range (%llu..%llu)", f->name,
                 (unsigned long long)f->min, (unsigned long long)max);
        return -1;
    }
    *(uint64_t *)f->out = v;
    return 0;
}

static int type_error(const struct bvj_field *f, const char *want, char *err, size_t errlen)
{
    snprintf(err, errlen, "Invalid parameter type for '%s', expected: %s", f->name, want);
    return -1;
}

static int read_one(const cJSON *it, const struct bvj_field *f, char *err, size_t errlen)
{
    switch (f->type) {
    case BVJ_STRING:
        if (!cJSON_IsString(it))
            return type_error(f, "string", err, errlen);
        *(const char **)f->out = it->valuestring;
        return 0;
    case BVJ_BOOL:
        if (!cJSON_IsBool(it))
            return type_error(f, "boolean", err, errlen);
        *(bool *)f->out = cJSON_IsTrue(it);
        return 0;
    case BVJ_U64:
    case BVJ_SIZE:
        return read_number(it, f, err, errlen);
    case BVJ_ENUM: {
        if (!cJSON_IsString(it))
            return type_error(f, "string", err, errlen);
        int i = bvj_enum_index(f->names, it->valuestring);
        if (i < 0) {
            snprintf(err, errlen, "Parameter '%s' does not accept value '%s'", f->name,
                     it->valuestring);
            return -1;
        }
        *(int *)f->out = i;
        return 0;
    }
    case BVJ_OBJECT:
        if (!cJSON_IsObject(it))
            return type_error(f, "object", err, errlen);
        break;
    case BVJ_ARRAY:
        if (!cJSON_IsArray(it))
            return type_error(f, "array", err, errlen);
        break;
    case BVJ_ANY:
        break;
    }
    *(const cJSON **)f->out = it;
    return 0;
}

int bvj_read(const cJSON *obj, const struct bvj_field *fields, size_t n,
             char *err, size_t errlen)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        if (!find_field(fields, n, it->string)) {
            snprintf(err, errlen, "Parameter '%s' is unexpected", it->string);
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct bvj_field *f = &fields[i];
        it = cJSON_GetObjectItemCaseSensitive(obj, f->name);
        if (f->present)
            *f->present = it != NULL && !cJSON_IsNull(it);
        if (!it || cJSON_IsNull(it)) {
            if (f->required) {
                snprintf(err, errlen, "Parameter '%s' is missing", f->name);
                return -1;
            }
            continue;
        }
        if (read_one(it, f, err, errlen) < 0)
            return -1;
    }
    return 0;
}
