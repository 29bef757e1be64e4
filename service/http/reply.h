/*
 * Requests and replies as handlers see them, and the contract's error
 * envelope: {"error":{"class":"…","desc":"…"}} with the status that goes
 * with it.  The mapping from status to class lives here and nowhere else.
 */
#ifndef BV_HTTP_REPLY_H
#define BV_HTTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct bv_app;
struct MHD_Connection;

#define BV_MAX_ROUTE_PARAMS 4

struct bv_request {
    struct bv_app *app;
    struct MHD_Connection *conn;
    const char *method;
    const char *path;              /* decoded path, without the query */
    const char *body;              /* NUL-terminated copy (may contain NULs for binary) */
    size_t body_len;
    const char *params[BV_MAX_ROUTE_PARAMS];   /* captures of {name} in route order */
    unsigned nparams;
};

struct bv_reply {
    int status;
    const char *content_type;      /* static string */
    char *body;                    /* malloc'd, owned by the reply */
    size_t len;
    char location[256];            /* optional Location header */
    /* streaming replies (SSE, large reads): if set, the server uses it */
    long (*stream)(void *cls, uint64_t pos, char *buf, size_t max);
    void (*stream_free)(void *cls);
    void *stream_cls;
};

/* Query-string value, or NULL. */
const char *bv_req_query(const struct bv_request *req, const char *key);
/* A header value, or NULL. */
const char *bv_req_header(const struct bv_request *req, const char *key);

/* true once the client has closed or reset its connection: long work for
 * this request should stop (nobody will read the reply). */
bool bv_req_client_gone(const struct bv_request *req);

/* Parse the body as a JSON object; on failure sends the 400 and returns NULL. */
cJSON *bv_req_json(const struct bv_request *req, struct bv_reply *rep);

/* Reply with obj serialised (obj is consumed). */
void bv_reply_json(struct bv_reply *rep, int status, cJSON *obj);
void bv_reply_empty(struct bv_reply *rep, int status);
/* Takes ownership of buf (malloc'd). */
void bv_reply_bytes(struct bv_reply *rep, int status, const char *ctype, char *buf, size_t len);

/* The error envelope.  class NULL picks the default for the status:
 * 401 AuthenticationError, 404 NotFound, 500 InternalError, else GenericError. */
void bv_reply_error(struct bv_reply *rep, int status, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The envelope plus "report_id" inside "error" (NULL: none): an I/O error
 * that filed a corruption report names it, so a client can fetch it. */
void bv_reply_error_report(struct bv_reply *rep, int status, const char *cls,
                           const char *report_id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
