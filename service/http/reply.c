/* Replies and the error envelope: see reply.h. */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "http/reply.h"
#include "json/json.h"

const char *bv_req_query(const struct bv_request *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *bv_req_header(const struct bv_request *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, key);
}

bool bv_req_client_gone(const struct bv_request *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    /* the peer's FIN shows as RDHUP, a reset as ERR/HUP; pending request
     * bytes (POLLIN alone) are not a disconnect */
    struct pollfd p = { .fd = ci->connect_fd, .events = POLLRDHUP };
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

cJSON *bv_req_json(const struct bv_request *req, struct bv_reply *rep)
{
    char err[256];
    cJSON *obj = bvj_parse_object(req->body, req->body_len, err, sizeof(err));
    if (!obj)
        bv_reply_error(rep, 400, NULL, "%s", err);
    return obj;
}

static void set_body(struct bv_reply *rep, int status, const char *ctype, char *buf, size_t len)
{
    free(rep->body);
    rep->status = status;
    rep->content_type = ctype;
    rep->body = buf;
    rep->len = len;
}

void bv_reply_json(struct bv_reply *rep, int status, cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) {
        bv_reply_error(rep, 500, NULL, "out of memory while encoding the reply");
        return;
    }
    set_body(rep, status, "application/json", text, strlen(text));
}

void bv_reply_empty(struct bv_reply *rep, int status)
{
    set_body(rep, status, NULL, NULL, 0);
}

void bv_reply_bytes(struct bv_reply *rep, int status, const char *ctype, char *buf, size_t len)
{
    set_body(rep, status, ctype, buf, len);
}

static const char *default_class(int status)
{
    switch (status) {
    case 401: return "AuthenticationError";
    case 404: return "NotFound";
    case 500: return "InternalError";
    default:  return "GenericError";
    }
}

/* Length of the UTF-8 sequence s[0] starts (by its lead byte), 0 if none. */
static size_t utf8_seq_len(unsigned char c)
{
    return c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
         : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
}

/* An error text quotes what a client sent and is cut to fit buffers on the
 * way (bvj_read's, the router's, desc), possibly inside a UTF-8 sequence:
 * every byte that does not start a valid sequence becomes '?', so the reply
 * stays valid JSON (found by fuzz_json_body). */
static void utf8_scrub(char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len((unsigned char)s[i]);
        if (k && k <= n - i && bvj_utf8_valid(s + i, k)) {
            i += k;
        } else {
            s[i++] = '?';
        }
    }
}

static void reply_error_v(struct bv_reply *rep, int status, const char *cls,
                          const char *report_id, const char *fmt, va_list ap)
{
    char desc[1024];
    vsnprintf(desc, sizeof(desc), fmt, ap);
    utf8_scrub(desc);
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "class", cls ? cls : default_class(status));
    cJSON_AddStringToObject(e, "desc", desc);
    if (report_id)
        cJSON_AddStringToObject(e, "report_id", report_id);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) {
        static const char oom[] = "{\"error\":{\"class\":\"InternalError\",\"desc\":\"out of memory\"}}";
        text = strdup(oom);
        status = 500;
    }
    set_body(rep, status, "application/json", text, text ? strlen(text) : 0);
}

void bv_reply_error(struct bv_reply *rep, int status, const char *cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(rep, status, cls, NULL, fmt, ap);
    va_end(ap);
}

void bv_reply_error_report(struct bv_reply *rep, int status, const char *cls,
                           const char *report_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(rep, status, cls, report_id, fmt, ap);
    va_end(ap);
}
