/*
 * The e2e tests' own view of a bucket: one request to the RADOS Gateway of
 * tests/support/rgw_env.h, signed by libcurl's SigV4 (not the service's S3
 * client, so the tests check the service against an independent reader).
 */
#ifndef BV_E2E_S3_UTIL_H
#define BV_E2E_S3_UTIL_H

#include <stddef.h>

#include "../support/rgw_env.h"

/* method "GET", "HEAD", "PUT" or "DELETE" on path "bucket/key[?query]" (body, blen: a PUT's
 * body).  Returns the HTTP status, -1 without an answer.  out (may be NULL): the reply body,
 * malloc'd (caller frees).  len (may be NULL): the body's length, for HEAD the
 * Content-Length. */
long s3u_request(const struct rgw_env *g, const char *method, const char *path,
                 const void *body, size_t blen, char **out, size_t *len);

#endif
