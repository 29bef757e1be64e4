/*
 * Strict JSON reading at the service's edge.  A request body is read with
 * one table of fields: unknown fields are refused (a typo must never
 * silently change a backup), types are checked, numbers range-checked and
 * enum strings turned into integers once, here.  Messages follow QMP's
 * wording so that QEMU users recognise them.
 *
 * Numbers: JSON integers up to 2^53 are exact; larger sizes may be given as
 * strings with a suffix ("64T") where a field is BVJ_SIZE.
 */
#ifndef BV_SERVICE_JSON_H
#define BV_SERVICE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

enum bvj_type {
    BVJ_STRING,    /* out: const char ** (borrowed from the cJSON tree) */
    BVJ_BOOL,      /* out: bool * */
    BVJ_U64,       /* out: uint64_t *; a JSON integer in [min, max] */
    BVJ_SIZE,      /* out: uint64_t *; an integer, or a string "64M" (k/K, M, G, T: powers of 1024) */
    BVJ_ENUM,      /* out: int *; a string that must be one of names[] (NULL-terminated) */
    BVJ_OBJECT,    /* out: const cJSON ** */
    BVJ_ARRAY,     /* out: const cJSON ** */
    BVJ_ANY,       /* out: const cJSON ** */
};

struct bvj_field {
    const char *name;
    enum bvj_type type;
    bool required;
    void *out;                   /* left untouched when the field is absent */
    bool *present;               /* optional: set to whether the field was given */
    uint64_t min, max;           /* BVJ_U64 / BVJ_SIZE; max 0 = UINT64_MAX */
    const char *const *names;    /* BVJ_ENUM */
};

/* Parse text as a JSON object.  NULL on failure, with err filled: besides
 * malformed JSON, a NUL byte, invalid UTF-8, a \u0000 escape in a string and
 * a key given twice in one object are refused. */
cJSON *bvj_parse_object(const char *text, size_t len, char *err, size_t errlen);

/* Read obj against fields[n].  Returns 0, or -1 with err filled (400). */
int bvj_read(const cJSON *obj, const struct bvj_field *fields, size_t n,
             char *err, size_t errlen);

/* "64M" → 67108864; also plain decimal.  Returns -1 on a malformed or
 * overflowing value. */
int bvj_parse_size(const char *s, uint64_t *out);

/* true if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code
 * points past U+10FFFF). */
bool bvj_utf8_valid(const char *s, size_t n);

/* Index of s in a NULL-terminated names table, or -1. */
int bvj_enum_index(const char *const *names, const char *s);

#define BVJ_COUNT(a) (sizeof(a) / sizeof((a)[0]))

#endif
