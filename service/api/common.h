/* Helpers shared by the API handlers: error mapping and common JSON shapes. */
#ifndef BV_API_COMMON_H
#define BV_API_COMMON_H

#include "bv/error.h"
#include "bv/image.h"
#include "http/reply.h"
#include "json/json.h"

/* Reply with a core error: status = override if > 0, else from the errno.
 * Frees e. */
void api_fail(struct bv_reply *rep, int status, int r, bv_error *e);

/* Parse the JSON body and read it against fields; on failure the 400 is
 * sent and NULL returned.  The caller deletes the returned tree. */
cJSON *api_read_body(struct bv_request *req, struct bv_reply *rep,
                     const struct bvj_field *fields, size_t n);

/* A client path (relative to the storage dir) made canonical and confined.
 * must_exist false: the parent must exist.  NULL after sending a 400. */
char *api_resolve(struct bv_request *req, struct bv_reply *rep, const char *path,
                  bool must_exist);

/* The path of an absolute canonical file relative to the storage dir
 * (pointer into abs), or abs itself when it lies elsewhere. */
const char *api_relpath(struct bv_request *req, const char *abs);

/* "qcow2" / "raw" table for BVJ_ENUM fields, indexed by enum bv_format - 1. */
extern const char *const api_format_names[];
static inline enum bv_format api_format(int idx) { return (enum bv_format)(idx + 1); }

#endif
