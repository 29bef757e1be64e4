/*
 * fuzz_json_body: libFuzzer target for what a client's request text goes
 * through before any handler acts on it, without a running server: the
 * strict JSON layer (service/json/json.h: parse, field tables of every
 * type, sizes, UTF-8), the filter model (service/model/filters.h: the
 * blkdebug and blkverify JSON a drive is created and restored with), the
 * qemu-io command parser behind POST …/io (bv/iocmd.h), and the router
 * with its query rules (http/router.h, over the service's real table).
 *
 * Input: byte 0 picks the path; the rest is the text (made NUL-terminated;
 * the parsers are given its length where they take one, so an embedded NUL
 * must be refused, not truncated).
 *
 * Oracles, beyond "no crash, no sanitizer report, no leak":
 *   - every error text a client would get back is put in the service's
 *     error envelope (bv_reply_error), and that reply must parse with the
 *     strict parser: echoing a client's bad bytes must never make invalid
 *     JSON (issue 9, defect 7);
 *   - what the strict parser accepts, printed by cJSON, parses again.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bv/iocmd.h"
#include "http/reply.h"
#include "http/router.h"
#include "json/json.h"
#include "model/filters.h"

/* The buffers the service formats these texts into (bv_req_json,
 * api_read_body, bv_route_query_ok), so truncation happens where it would. */
#define PARSE_ERR_LEN 256
#define ERR_LEN 512
#define QUERY_ERR_LEN 400

static __attribute__((noreturn)) void fail(const char *what, const char *text)
{
    fprintf(stderr, "fuzz_json_body: %s: %s\n", what, text ? text : "(null)");
    abort();
}

/* Reparse strictly; the text must be a JSON object. */
static void must_parse(const char *what, const char *text, size_t len)
{
    char err[PARSE_ERR_LEN];
    cJSON *o = bvj_parse_object(text, len, err, sizeof(err));
    if (!o)
        fail(what, err);
    cJSON_Delete(o);
}

/* The error envelope a client would get for msg is valid JSON. */
static void echo(const char *msg)
{
    struct bv_reply rep;
    memset(&rep, 0, sizeof(rep));
    bv_reply_error(&rep, 400, NULL, "%s", msg);
    if (!rep.body)
        fail("no error reply", msg);
    must_parse("error reply is not strict JSON", rep.body, rep.len);
    free(rep.body);
}

/* ---- bodies read with field tables ---- */

static const char *const names[] = { "raw", "qcow2", "blkverify", NULL };

/* One table with every field type, shaped like the API's bodies. */
static void read_generic(const cJSON *o)
{
    const char *s = NULL;
    bool b = false, have_size = false;
    uint64_t u = 0, z = 0;
    int e = -1;
    const cJSON *obj = NULL, *arr = NULL, *any = NULL;
    const struct bvj_field f[] = {
        { "id", BVJ_STRING, true, &s },
        { "existing", BVJ_BOOL, false, &b },
        { "cluster_size", BVJ_U64, false, &u, .min = 512, .max = 2u << 20 },
        { "size", BVJ_SIZE, false, &z, &have_size, 1, 1ULL << 56 },
        { "format", BVJ_ENUM, false, &e, .names = names },
        { "blkdebug", BVJ_OBJECT, false, &obj },
        { "commands", BVJ_ARRAY, false, &arr },
        { "granularity", BVJ_ANY, false, &any },
    };
    char err[ERR_LEN];
    if (bvj_read(o, f, BVJ_COUNT(f), err, sizeof(err)) < 0) {
        echo(err);
        return;
    }
    /* nested sides, as POST /images/compare reads "a" and "b" */
    if (obj) {
        const char *file = NULL;
        int fmt = -1;
        const struct bvj_field side[] = {
            { "file", BVJ_STRING, true, &file },
            { "format", BVJ_ENUM, false, &fmt, .names = names },
        };
        if (bvj_read(obj, side, BVJ_COUNT(side), err, sizeof(err)) < 0)
            echo(err);
    }
}

/* The commands array of POST …/io, each through the qemu-io parser. */
static void read_commands(const cJSON *arr)
{
    const cJSON *it;
    int n = 0;
    cJSON_ArrayForEach(it, arr) {
        if (++n > 64)
            break;
        if (!cJSON_IsString(it))
            continue;
        struct bv_iocmd cmd;
        bv_error *err = NULL;
        if (bv_iocmd_parse(it->valuestring, &cmd, &err) < 0)
            echo(err ? err->msg : "no message");
        bv_error_free(err);
    }
}

static void body(const char *text, size_t len)
{
    char err[PARSE_ERR_LEN];
    cJSON *o = bvj_parse_object(text, len, err, sizeof(err));
    if (!o) {
        echo(err);
        return;
    }
    char *printed = cJSON_PrintUnformatted(o);
    if (printed)
        must_parse("printed body does not reparse", printed, strlen(printed));
    free(printed);
    read_generic(o);
    read_commands(cJSON_GetObjectItemCaseSensitive(o, "commands"));
    cJSON_Delete(o);
}

/* ---- the filter model ---- */

static void filters(const char *text, size_t len)
{
    struct bv_drive_filters f;
    bv_error *err = NULL;
    if (!bvj_utf8_valid(text, len))
        return;                  /* catalog text is what cJSON printed from a strict body */
    if (bv_filters_decode(text, &f, &err) < 0)
        echo(err ? err->msg : "no message");
    bv_error_free(err);
    bv_filters_clear(&f);
}

/* ---- qemu-io command lines, one per line (as strings of a body's "commands") ---- */

static void iocmds(char *text)
{
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        struct bv_iocmd cmd;
        bv_error *err = NULL;
        if (!bvj_utf8_valid(line, strlen(line)))
            continue;                    /* a JSON string's text is UTF-8 */
        if (bv_iocmd_parse(line, &cmd, &err) < 0)
            echo(err ? err->msg : "no message");
        bv_error_free(err);
    }
}

/* ---- the router: "METHOD PATH[?k=v&k=v]" ---- */

static void route(char *text)
{
    char *sp = strchr(text, ' ');
    if (!sp)
        return;
    *sp = '\0';
    char *path = sp + 1, *query = strchr(path, '?');
    if (query)
        *query++ = '\0';
    if (!bvj_utf8_valid(path, strlen(path)))
        return;                          /* the server refuses these first */
    struct bv_request req;
    memset(&req, 0, sizeof(req));
    const struct bv_route *rt = NULL;
    char scratch[1024];
    if (bv_route_find(bv_routes, bv_nroutes, text, path, &req, &rt, scratch, sizeof(scratch))
        != BV_ROUTE_FOUND || !query)
        return;
    uint32_t seen = 0;
    for (char *save = NULL, *arg = strtok_r(query, "&", &save); arg;
         arg = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(arg, '='), msg[QUERY_ERR_LEN];
        if (eq)
            *eq++ = '\0';
        if (!bvj_utf8_valid(arg, strlen(arg)) || (eq && !bvj_utf8_valid(eq, strlen(eq))))
            break;                       /* the server refuses these first */
        if (!bv_route_query_arg(rt, arg, eq, &seen, msg, sizeof(msg))) {
            echo(msg);
            break;
        }
    }
}

/* ---- sizes and UTF-8 ---- */

static void scalars(const char *text, size_t len)
{
    uint64_t v;
    bvj_parse_size(text, &v);
    bvj_utf8_valid(text, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    size_t len = size - 1;
    char *text = malloc(len + 1);
    if (!text)
        return 0;
    memcpy(text, data + 1, len);
    text[len] = '\0';
    switch (data[0] % 5) {
    case 0: body(text, len); break;
    case 1: filters(text, len); break;
    case 2: iocmds(text); break;
    case 3: route(text); break;
    default: scalars(text, len); break;
    }
    free(text);
    return 0;
}
