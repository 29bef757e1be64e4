/*
 * Private to service/nbd: the server, a connection, an open export.
 *
 * Locks (order: srv->lock, then c->lock, then c->send_lock; drive and
 * engine locks are taken only with none of these held, except send_lock,
 * which is held while a reply's bytes go out and nothing else):
 *   srv->lock   the connection list, every c->export_name, srv->budget_used
 *               (signals srv->cond when a connection ends or budget frees)
 *   c->lock     the request queue, c->inflight, worker counts (c->cond)
 *   c->send_lock  the socket's write side (replies never interleave)
 */
#ifndef BV_NBD_INT_H
#define BV_NBD_INT_H

#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bv/image.h"
#include "nbd/nbd.h"

struct bv_drive_entry;

#define NBD_MAX_CONNS          64
#define NBD_CONN_WORKERS       8            /* per connection, started on demand */
#define NBD_MAX_REQUEST        (32u << 20)  /* as qemu-nbd: larger READ/WRITE get EINVAL */
#define NBD_CONN_BUDGET        (64u << 20)  /* payload bytes in flight per connection */
#define NBD_SERVER_BUDGET      (512u << 20) /* and over all connections */
#define NBD_MAX_QUEUED         256          /* requests in flight per connection */
#define NBD_NEGOTIATION_MS     10000        /* whole handshake, TLS included */
#define NBD_SEND_TIMEOUT_S     30           /* a client that stops reading replies */
#define NBD_MAX_OPTION_LEN     (64u << 10)  /* option payloads (names are ≤ 4096) */
#define NBD_MAX_OPTIONS        1024         /* per negotiation */
#define NBD_MAX_CONTEXTS       16           /* meta contexts selected per connection */
#define NBD_MAX_DESCRIPTORS    (64u << 10)  /* per context in one BLOCK_STATUS reply */
#define NBD_NAME_MAX           4096

/* An export opened by a connection: a drive (a registry reference) or a
 * backup point (a read-only node chain the connection owns). */
struct nbd_export {
    char name[NBD_NAME_MAX + 1];
    struct bv_drive_entry *entry;   /* drive export, or NULL */
    bv_node *node;                  /* backup point, or NULL */
    bool read_only;
    uint64_t size;
};

/* Open name; -ENOENT (with a sentence) when there is no such export. */
int nbd_export_open(struct bv_app *app, const char *name, struct nbd_export *x,
                    bv_error **errp);
void nbd_export_close(struct bv_app *app, struct nbd_export *x);
/* Visit every export's name (drives, then complete backups). */
int nbd_export_list(struct bv_app *app, void (*cb)(void *opaque, const char *name, bool ro),
                    void *opaque);

/* Data path (ranges checked by the caller).  0 or -errno. */
int nbd_export_pread(struct nbd_export *x, void *buf, uint32_t len, uint64_t off);
int nbd_export_pwrite(struct nbd_export *x, const void *buf, uint32_t len, uint64_t off,
                      bool fua);
int nbd_export_zero(struct nbd_export *x, uint32_t len, uint64_t off, bool may_trim, bool fua);
int nbd_export_trim(struct nbd_export *x, uint32_t len, uint64_t off, bool fua);
int nbd_export_flush(struct nbd_export *x);

/* Meta contexts. */
struct nbd_block_descriptor_h { uint32_t length, flags; };
enum nbd_ctx_kind { NBD_CTX_ALLOCATION, NBD_CTX_BITMAP };
struct nbd_ctx {
    enum nbd_ctx_kind kind;
    char bitmap[1024];              /* NBD_CTX_BITMAP: the bitmap's name */
};
/* Does the export have a context of this exact name?  Fills *ctx. */
bool nbd_ctx_resolve(struct nbd_export *x, const char *query, struct nbd_ctx *ctx);
/* Every context name of the export that the query (exact, or a namespace
 * prefix "base:", "qemu:", "qemu:dirty-bitmap:", or "" for all) selects. */
void nbd_ctx_list(struct nbd_export *x, const char *query,
                  void (*cb)(void *opaque, const char *name), void *opaque);
/* Extents of [off, off+len) for ctx: at most max descriptors (host order,
 * lengths summing to ≤ len, > 0).  Returns the count or -errno. */
int nbd_ctx_extents(struct nbd_export *x, const struct nbd_ctx *ctx, uint64_t off,
                    uint32_t len, struct nbd_block_descriptor_h *out, uint32_t max);

/* ---- the server and a connection (server.c, negotiate.c, transmit.c) ---- */

struct nbd_server;

struct nbd_conn {
    struct nbd_server *srv;
    struct bv_app *app;
    int fd;
    bool is_tcp;
    gnutls_session_t tls;           /* NULL: plain */
    int64_t deadline_ms;            /* monotonic; 0: none (transmission) */
    atomic_bool dead;               /* an I/O error or a disconnect was asked */

    /* negotiation results */
    bool structured, no_zeroes;
    struct nbd_export x;
    bool have_export;
    char ctx_export[NBD_NAME_MAX + 1];   /* the export the contexts were set for */
    struct nbd_ctx ctx[NBD_MAX_CONTEXTS];
    unsigned nctx;

    /* transmission */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct nbd_job *head, *tail;    /* queued requests */
    unsigned inflight;              /* queued or running */
    uint64_t inflight_bytes;
    unsigned workers, idle;
    pthread_t worker_tids[NBD_CONN_WORKERS];
    bool closing;                   /* workers exit once the queue is empty */
    pthread_mutex_t send_lock;

    char export_name[NBD_NAME_MAX + 1];  /* guarded by srv->lock: what clients() counts */
    struct nbd_conn *next;          /* srv->conns, guarded by srv->lock */
};

/* Transport (server.c): whole reads and writes, honouring the deadline. */
int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len);
int nbd_conn_write(struct nbd_conn *c, const void *buf, size_t len);
int nbd_conn_discard(struct nbd_conn *c, uint64_t len);
/* Switch to TLS (after the STARTTLS ack); -1 on failure. */
int nbd_conn_starttls(struct nbd_conn *c);
bool nbd_server_has_tls(struct nbd_server *srv);
bool nbd_server_tls_required(struct nbd_server *srv, struct nbd_conn *c);
/* Record which export this connection uses (for clients()). */
void nbd_server_set_export(struct nbd_conn *c, const char *name);
/* Payload budget across connections: blocks until len fits (or the
 * connection dies: -1). */
int nbd_server_budget_take(struct nbd_conn *c, uint64_t len);
void nbd_server_budget_give(struct nbd_conn *c, uint64_t len);

/* negotiate.c: 0 → transmission with c->x open; -1 → close. */
int nbd_negotiate(struct nbd_conn *c);
/* transmit.c: serve requests until disconnect or error. */
void nbd_transmit(struct nbd_conn *c);

int64_t nbd_now_ms(void);

#endif
