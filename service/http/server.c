/*
 * libmicrohttpd glue: see server.h.  One struct conn per request holds the
 * matched route, the body as it arrives and the capture scratch space.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "app.h"
#include "http/auth.h"
#include "http/router.h"
#include "http/server.h"
#include "log.h"

struct bv_http {
    struct bv_app *app;
    struct MHD_Daemon *mhd;
    /* bytes of request bodies buffered across all connections (atomic): a
     * ceiling so that many large uploads at once cannot exhaust memory */
    atomic_size_t buffered;
};

struct conn {
    const struct bv_route *route;
    enum bv_route_match match;
    size_t limit;
    char *body;
    size_t len, cap;
    bool too_large;
    bool over_budget;              /* the server-wide body budget was exhausted */
    struct bv_http *http;
    struct bv_request req;
    char scratch[4096];
};

/* Reserve grow bytes of the server-wide budget for c's buffer. */
static bool reserve(struct conn *c, size_t grow)
{
    size_t cur = atomic_fetch_add(&c->http->buffered, grow);
    if (cur + grow > BV_MAX_BUFFERED_BODIES) {
        atomic_fetch_sub(&c->http->buffered, grow);
        c->over_budget = true;
        return false;
    }
    return true;
}

static int grow_body(struct conn *c, size_t need)
{
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < need)
        cap *= 2;
    if (cap > c->limit + 1)
        cap = c->limit + 1;
    if (!reserve(c, cap - c->cap))
        return 0;
    char *b = realloc(c->body, cap);
    if (!b) {
        atomic_fetch_sub(&c->http->buffered, cap - c->cap);
        return -ENOMEM;
    }
    c->body = b;
    c->cap = cap;
    return 0;
}

static int body_append(struct conn *c, const char *data, size_t n)
{
    if (c->too_large || c->over_budget || c->len + n > c->limit) {
        c->too_large = !c->over_budget;
        return 0;
    }
    if (c->len + n + 1 > c->cap) {
        int r = grow_body(c, c->len + n + 1);
        if (r < 0 || c->over_budget)
            return r;
    }
    memcpy(c->body + c->len, data, n);
    c->len += n;
    c->body[c->len] = '\0';
    return 0;
}

/* Size the body buffer from Content-Length once, so that large uploads are
 * not copied by repeated growth.  A wrong or missing length only costs
 * reallocations; over the limit the body is discarded as it arrives. */
static void presize(struct conn *c, struct MHD_Connection *mc)
{
    const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return;
    char *end;
    unsigned long long n = strtoull(cl, &end, 10);
    if (*end || n == 0 || n > c->limit || !reserve(c, (size_t)n + 1))
        return;
    c->body = malloc((size_t)n + 1);
    if (c->body)
        c->cap = (size_t)n + 1;
    else
        atomic_fetch_sub(&c->http->buffered, (size_t)n + 1);
}

static enum MHD_Result send_reply(struct MHD_Connection *mc, struct bv_reply *rep)
{
    struct MHD_Response *r;
    if (rep->stream) {
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, rep->stream,
                                              rep->stream_cls, rep->stream_free);
    } else {
        r = MHD_create_response_from_buffer(rep->len, rep->body, MHD_RESPMEM_MUST_FREE);
        rep->body = NULL;
    }
    if (!r)
        return MHD_NO;
    if (rep->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rep->content_type);
    if (rep->location[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, rep->location);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(mc, (unsigned)rep->status, r);
    MHD_destroy_response(r);
    return ok;
}

static void dispatch(struct bv_http *h, struct conn *c, struct bv_reply *rep)
{
    struct bv_request *req = &c->req;
    if (c->over_budget) {
        bv_reply_error(rep, 503, NULL, "too many large uploads in progress; retry shortly");
        return;
    }
    if (c->too_large) {
        bv_reply_error(rep, 413, NULL, "request body exceeds the limit of %zu bytes", c->limit);
        return;
    }
    if (c->match == BV_ROUTE_NO_PATH) {
        bv_reply_error(rep, 404, "NotFound", "no such resource: %s", req->path);
        return;
    }
    if (c->match == BV_ROUTE_NO_METHOD) {
        bv_reply_error(rep, 405, NULL, "method %s is not allowed on %s", req->method, req->path);
        return;
    }
    if (!(c->route->flags & BV_ROUTE_PUBLIC) &&
        !bv_auth_ok(h->app->cfg.token, bv_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION))) {
        bv_reply_error(rep, 401, "AuthenticationError",
                       "a valid 'Authorization: Bearer <token>' header is required");
        return;
    }
    req->body = c->body;
    req->body_len = c->len;
    c->route->handler(req, rep);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    struct bv_http *h = cls;
    struct conn *c = *con_cls;
    (void)version;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        c->http = h;
        c->req.app = h->app;
        c->req.conn = mc;
        c->req.method = method;
        c->req.path = url;
        c->match = bv_route_find(bv_routes, bv_nroutes, method, url, &c->req, &c->route,
                                 c->scratch, sizeof(c->scratch));
        c->limit = (c->route && (c->route->flags & BV_ROUTE_BINARY)) ? BV_MAX_BINARY_BODY
                                                                     : BV_MAX_JSON_BODY;
        presize(c, mc);
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_size) {
        int r = body_append(c, upload, *upload_size);
        *upload_size = 0;
        return r < 0 ? MHD_NO : MHD_YES;
    }
    atomic_fetch_add(&h->app->http_requests, 1);
    struct bv_reply rep = { .status = 500 };
    dispatch(h, c, &rep);
    enum MHD_Result ok = send_reply(mc, &rep);
    free(rep.body);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)mc; (void)toe;
    struct conn *c = *con_cls;
    if (c) {
        atomic_fetch_sub(&c->http->buffered, c->cap);
        free(c->body);
        free(c);
    }
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    if (n && msg[n - 1] == '\n')
        msg[n - 1] = '\0';
    log_warn("http: %s", msg);
}

static int make_addr(const struct bv_config *cfg, struct sockaddr_storage *ss, bool *v6)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, cfg->listen_addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(cfg->port);
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, cfg->listen_addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(cfg->port);
        *v6 = true;
        return 0;
    }
    return -EINVAL;
}

struct bv_http *bv_http_start(struct bv_app *app, uint16_t *port_out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    bool v6;
    if (make_addr(&app->cfg, &ss, &v6) < 0) {
        snprintf(err, errlen, "bad listen address %s", app->cfg.listen_addr);
        return NULL;
    }
    struct bv_http *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->app = app;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC | (v6 ? MHD_USE_IPv6 : 0);
    h->mhd = MHD_start_daemon(flags, app->cfg.port, NULL, NULL, on_request, h,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)BV_MAX_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                              MHD_OPTION_END);
    if (!h->mhd) {
        snprintf(err, errlen, "cannot listen on %s:%u (address in use or not available)",
                 app->cfg.listen_addr, app->cfg.port);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = info ? info->port : app->cfg.port;
    return h;
}

void bv_http_quiesce(struct bv_http *h)
{
    if (h && h->mhd) {
        MHD_socket s = MHD_quiesce_daemon(h->mhd);
        if (s != MHD_INVALID_SOCKET)
            close(s);
    }
}

void bv_http_stop(struct bv_http *h)
{
    if (!h)
        return;
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    free(h);
}
