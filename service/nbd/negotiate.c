/*
 * Fixed newstyle negotiation (proto.md "Newstyle negotiation"): the hello,
 * the client's flags, then options until EXPORT_NAME or a successful GO.
 * Every option payload is read whole (bounded by NBD_MAX_OPTION_LEN; a
 * larger one is skipped and answered ERR_TOO_BIG) and parsed through a
 * bounded cursor, so a malformed option gets ERR_INVALID and the client may
 * go on.  The number of options is bounded too, and the whole exchange runs
 * under the connection's deadline (server.c).
 *
 * TLS: over TCP with TLS required, every option but STARTTLS and ABORT gets
 * ERR_TLS_REQD (EXPORT_NAME, which cannot carry an error, closes).  After
 * STARTTLS what was negotiated in clear (structured replies, contexts) is
 * forgotten, as the protocol requires.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nbd/nbd-int.h"
#include "nbd/proto.h"

struct cursor {
    const uint8_t *p;
    uint32_t left;
    bool bad;
};

static uint32_t get_u32(struct cursor *k)
{
    uint32_t v = 0;
    if (k->left < 4) {
        k->bad = true;
        return 0;
    }
    memcpy(&v, k->p, 4);
    k->p += 4;
    k->left -= 4;
    return be32toh(v);
}

static uint16_t get_u16(struct cursor *k)
{
    uint16_t v = 0;
    if (k->left < 2) {
        k->bad = true;
        return 0;
    }
    memcpy(&v, k->p, 2);
    k->p += 2;
    k->left -= 2;
    return be16toh(v);
}

/* A string of n bytes into out (cap bytes with the NUL); a NUL inside or a
 * string that does not fit is bad. */
static void get_str(struct cursor *k, uint32_t n, char *out, size_t cap)
{
    if (k->bad || n > k->left || n >= cap || memchr(k->p, 0, n)) {
        k->bad = true;
        out[0] = '\0';
        return;
    }
    memcpy(out, k->p, n);
    out[n] = '\0';
    k->p += n;
    k->left -= n;
}

static int reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data,
                 uint32_t len)
{
    struct nbd_opt_reply h = {
        .magic = htobe64(NBD_REP_MAGIC), .option = htobe32(opt), .type = htobe32(type),
        .len = htobe32(len),
    };
    if (nbd_conn_write(c, &h, sizeof(h)) < 0)
        return -1;
    return len ? nbd_conn_write(c, data, len) : 0;
}

static int reply_err(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *msg)
{
    return reply(c, opt, type, msg, (uint32_t)strlen(msg));
}

/* A name-carrying reply (REP_SERVER: length + name; META_CONTEXT: id + name). */
static int reply_named(struct nbd_conn *c, uint32_t opt, uint32_t type, uint32_t first,
                       const char *name)
{
    size_t n = strlen(name);
    uint8_t *buf = malloc(4 + n);
    if (!buf)
        return -1;
    uint32_t be = htobe32(first);
    memcpy(buf, &be, 4);
    memcpy(buf + 4, name, n);
    int r = reply(c, opt, type, buf, (uint32_t)(4 + n));
    free(buf);
    return r;
}

static uint16_t tx_flags(const struct nbd_export *x)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;
    if (x->read_only)
        return f | NBD_FLAG_READ_ONLY;
    return f | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
}

struct list_ctx {
    struct nbd_conn *c;
    uint32_t opt;
    int r;
};

static void list_export_cb(void *opaque, const char *name, bool ro)
{
    struct list_ctx *l = opaque;
    (void)ro;
    if (l->r == 0)
        l->r = reply_named(l->c, l->opt, NBD_REP_SERVER, (uint32_t)strlen(name), name);
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
    if (len)
        return reply_err(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
    struct list_ctx l = { c, NBD_OPT_LIST, 0 };
    nbd_export_list(c->app, list_export_cb, &l);
    return l.r < 0 ? -1 : reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int send_info(struct nbd_conn *c, uint32_t opt, const struct nbd_export *x,
                     bool want_name)
{
    struct nbd_info_export ie = {
        .type = htobe16(NBD_INFO_EXPORT), .size = htobe64(x->size), .flags = htobe16(tx_flags(x)),
    };
    struct nbd_info_block_size bs = {
        .type = htobe16(NBD_INFO_BLOCK_SIZE), .minimum = htobe32(1),
        .preferred = htobe32(4096), .maximum = htobe32(NBD_MAX_REQUEST),
    };
    if (reply(c, opt, NBD_REP_INFO, &ie, sizeof(ie)) < 0 ||
        reply(c, opt, NBD_REP_INFO, &bs, sizeof(bs)) < 0)
        return -1;
    if (want_name) {
        size_t n = strlen(x->name);
        uint8_t *buf = malloc(2 + n);
        if (!buf)
            return -1;
        uint16_t t = htobe16(NBD_INFO_NAME);
        memcpy(buf, &t, 2);
        memcpy(buf + 2, x->name, n);
        int r = reply(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + n));
        free(buf);
        if (r < 0)
            return -1;
    }
    return reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* INFO and GO.  Returns 1 when GO succeeded (transmission follows). */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, struct cursor *k)
{
    char name[NBD_NAME_MAX + 1];
    get_str(k, get_u32(k), name, sizeof(name));
    uint16_t nreq = get_u16(k);
    bool want_name = false;
    for (uint16_t i = 0; i < nreq && !k->bad; i++)
        want_name |= get_u16(k) == NBD_INFO_NAME;
    if (k->bad || k->left)
        return reply_err(c, opt, NBD_REP_ERR_INVALID, "malformed INFO/GO request");
    struct nbd_export x;
    bv_error *e = NULL;
    if (nbd_export_open(c->app, name, &x, &e) < 0) {
        int r = reply_err(c, opt, NBD_REP_ERR_UNKNOWN, e ? e->msg : "unknown export");
        bv_error_free(e);
        return r;
    }
    if (send_info(c, opt, &x, want_name) < 0) {
        nbd_export_close(c->app, &x);
        return -1;
    }
    if (opt == NBD_OPT_INFO) {
        nbd_export_close(c->app, &x);
        return 0;
    }
    c->x = x;
    c->have_export = true;
    if (strcmp(c->ctx_export, name) != 0)
        c->nctx = 0;                    /* contexts were chosen for another export */
    return 1;
}

static int opt_export_name(struct nbd_conn *c, const char *data, uint32_t len)
{
    char name[NBD_NAME_MAX + 1];
    if (len > NBD_NAME_MAX || memchr(data, 0, len))
        return -1;
    memcpy(name, data, len);
    name[len] = '\0';
    if (nbd_export_open(c->app, name, &c->x, NULL) < 0)
        return -1;                      /* the protocol's answer: close */
    c->have_export = true;
    if (strcmp(c->ctx_export, name) != 0)
        c->nctx = 0;
    struct nbd_export_name_reply r = {
        .size = htobe64(c->x.size), .flags = htobe16(tx_flags(&c->x)),
    };
    static const uint8_t zeros[124];
    if (nbd_conn_write(c, &r, sizeof(r)) < 0 ||
        (!c->no_zeroes && nbd_conn_write(c, zeros, sizeof(zeros)) < 0))
        return -1;
    return 1;
}

struct ctx_list {
    struct nbd_conn *c;
    uint32_t opt;
    int r;
};

static void list_ctx_cb(void *opaque, const char *name)
{
    struct ctx_list *l = opaque;
    if (l->r == 0)
        l->r = reply_named(l->c, l->opt, NBD_REP_META_CONTEXT, 0, name);
}

/* One query of SET: select it when it names a context of the export. */
static int set_one(struct nbd_conn *c, struct nbd_export *x, const char *q)
{
    struct nbd_ctx ctx;
    if (c->nctx >= NBD_MAX_CONTEXTS || !nbd_ctx_resolve(x, q, &ctx))
        return 0;
    for (unsigned i = 0; i < c->nctx; i++)
        if (c->ctx[i].kind == ctx.kind && strcmp(c->ctx[i].bitmap, ctx.bitmap) == 0)
            return 0;
    c->ctx[c->nctx++] = ctx;
    return reply_named(c, NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, c->nctx, q);
}

static int opt_meta(struct nbd_conn *c, uint32_t opt, struct cursor *k)
{
    if (opt == NBD_OPT_SET_META_CONTEXT && !c->structured)
        return reply_err(c, opt, NBD_REP_ERR_INVALID, "structured replies come first");
    char name[NBD_NAME_MAX + 1], q[NBD_NAME_MAX + 1];
    get_str(k, get_u32(k), name, sizeof(name));
    uint32_t nq = get_u32(k);
    struct cursor probe = *k;           /* validate every query before acting */
    for (uint32_t i = 0; i < nq && !probe.bad; i++)
        get_str(&probe, get_u32(&probe), q, sizeof(q));
    if (k->bad || probe.bad || probe.left)
        return reply_err(c, opt, NBD_REP_ERR_INVALID, "malformed meta context request");
    struct nbd_export x;
    if (nbd_export_open(c->app, name, &x, NULL) < 0)
        return reply_err(c, opt, NBD_REP_ERR_UNKNOWN, "unknown export");
    int r = 0;
    if (opt == NBD_OPT_SET_META_CONTEXT) {
        c->nctx = 0;
        snprintf(c->ctx_export, sizeof(c->ctx_export), "%s", name);
    }
    struct ctx_list l = { c, opt, 0 };
    if (opt == NBD_OPT_LIST_META_CONTEXT && nq == 0)
        nbd_ctx_list(&x, "", list_ctx_cb, &l);
    for (uint32_t i = 0; i < nq && r == 0 && l.r == 0; i++) {
        get_str(k, get_u32(k), q, sizeof(q));
        if (opt == NBD_OPT_LIST_META_CONTEXT)
            nbd_ctx_list(&x, q, list_ctx_cb, &l);
        else
            r = set_one(c, &x, q);
    }
    nbd_export_close(c->app, &x);
    if (r < 0 || l.r < 0)
        return -1;
    return reply(c, opt, NBD_REP_ACK, NULL, 0);
}

static int opt_starttls(struct nbd_conn *c, uint32_t len)
{
    if (len)
        return reply_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
    if (!nbd_server_has_tls(c->srv))
        return reply_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, "TLS is not configured");
    if (c->tls)
        return reply_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is already on");
    if (reply(c, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0) < 0 || nbd_conn_starttls(c) < 0)
        return -1;
    c->structured = false;
    c->nctx = 0;
    c->ctx_export[0] = '\0';
    return 0;
}

/* One option whose payload is data[len].  1: transmission; 0: next
 * option; -1: close. */
static int option(struct nbd_conn *c, uint32_t opt, const char *data, uint32_t len)
{
    struct cursor k = { (const uint8_t *)data, len, false };
    if (nbd_server_tls_required(c->srv, c) && !c->tls && opt != NBD_OPT_STARTTLS &&
        opt != NBD_OPT_ABORT) {
        if (opt == NBD_OPT_EXPORT_NAME)
            return -1;
        return reply_err(c, opt, NBD_REP_ERR_TLS_REQD, "TLS is required");
    }
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, data, len);
    case NBD_OPT_ABORT:
        reply(c, opt, NBD_REP_ACK, NULL, 0);
        return -1;
    case NBD_OPT_LIST:
        return opt_list(c, len);
    case NBD_OPT_STARTTLS:
        return opt_starttls(c, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(c, opt, &k);
    case NBD_OPT_STRUCTURED_REPLY:
        if (len)
            return reply_err(c, opt, NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
        c->structured = true;
        return reply(c, opt, NBD_REP_ACK, NULL, 0);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta(c, opt, &k);
    default:
        return reply_err(c, opt, NBD_REP_ERR_UNSUP, "unsupported option");
    }
}

static int hello(struct nbd_conn *c)
{
    struct nbd_hello h = {
        .magic = htobe64(NBD_MAGIC), .opt_magic = htobe64(NBD_IHAVEOPT),
        .flags = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
    };
    uint32_t cflags;
    if (nbd_conn_write(c, &h, sizeof(h)) < 0 || nbd_conn_read(c, &cflags, 4) < 0)
        return -1;
    cflags = be32toh(cflags);
    if (!(cflags & NBD_FLAG_C_FIXED_NEWSTYLE) ||
        (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)))
        return -1;
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
    return 0;
}

int nbd_negotiate(struct nbd_conn *c)
{
    if (hello(c) < 0)
        return -1;
    for (unsigned i = 0; i < NBD_MAX_OPTIONS; i++) {
        struct nbd_opt_hdr h;
        if (nbd_conn_read(c, &h, sizeof(h)) < 0 || be64toh(h.magic) != NBD_IHAVEOPT)
            return -1;
        uint32_t opt = be32toh(h.option), len = be32toh(h.len);
        if (len > NBD_MAX_OPTION_LEN) {
            if (opt == NBD_OPT_EXPORT_NAME || nbd_conn_discard(c, len) < 0 ||
                reply_err(c, opt, NBD_REP_ERR_TOO_BIG, "option too large") < 0)
                return -1;
            continue;
        }
        char *data = malloc(len + 1);
        if (!data || nbd_conn_read(c, data, len) < 0) {
            free(data);
            return -1;
        }
        int r = option(c, opt, data, len);
        free(data);
        if (r < 0)
            return -1;
        if (r == 1) {
            nbd_server_set_export(c, c->x.name);
            return 0;
        }
    }
    log_info("nbd: client sent too many options");
    return -1;
}
