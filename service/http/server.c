/*
 * libmicrohttpd glue: see server.h.  One struct conn per request holds the
 * matched route, the body as it arrives and the capture scratch space.
 *
 * Order of checks, all on the headers (the first call of the access
 * handler), before any body byte is accepted: auth (every /api and
 * /metrics path, known or not: 401), then the URL's strings (no NUL, UTF-8),
 * then routing (404/405), the token's role against the route's (403), the
 * route's query names (router.h), then the body's declared size.  A request
 * refused there is answered at once and its body is never read or buffered.
 *
 * Connection slots: a total of BV_MAX_CONNECTIONS, at most
 * BV_MAX_CONNECTIONS_PER_ADDRESS of them for one non-loopback address
 * (counted from libmicrohttpd's connection start/close notifications,
 * checked in its accept policy), and BV_CONNECTION_TIMEOUT_S of silence
 * closes a connection, so sockets that never finish their headers cannot
 * hold the slots that health checks and authenticated clients need.
 * Loopback addresses are counted only in the total: a local attacker is the
 * machine's own user, and every local client shares 127.0.0.1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "app.h"
#include "bv/lock.h"
#include "http/auth.h"
#include "http/router.h"
#include "http/server.h"
#include "http/tls.h"
#include "json/json.h"
#include "log.h"

/* Connections from one address, while it has any open. */
struct addr_slot {
    uint8_t addr[16];              /* IPv6, or IPv4 mapped into ::ffff:0:0/96 */
    unsigned n;
};

/* Per socket (libmicrohttpd's socket_context). */
struct sock {
    uint8_t addr[16];
    bool counted;                  /* in the per-address table (not loopback) */
    bool url_nul;                  /* the current request's URL decoded a %00 */
};

struct bv_http {
    struct bv_app *app;
    struct MHD_Daemon *mhd;
    struct bv_tls tls;             /* cert/key PEM when serving HTTPS (tls.cert_pem NULL: plain) */
    /* bytes of request bodies buffered across all connections (atomic): a
     * ceiling so that many large uploads at once cannot exhaust memory */
    atomic_size_t buffered;
    bv_mutex addr_lock;            /* guards addrs, naddrs */
    struct addr_slot addrs[BV_MAX_CONNECTIONS];
    unsigned naddrs;
};

struct conn {
    const struct bv_route *route;
    enum bv_route_match match;
    size_t limit;
    char *body;
    size_t len, cap;
    bool too_large;
    bool over_budget;              /* the server-wide body budget was exhausted */
    bool replied;                  /* answered on the headers; the body is ignored */
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
    if (!*end && n > c->limit)
        c->too_large = true;
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
    if (rep->status == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ok = MHD_queue_response(mc, (unsigned)rep->status, r);
    MHD_destroy_response(r);
    return ok;
}

/* /api (and everything under it) and /metrics need the token; the web UI's
 * static files do not.  Decided on the path alone, before routing, so that
 * an unknown API path is a 401 too. */
static bool needs_auth(const char *path)
{
    return strcmp(path, "/metrics") == 0 || strcmp(path, "/api") == 0 ||
           strncmp(path, "/api/", 5) == 0;
}

/* Who is asking (the configured admin token or a scoped one); false: rep
 * holds the 401. */
static bool authenticate(struct bv_http *h, struct bv_request *req, enum bv_role *role,
                         struct bv_reply *rep)
{
    switch (bv_auth_check(h->app, bv_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION), role)) {
    case BV_AUTH_PASS:
        return true;
    case BV_AUTH_EXPIRED:
        bv_reply_error(rep, 401, "AuthenticationError", "the token has expired");
        return false;
    default:
        bv_reply_error(rep, 401, "AuthenticationError",
                       "a valid 'Authorization: Bearer <token>' header is required");
        return false;
    }
}

struct args_check {
    bool bad;
    char key[64];
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    struct args_check *a = cls;
    (void)kind;
    if (bvj_utf8_valid(key, key_size) && (!value || bvj_utf8_valid(value, value_size)))
        return MHD_YES;
    a->bad = true;
    snprintf(a->key, sizeof(a->key), "%s", bvj_utf8_valid(key, key_size) ? key : "?");
    return MHD_NO;
}

/* The URL's strings: a %00 anywhere, or bytes that are not UTF-8, would
 * silently change a name (C strings end at the NUL) or come back as invalid
 * JSON in an error text. */
static bool url_ok(struct conn *c, struct MHD_Connection *mc, struct sock *sk,
                   struct bv_reply *rep)
{
    struct args_check a = { .bad = false };
    if (sk && sk->url_nul) {
        bv_reply_error(rep, 400, NULL, "the URL contains an encoded NUL byte (%%00)");
        return false;
    }
    if (!bvj_utf8_valid(c->req.path, strlen(c->req.path))) {
        bv_reply_error(rep, 400, NULL, "the URL path is not valid UTF-8");
        return false;
    }
    MHD_get_connection_values_n(mc, MHD_GET_ARGUMENT_KIND, check_arg, &a);
    if (a.bad) {
        bv_reply_error(rep, 400, NULL, "query parameter '%s' is not valid UTF-8", a.key);
        return false;
    }
    return true;
}

/* Everything that can be decided on the headers.  true: go on reading the
 * body; false: rep holds the answer. */
static bool check_headers(struct bv_http *h, struct conn *c, struct MHD_Connection *mc,
                          struct bv_reply *rep)
{
    struct bv_request *req = &c->req;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct sock *sk = ci ? ci->socket_context : NULL;
    enum bv_role role = BV_ROLE_ADMIN;
    if (needs_auth(req->path) && !authenticate(h, req, &role, rep))
        return false;
    if (!url_ok(c, mc, sk, rep))
        return false;
    if (c->match == BV_ROUTE_NO_PATH) {
        bv_reply_error(rep, 404, "NotFound", "no such resource: %s", req->path);
        return false;
    }
    if (c->match == BV_ROUTE_NO_METHOD) {
        bv_reply_error(rep, 405, NULL, "method %s is not allowed on %s", req->method, req->path);
        return false;
    }
    if (!(c->route->flags & BV_ROUTE_PUBLIC) && role < bv_route_role(c->route)) {
        bv_reply_error(rep, 403, "Forbidden", "%s %s needs the %s role; this token is %s",
                       req->method, req->path, bv_role_name(bv_route_role(c->route)),
                       bv_role_name(role));
        return false;
    }
    return bv_route_query_ok(c->route, req, rep);
}

static void dispatch(struct conn *c, struct bv_reply *rep)
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
    req->body = c->body;
    req->body_len = c->len;
    c->route->handler(req, rep);
}

static enum MHD_Result answer(struct bv_http *h, struct MHD_Connection *mc, struct bv_reply *rep)
{
    atomic_fetch_add(&h->app->http_requests, 1);
    enum MHD_Result ok = send_reply(mc, rep);
    free(rep->body);
    return ok;
}

/* First call for a request: the headers are complete, no body yet. */
static enum MHD_Result on_headers(struct bv_http *h, struct MHD_Connection *mc, const char *url,
                                  const char *method, void **con_cls)
{
    struct conn *c = calloc(1, sizeof(*c));
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
    *con_cls = c;
    struct bv_reply rep = { .status = 500 };
    if (check_headers(h, c, mc, &rep)) {
        presize(c, mc);
        if (!c->too_large)
            return MHD_YES;
        bv_reply_error(&rep, 413, NULL, "request body exceeds the limit of %zu bytes", c->limit);
    }
    c->replied = true;
    return answer(h, mc, &rep);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    struct bv_http *h = cls;
    struct conn *c = *con_cls;
    (void)version;
    if (!c)
        return on_headers(h, mc, url, method, con_cls);
    if (c->replied) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        int r = body_append(c, upload, *upload_size);
        *upload_size = 0;
        return r < 0 ? MHD_NO : MHD_YES;
    }
    struct bv_reply rep = { .status = 500 };
    dispatch(c, &rep);
    return answer(h, mc, &rep);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)toe;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct sock *sk = ci ? ci->socket_context : NULL;
    if (sk)
        sk->url_nul = false;       /* the next request on this socket starts clean */
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

/* ---- connection slots per address ---- */

static void addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
}

static bool key_is_loopback(const uint8_t key[16])
{
    static const uint8_t v6_loop[16] = { [15] = 1 };
    static const uint8_t v4_prefix[12] = { [10] = 0xff, [11] = 0xff };
    return memcmp(key, v6_loop, 16) == 0 || (memcmp(key, v4_prefix, 12) == 0 && key[12] == 127);
}

static struct addr_slot *find_addr_locked(struct bv_http *h, const uint8_t key[16])
{
    BV_ASSERT_HELD(&h->addr_lock);
    for (unsigned i = 0; i < h->naddrs; i++)
        if (memcmp(h->addrs[i].addr, key, 16) == 0)
            return &h->addrs[i];
    return NULL;
}

static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct bv_http *h = cls;
    uint8_t key[16];
    (void)addrlen;
    addr_key(addr, key);
    if (key_is_loopback(key))
        return MHD_YES;
    bv_mutex_lock(&h->addr_lock);
    struct addr_slot *s = find_addr_locked(h, key);
    bool ok = !s || s->n < BV_MAX_CONNECTIONS_PER_ADDRESS;
    bv_mutex_unlock(&h->addr_lock);
    return ok ? MHD_YES : MHD_NO;
}

static void count_locked(struct bv_http *h, struct sock *sk, bool open)
{
    BV_ASSERT_HELD(&h->addr_lock);
    struct addr_slot *s = find_addr_locked(h, sk->addr);
    if (open) {
        if (!s && h->naddrs < BV_MAX_CONNECTIONS) {
            s = &h->addrs[h->naddrs++];
            memcpy(s->addr, sk->addr, 16);
            s->n = 0;
        }
        if (s) {
            s->n++;
            sk->counted = true;
        }
    } else if (s && sk->counted && --s->n == 0) {
        *s = h->addrs[--h->naddrs];
    }
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct bv_http *h = cls;
    struct sock *sk = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        sk = calloc(1, sizeof(*sk));
        if (!sk)
            return;
        addr_key(ci ? ci->client_addr : NULL, sk->addr);
        if (!key_is_loopback(sk->addr)) {
            bv_mutex_lock(&h->addr_lock);
            count_locked(h, sk, true);
            bv_mutex_unlock(&h->addr_lock);
        }
        *socket_context = sk;
        return;
    }
    if (!sk)
        return;
    bv_mutex_lock(&h->addr_lock);
    count_locked(h, sk, false);
    bv_mutex_unlock(&h->addr_lock);
    free(sk);
    *socket_context = NULL;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* %HH decoding as libmicrohttpd's default, noting a decoded NUL on the
 * socket so that the request can be refused instead of truncated. */
static size_t unescape(void *cls, struct MHD_Connection *mc, char *s)
{
    (void)cls;
    char *w = s;
    bool nul = false;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 && (lo = hex_value(r[2])) >= 0) {
            *w = (char)(hi << 4 | lo);
            nul |= *w == '\0';
            w++;
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    if (nul) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        if (ci && ci->socket_context)
            ((struct sock *)ci->socket_context)->url_nul = true;
    }
    return (size_t)(w - s);
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
    int tls = bv_tls_load(&app->cfg, &h->tls, err, errlen);
    if (tls > 0 && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, errlen, "this libmicrohttpd was built without TLS support");
        tls = -1;
    }
    if (tls < 0) {
        bv_tls_free(&h->tls);
        free(h);
        return NULL;
    }
    struct MHD_OptionItem tls_opts[] = {
        { MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls.key_pem },
        { MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls.cert_pem },
        { MHD_OPTION_END, 0, NULL },
    };
    bv_mutex_init(&h->addr_lock);
    /* poll, not select: with 1024 connections descriptors pass FD_SETSIZE */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_USE_ITC | (v6 ? MHD_USE_IPv6 : 0) |
                     (tls ? MHD_USE_TLS : 0);
    h->mhd = MHD_start_daemon(flags, app->cfg.port, on_accept, h, on_request, h,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)BV_MAX_CONNECTIONS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)BV_CONNECTION_TIMEOUT_S,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                              MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                              MHD_OPTION_ARRAY, tls ? tls_opts : tls_opts + 2,
                              MHD_OPTION_END);
    if (!h->mhd) {
        bv_mutex_destroy(&h->addr_lock);
        bv_tls_free(&h->tls);
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
    bv_mutex_destroy(&h->addr_lock);
    bv_tls_free(&h->tls);
    free(h);
}

const char *bv_http_tls_fingerprint(const struct bv_http *h)
{
    return h && h->tls.cert_pem ? h->tls.fingerprint : NULL;
}
