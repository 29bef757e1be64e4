/*
 * The transmission phase.  The connection's thread reads requests in order
 * and checks each before anything is allocated for it: the magic (a wrong
 * one ends the connection: the stream cannot be trusted any more), the
 * command, its flags, the length against NBD_MAX_REQUEST (an oversized
 * WRITE's payload is read and dropped so the stream stays in step) and the
 * range against the export.  A request that passes waits for its payload
 * budget (per connection and server-wide), then queues; up to
 * NBD_CONN_WORKERS workers, started as the queue needs them, run requests
 * and send each reply when it is done — so replies leave out of order, and
 * a reply's bytes are never interleaved with another's (send_lock).
 *
 * A failed request gets its NBD errno (EPERM read-only, ENOSPC, EINVAL out
 * of range or malformed, EIO otherwise) and the connection goes on.
 * On DISC, end of stream or shutdown the reader stops, the queued requests
 * still run and reply, and the workers are joined.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nbd/nbd-int.h"
#include "nbd/proto.h"

struct nbd_job {
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t len;
    uint32_t error;                 /* an NBD errno found while reading it: reply only */
    void *payload;                  /* WRITE data */
    uint64_t budget;                /* bytes charged to the budgets */
    struct nbd_job *next;
};

static uint32_t nbd_errno(int r)
{
    switch (-r) {
    case EPERM: case EROFS: case EACCES: return NBD_EPERM;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EINVAL: case ERANGE: case ENOENT: case ENODEV: return NBD_EINVAL;
    case ENOMEM: return NBD_ENOMEM;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

/* ---- replies (send_lock held for each whole reply) ---- */

static void send_locked(struct nbd_conn *c, const void *buf, size_t len)
{
    pthread_mutex_lock(&c->send_lock);
    nbd_conn_write(c, buf, len);
    pthread_mutex_unlock(&c->send_lock);
}

static void reply_simple(struct nbd_conn *c, const struct nbd_job *j, uint32_t err)
{
    struct nbd_simple_reply r = {
        .magic = htobe32(NBD_SIMPLE_REPLY_MAGIC), .error = htobe32(err),
        .cookie = htobe64(j->cookie),
    };
    send_locked(c, &r, sizeof(r));
}

static void fill_chunk(struct nbd_chunk *h, const struct nbd_job *j, uint16_t flags,
                       uint16_t type, uint32_t len)
{
    h->magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
    h->flags = htobe16(flags);
    h->type = htobe16(type);
    h->cookie = htobe64(j->cookie);
    h->len = htobe32(len);
}

/* An error reply: a structured error chunk for READ and BLOCK_STATUS when
 * structured replies are on, a simple reply otherwise (both are allowed). */
static void reply_error(struct nbd_conn *c, const struct nbd_job *j, uint32_t err,
                        const char *msg)
{
    if (!c->structured || (j->type != NBD_CMD_READ && j->type != NBD_CMD_BLOCK_STATUS)) {
        reply_simple(c, j, err);
        return;
    }
    uint8_t buf[sizeof(struct nbd_chunk) + sizeof(struct nbd_chunk_error) + 128];
    size_t n = strnlen(msg, 128);
    struct nbd_chunk h;
    struct nbd_chunk_error e = { .error = htobe32(err), .msg_len = htobe16((uint16_t)n) };
    fill_chunk(&h, j, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, (uint32_t)(sizeof(e) + n));
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), &e, sizeof(e));
    memcpy(buf + sizeof(h) + sizeof(e), msg, n);
    send_locked(c, buf, sizeof(h) + sizeof(e) + n);
}

/* ---- running a request ---- */

#define READ_HDR (sizeof(struct nbd_chunk) + 8)

static void run_read(struct nbd_conn *c, const struct nbd_job *j)
{
    uint8_t *buf = malloc(READ_HDR + j->len);
    if (!buf) {
        reply_error(c, j, NBD_ENOMEM, "out of memory");
        return;
    }
    int r = j->len ? nbd_export_pread(&c->x, buf + READ_HDR, j->len, j->offset) : 0;
    if (r < 0) {
        reply_error(c, j, nbd_errno(r), "read failed");
    } else if (!c->structured) {
        struct nbd_simple_reply s = {
            .magic = htobe32(NBD_SIMPLE_REPLY_MAGIC), .cookie = htobe64(j->cookie),
        };
        memcpy(buf + READ_HDR - sizeof(s), &s, sizeof(s));
        send_locked(c, buf + READ_HDR - sizeof(s), sizeof(s) + j->len);
    } else if (j->len == 0) {
        struct nbd_chunk h;
        fill_chunk(&h, j, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
        send_locked(c, &h, sizeof(h));
    } else {
        struct nbd_chunk h;
        fill_chunk(&h, j, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 8 + j->len);
        uint64_t off = htobe64(j->offset);
        memcpy(buf, &h, sizeof(h));
        memcpy(buf + sizeof(h), &off, 8);
        send_locked(c, buf, READ_HDR + j->len);
    }
    free(buf);
}

/* One BLOCK_STATUS chunk per selected context, the last one DONE.  All are
 * computed before any is sent, so a failure is one error reply. */
static void run_block_status(struct nbd_conn *c, const struct nbd_job *j)
{
    uint32_t max = (j->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_DESCRIPTORS;
    uint8_t *bufs[NBD_MAX_CONTEXTS] = { 0 };
    size_t lens[NBD_MAX_CONTEXTS] = { 0 };
    struct nbd_block_descriptor_h *d = malloc(max * sizeof(*d));
    int r = d ? 0 : -ENOMEM;
    for (unsigned i = 0; i < c->nctx && r >= 0; i++) {
        r = nbd_ctx_extents(&c->x, &c->ctx[i], j->offset, j->len, d, max);
        if (r == 0)
            r = -EIO;
        if (r < 0)
            break;
        size_t n = (size_t)r, plen = 4 + n * sizeof(struct nbd_block_descriptor);
        bufs[i] = malloc(sizeof(struct nbd_chunk) + plen);
        if (!bufs[i]) {
            r = -ENOMEM;
            break;
        }
        struct nbd_chunk h;
        fill_chunk(&h, j, i + 1 == c->nctx ? NBD_REPLY_FLAG_DONE : 0,
                   NBD_REPLY_TYPE_BLOCK_STATUS, (uint32_t)plen);
        uint8_t *p = bufs[i];
        memcpy(p, &h, sizeof(h));
        uint32_t id = htobe32(i + 1);
        memcpy(p + sizeof(h), &id, 4);
        for (size_t k = 0; k < n; k++) {
            struct nbd_block_descriptor bd = { htobe32(d[k].length), htobe32(d[k].flags) };
            memcpy(p + sizeof(h) + 4 + k * sizeof(bd), &bd, sizeof(bd));
        }
        lens[i] = sizeof(h) + plen;
    }
    if (r < 0) {
        reply_error(c, j, nbd_errno(r), "block status failed");
    } else {
        pthread_mutex_lock(&c->send_lock);
        for (unsigned i = 0; i < c->nctx; i++)
            nbd_conn_write(c, bufs[i], lens[i]);
        pthread_mutex_unlock(&c->send_lock);
    }
    for (unsigned i = 0; i < c->nctx; i++)
        free(bufs[i]);
    free(d);
}

static void run(struct nbd_conn *c, const struct nbd_job *j)
{
    bool fua = j->flags & NBD_CMD_FLAG_FUA;
    int r = 0;
    if (j->error) {
        reply_error(c, j, j->error, "invalid request");
        return;
    }
    switch (j->type) {
    case NBD_CMD_READ:
        run_read(c, j);
        return;
    case NBD_CMD_BLOCK_STATUS:
        run_block_status(c, j);
        return;
    case NBD_CMD_WRITE:
        r = nbd_export_pwrite(&c->x, j->payload, j->len, j->offset, fua);
        break;
    case NBD_CMD_WRITE_ZEROES:
        r = nbd_export_zero(&c->x, j->len, j->offset, !(j->flags & NBD_CMD_FLAG_NO_HOLE), fua);
        break;
    case NBD_CMD_TRIM:
        r = nbd_export_trim(&c->x, j->len, j->offset, fua);
        break;
    case NBD_CMD_FLUSH:
        r = nbd_export_flush(&c->x);
        break;
    }
    reply_simple(c, j, r < 0 ? nbd_errno(r) : 0);
}

/* ---- workers ---- */

/* A request is done: free it and give back its budgets. */
static void finish(struct nbd_conn *c, struct nbd_job *j)
{
    free(j->payload);
    if (j->budget)
        nbd_server_budget_give(c, j->budget);
    pthread_mutex_lock(&c->lock);
    c->inflight--;
    c->inflight_bytes -= j->budget;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    free(j);
}

static void *worker_main(void *arg)
{
    struct nbd_conn *c = arg;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->head && !c->closing) {
            c->idle++;
            pthread_cond_wait(&c->cond, &c->lock);
            c->idle--;
        }
        struct nbd_job *j = c->head;
        if (!j)
            break;
        c->head = j->next;
        if (!c->head)
            c->tail = NULL;
        pthread_mutex_unlock(&c->lock);
        run(c, j);
        finish(c, j);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void enqueue(struct nbd_conn *c, struct nbd_job *j)
{
    pthread_mutex_lock(&c->lock);
    if (c->idle == 0 && c->workers < NBD_CONN_WORKERS &&
        pthread_create(&c->worker_tids[c->workers], NULL, worker_main, c) == 0)
        c->workers++;
    bool inline_run = c->workers == 0;  /* no thread could start: run it here */
    if (!inline_run) {
        if (c->tail)
            c->tail->next = j;
        else
            c->head = j;
        c->tail = j;
        pthread_cond_signal(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
    if (inline_run) {
        run(c, j);
        finish(c, j);
    }
}

/* Reserve j->budget and a queue slot; -1 if the connection died waiting. */
static int admit(struct nbd_conn *c, struct nbd_job *j)
{
    pthread_mutex_lock(&c->lock);
    while (!atomic_load(&c->dead) &&
           (c->inflight >= NBD_MAX_QUEUED ||
            (c->inflight > 0 && c->inflight_bytes + j->budget > NBD_CONN_BUDGET)))
        pthread_cond_wait(&c->cond, &c->lock);
    bool dead = atomic_load(&c->dead);
    if (!dead) {
        c->inflight++;
        c->inflight_bytes += j->budget;
    }
    pthread_mutex_unlock(&c->lock);
    if (dead)
        return -1;
    if (j->budget && nbd_server_budget_take(c, j->budget) < 0) {
        pthread_mutex_lock(&c->lock);
        c->inflight--;
        c->inflight_bytes -= j->budget;
        pthread_mutex_unlock(&c->lock);
        return -1;
    }
    return 0;
}

/* ---- reading requests ---- */

static uint16_t allowed_flags(uint16_t type)
{
    switch (type) {
    case NBD_CMD_WRITE: case NBD_CMD_TRIM: return NBD_CMD_FLAG_FUA;
    case NBD_CMD_WRITE_ZEROES: return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE;
    case NBD_CMD_BLOCK_STATUS: return NBD_CMD_FLAG_REQ_ONE;
    default: return 0;
    }
}

/* The NBD errno a request gets without running, 0 if it may run. */
static uint32_t check(struct nbd_conn *c, const struct nbd_job *j)
{
    switch (j->type) {
    case NBD_CMD_READ: case NBD_CMD_WRITE: case NBD_CMD_FLUSH: case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES: case NBD_CMD_BLOCK_STATUS:
        break;
    default:
        return NBD_EINVAL;
    }
    if (j->flags & ~allowed_flags(j->type))
        return NBD_EINVAL;
    if ((j->type == NBD_CMD_READ || j->type == NBD_CMD_WRITE) && j->len > NBD_MAX_REQUEST)
        return NBD_EINVAL;
    if (j->type == NBD_CMD_FLUSH)
        return 0;
    if (j->offset > c->x.size || j->len > c->x.size - j->offset)
        return NBD_EINVAL;
    if (j->type == NBD_CMD_BLOCK_STATUS && (!c->structured || c->nctx == 0 || j->len == 0))
        return NBD_EINVAL;
    if (c->x.read_only && (j->type == NBD_CMD_WRITE || j->type == NBD_CMD_TRIM ||
                           j->type == NBD_CMD_WRITE_ZEROES))
        return NBD_EPERM;
    return 0;
}

/* Read one request into *j.  0 queued-able, 1 DISC, -1 stop. */
static int read_request(struct nbd_conn *c, struct nbd_job *j)
{
    struct nbd_request w;
    if (nbd_conn_read(c, &w, sizeof(w)) < 0)
        return -1;
    if (be32toh(w.magic) != NBD_REQUEST_MAGIC) {
        log_info("nbd: bad request magic from a client of '%s'; closing", c->x.name);
        return -1;
    }
    j->flags = be16toh(w.flags);
    j->type = be16toh(w.type);
    j->cookie = be64toh(w.cookie);
    j->offset = be64toh(w.offset);
    j->len = be32toh(w.len);
    if (j->type == NBD_CMD_DISC)
        return 1;
    j->error = check(c, j);
    if (j->type == NBD_CMD_WRITE && j->error)
        return nbd_conn_discard(c, j->len) < 0 ? -1 : 0;   /* keep the stream in step */
    if (!j->error && (j->type == NBD_CMD_READ || j->type == NBD_CMD_WRITE))
        j->budget = j->len;
    else if (!j->error && j->type == NBD_CMD_BLOCK_STATUS)
        j->budget = (uint64_t)c->nctx * NBD_MAX_DESCRIPTORS * 16;
    return 0;
}

void nbd_transmit(struct nbd_conn *c)
{
    for (;;) {
        struct nbd_job *j = calloc(1, sizeof(*j));
        int r = j ? read_request(c, j) : -1;
        if (r == 0 && admit(c, j) < 0)
            r = -1;
        if (r == 0 && j->type == NBD_CMD_WRITE && !j->error) {
            j->payload = malloc(j->len ? j->len : 1);
            if (!j->payload || nbd_conn_read(c, j->payload, j->len) < 0) {
                finish(c, j);           /* gives back what admit took */
                break;
            }
        }
        if (r != 0) {
            free(j);
            break;
        }
        enqueue(c, j);
    }
    pthread_mutex_lock(&c->lock);
    c->closing = true;
    pthread_cond_broadcast(&c->cond);
    unsigned n = c->workers;
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(c->worker_tids[i], NULL);
}
