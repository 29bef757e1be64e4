/*
 * Protocol driver "remote": a read-only object whose bytes a callback supplies (bv/remote.h),
 * read through a block cache shared by the remote nodes of one open.
 *
 * The cache holds blocks of block_size bytes keyed by (node, block index) in one list, most
 * recently used first; there are few of them (max_bytes / block_size, a few dozen), so a
 * lookup is a walk of the list.  A block is FETCHING (someone is reading it from the
 * object: its data buffer is allocated and counted, readers of it wait on `changed`) or
 * READY.  A READY block with pins > 0 is being copied out by a reader and is not evicted.
 * Eviction takes unpinned READY blocks from the tail until the new block fits; a demand read
 * proceeds even when nothing can be evicted (the excess is bounded by the readers in
 * flight), a prefetch is dropped instead.
 *
 * Readahead: a read of block i when block i-1 is held (or being fetched) looks sequential and
 * queues i+1 .. i+readahead that are not held; a read that spans several blocks queues all
 * but its first.  The fetch threads take the queue in order.  Closing a node drops its
 * queued fetches, waits for its fetches in flight and frees its blocks.
 *
 * Locking: cache->lock guards every field of the cache and the blocks' state; the data of a
 * READY block is immutable and read without the lock while pinned; the callback runs
 * without the lock.
 */
#include "block/driver.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bv/remote.h"
#include "util/checked.h"

#define QUEUE_CAP        256
#define MAX_BLOCK        (16u << 20)
#define MIN_BLOCK        (4u << 10)
#define MAX_CACHE        (1ull << 30)
#define MAX_READAHEAD    64
#define MAX_FETCHERS     16

enum block_state { FETCHING, READY };

struct rstate;

struct rblock {
    struct rstate *owner;
    uint64_t index;
    uint8_t *data;
    size_t len;
    enum block_state state;
    unsigned pins;
    struct rblock *prev, *next;      /* the LRU list, head = most recent */
};

struct fetch_req {
    struct rstate *owner;
    uint64_t index;
};

struct bv_remote_cache {
    pthread_mutex_t lock;
    pthread_cond_t changed;          /* a block became READY or went away */
    pthread_cond_t work;             /* the queue grew, or stop */
    unsigned refs;                   /* under lock */
    uint32_t block_size;
    uint64_t max_bytes;
    unsigned readahead, nfetchers;
    struct rblock *head, *tail;
    uint64_t bytes;                  /* data bytes of every block, FETCHING included */
    struct fetch_req queue[QUEUE_CAP];
    unsigned qhead, qlen;
    unsigned inflight_prefetch;      /* fetches the threads are doing now */
    pthread_t threads[MAX_FETCHERS];
    unsigned nthreads;
    bool stop;
    struct bv_remote_cache_stats st;
};

/* instance state of a remote node */
struct rstate {
    struct bv_remote_cache *cache;
    struct bv_remote_object obj;
    uint64_t nblocks;
    const char *name;                /* n->filename (for messages) */
};

/* ---------------- the cache ---------------- */

static bool pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

int bv_remote_cache_new(const struct bv_remote_cache_opts *o, struct bv_remote_cache **out,
                        bv_error **errp)
{
    struct bv_remote_cache_opts d = o ? *o : (struct bv_remote_cache_opts){0};
    if (!d.block_size)
        d.block_size = BV_REMOTE_BLOCK_DEFAULT;
    if (!d.max_bytes)
        d.max_bytes = BV_REMOTE_CACHE_DEFAULT;
    if (!d.readahead)
        d.readahead = BV_REMOTE_READAHEAD_DEFAULT;
    if (!d.fetchers)
        d.fetchers = BV_REMOTE_FETCHERS_DEFAULT;
    if (!pow2(d.block_size) || d.block_size < MIN_BLOCK || d.block_size > MAX_BLOCK)
        return bv_error_setf(errp, EINVAL, "remote cache block size %u: a power of two "
                             "from 4 KiB to 16 MiB", d.block_size);
    if (d.max_bytes < 2ull * d.block_size || d.max_bytes > MAX_CACHE)
        return bv_error_setf(errp, EINVAL, "remote cache size: 2 blocks to 1 GiB");
    if (d.readahead > MAX_READAHEAD || d.fetchers > MAX_FETCHERS)
        return bv_error_setf(errp, EINVAL, "remote cache: at most %d blocks of readahead and "
                             "%d fetch threads", MAX_READAHEAD, MAX_FETCHERS);
    struct bv_remote_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);
    pthread_cond_init(&c->work, NULL);
    c->refs = 1;
    c->block_size = d.block_size;
    c->max_bytes = d.max_bytes;
    c->readahead = d.readahead;
    c->nfetchers = d.fetchers;
    *out = c;
    return 0;
}

void bv_remote_cache_ref(struct bv_remote_cache *c)
{
    pthread_mutex_lock(&c->lock);
    c->refs++;
    pthread_mutex_unlock(&c->lock);
}

void bv_remote_cache_unref(struct bv_remote_cache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    bool last = --c->refs == 0;
    if (last) {
        c->stop = true;
        pthread_cond_broadcast(&c->work);
    }
    pthread_mutex_unlock(&c->lock);
    if (!last)
        return;
    for (unsigned i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    /* every node is closed: no block is left */
    pthread_cond_destroy(&c->work);
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void bv_remote_cache_get_stats(struct bv_remote_cache *c, struct bv_remote_cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    pthread_mutex_unlock(&c->lock);
}

static void unlink_block_locked(struct bv_remote_cache *c, struct rblock *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        c->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        c->tail = b->prev;
    b->prev = b->next = NULL;
}

static void push_front_locked(struct bv_remote_cache *c, struct rblock *b)
{
    b->prev = NULL;
    b->next = c->head;
    if (c->head)
        c->head->prev = b;
    c->head = b;
    if (!c->tail)
        c->tail = b;
}

static void free_block_locked(struct bv_remote_cache *c, struct rblock *b)
{
    unlink_block_locked(c, b);
    c->bytes -= b->len;
    free(b->data);
    free(b);
}

static struct rblock *find_locked(struct bv_remote_cache *c, struct rstate *s, uint64_t index)
{
    for (struct rblock *b = c->head; b; b = b->next)
        if (b->owner == s && b->index == index)
            return b;
    return NULL;
}

static size_t block_len(const struct rstate *s, uint64_t index)
{
    uint64_t start = index * s->cache->block_size;
    uint64_t left = s->obj.length - start;
    return left < s->cache->block_size ? (size_t)left : s->cache->block_size;
}

/* Make room for len bytes by evicting unpinned READY blocks from the tail; false when
 * they would still not fit. */
static bool make_room_locked(struct bv_remote_cache *c, size_t len)
{
    struct rblock *b = c->tail;
    while (c->bytes + len > c->max_bytes && b) {
        struct rblock *prev = b->prev;
        if (b->state == READY && b->pins == 0)
            free_block_locked(c, b);
        b = prev;
    }
    return c->bytes + len <= c->max_bytes;
}

/* A new FETCHING block (NULL: out of memory, or no room for a prefetch). */
static struct rblock *insert_locked(struct rstate *s, uint64_t index, bool demand)
{
    struct bv_remote_cache *c = s->cache;
    size_t len = block_len(s, index);
    if (!make_room_locked(c, len) && !demand)
        return NULL;
    struct rblock *b = calloc(1, sizeof(*b));
    uint8_t *data = b ? malloc(len) : NULL;
    if (!data) {
        free(b);
        return NULL;
    }
    b->owner = s;
    b->index = index;
    b->data = data;
    b->len = len;
    b->state = FETCHING;
    push_front_locked(c, b);
    c->bytes += len;
    if (c->bytes > c->st.peak_bytes)
        c->st.peak_bytes = c->bytes;
    return b;
}

/* Read b's bytes from the object (without the lock), then publish it (pinned for the
 * reader that fetched it when pin) or drop it. */
static int fetch_block(struct rstate *s, struct rblock *b, bool pin, bv_error **errp)
{
    struct bv_remote_cache *c = s->cache;
    uint64_t off = b->index * c->block_size;
    int r = s->obj.pread(s->obj.opaque, b->data, b->len, off, errp);
    pthread_mutex_lock(&c->lock);
    c->st.requests++;
    if (r == 0) {
        c->st.bytes_fetched += b->len;
        b->state = READY;
        b->pins += pin;
    } else {
        free_block_locked(c, b);
    }
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* ---------------- fetch threads ---------------- */

static void *fetcher(void *arg)
{
    struct bv_remote_cache *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        if (c->qlen == 0) {
            pthread_cond_wait(&c->work, &c->lock);
            continue;
        }
        struct fetch_req q = c->queue[c->qhead];
        c->qhead = (c->qhead + 1) % QUEUE_CAP;
        c->qlen--;
        if (find_locked(c, q.owner, q.index))
            continue;
        struct rblock *b = insert_locked(q.owner, q.index, false);
        if (!b)
            continue;
        c->inflight_prefetch++;
        c->st.prefetched++;
        pthread_mutex_unlock(&c->lock);
        fetch_block(q.owner, b, false, NULL);   /* a failure is retried by the reader */
        pthread_mutex_lock(&c->lock);
        c->inflight_prefetch--;
        pthread_cond_broadcast(&c->changed);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static bool queued_locked(const struct bv_remote_cache *c, const struct rstate *s,
                          uint64_t index)
{
    for (unsigned i = 0; i < c->qlen; i++) {
        const struct fetch_req *q = &c->queue[(c->qhead + i) % QUEUE_CAP];
        if (q->owner == s && q->index == index)
            return true;
    }
    return false;
}

static void enqueue_locked(struct rstate *s, uint64_t index)
{
    struct bv_remote_cache *c = s->cache;
    if (index >= s->nblocks || c->qlen == QUEUE_CAP || find_locked(c, s, index) ||
        queued_locked(c, s, index))
        return;
    if (c->nthreads < c->nfetchers &&
        pthread_create(&c->threads[c->nthreads], NULL, fetcher, c) == 0)
        c->nthreads++;
    if (c->nthreads == 0)
        return;                            /* no thread: the readers fetch it */
    c->queue[(c->qhead + c->qlen) % QUEUE_CAP] = (struct fetch_req){ s, index };
    c->qlen++;
    pthread_cond_signal(&c->work);
}

/* ---------------- reads ---------------- */

/* Queue the readahead after index when the reader looks sequential. */
static void readahead_locked(struct rstate *s, uint64_t index, bool sequential)
{
    for (unsigned i = 1; sequential && i <= s->cache->readahead; i++)
        enqueue_locked(s, index + i);
}

/* Block index pinned and READY in *out (the caller unpins).  A miss fetches it here, after
 * queueing the readahead (so the fetch threads work while this one waits). */
static int get_block(struct rstate *s, uint64_t index, struct rblock **out, bv_error **errp)
{
    struct bv_remote_cache *c = s->cache;
    pthread_mutex_lock(&c->lock);
    bool sequential = index > 0 && find_locked(c, s, index - 1) != NULL;
    bool counted = false;
    for (;;) {
        struct rblock *b = find_locked(c, s, index);
        if (!counted)
            c->st.hits += b != NULL;
        if (b && b->state == READY) {
            b->pins++;
            unlink_block_locked(c, b);
            push_front_locked(c, b);
            readahead_locked(s, index, sequential);
            pthread_mutex_unlock(&c->lock);
            *out = b;
            return 0;
        }
        if (b) {                            /* being fetched: wait for it (or its failure) */
            counted = true;
            pthread_cond_wait(&c->changed, &c->lock);
            continue;
        }
        if (!counted)
            c->st.misses++;
        counted = true;
        b = insert_locked(s, index, true);
        if (!b) {
            pthread_mutex_unlock(&c->lock);
            return bv_error_setf(errp, ENOMEM, "out of memory");
        }
        readahead_locked(s, index, sequential);
        pthread_mutex_unlock(&c->lock);
        int r = fetch_block(s, b, true, errp);
        if (r == 0)
            *out = b;
        return r;
    }
}

static void unpin(struct rstate *s, struct rblock *b)
{
    pthread_mutex_lock(&s->cache->lock);
    b->pins--;
    pthread_mutex_unlock(&s->cache->lock);
}

static int remote_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    struct rstate *s = n->opaque;
    struct bv_remote_cache *c = s->cache;
    uint8_t *p = buf;
    uint64_t end;
    if (!ck_add(off, len, &end))
        return bv_error_setf(errp, EINVAL, "read of '%s' overflows", s->name);
    if (end > s->obj.length) {              /* past the end: zeros, as a file */
        uint64_t from = off > s->obj.length ? off : s->obj.length;
        memset(p + (from - off), 0, end - from);
        end = from;
    }
    if (off >= end)
        return 0;
    uint64_t first = off / c->block_size, last = (end - 1) / c->block_size;
    if (last > first) {                     /* the rest of the request, in parallel */
        pthread_mutex_lock(&c->lock);
        for (uint64_t i = first + 1; i <= last && i - first <= QUEUE_CAP / 2; i++)
            enqueue_locked(s, i);
        pthread_mutex_unlock(&c->lock);
    }
    int r = 0;
    for (uint64_t i = first; r == 0 && i <= last; i++) {
        struct rblock *b = NULL;
        r = get_block(s, i, &b, errp);
        if (r < 0)
            break;
        uint64_t bstart = i * c->block_size;
        uint64_t from = off > bstart ? off : bstart;
        uint64_t to = end < bstart + b->len ? end : bstart + b->len;
        memcpy(p + (from - off), b->data + (from - bstart), to - from);
        unpin(s, b);
    }
    if (r < 0)
        bv_error_prepend(errp, "read of '%s' at %llu failed", s->name,
                         (unsigned long long)off);
    return r;
}

/* ---------------- node lifetime ---------------- */

int bv_remote_attach(bv_node *n, const struct bv_remote_object *obj,
                     struct bv_remote_cache *cache, bv_error **errp)
{
    struct rstate *s = n->opaque;
    s->obj = *obj;                          /* owned from here: released by close */
    s->name = n->filename ? n->filename : "remote object";
    if (!cache || !obj->pread)
        return bv_error_setf(errp, EINVAL, "a remote layer needs a cache and a read function");
    bv_remote_cache_ref(cache);
    s->cache = cache;
    s->nblocks = obj->length / cache->block_size + (obj->length % cache->block_size != 0);
    n->size = obj->length;
    n->read_only = true;
    return 0;
}

static void remote_close(bv_node *n)
{
    struct rstate *s = n->opaque;
    struct bv_remote_cache *c = s->cache;
    if (c) {
        pthread_mutex_lock(&c->lock);
        /* drop this node's queued fetches, wait for those in flight, free its blocks */
        unsigned kept = 0;
        for (unsigned i = 0; i < c->qlen; i++) {
            struct fetch_req q = c->queue[(c->qhead + i) % QUEUE_CAP];
            if (q.owner != s)
                c->queue[(c->qhead + kept++) % QUEUE_CAP] = q;
        }
        c->qlen = kept;
        for (;;) {
            bool busy = false;
            struct rblock *b = c->head;
            while (b) {
                struct rblock *next = b->next;
                if (b->owner == s && b->state == FETCHING)
                    busy = true;
                else if (b->owner == s)
                    free_block_locked(c, b);
                b = next;
            }
            if (!busy)
                break;
            pthread_cond_wait(&c->changed, &c->lock);
        }
        pthread_mutex_unlock(&c->lock);
        bv_remote_cache_unref(c);
        s->cache = NULL;
    }
    if (s->obj.release)
        s->obj.release(s->obj.opaque);
    s->obj.release = NULL;
}

static int remote_get_length(bv_node *n, uint64_t *len, bv_error **errp)
{
    (void)errp;
    *len = ((struct rstate *)n->opaque)->obj.length;
    return 0;
}

static int remote_block_status(bv_node *n, uint64_t off, uint64_t len,
                               struct bv_block_status *bs, bv_error **errp)
{
    (void)errp;
    uint64_t size = ((struct rstate *)n->opaque)->obj.length;
    bs->host_offset = 0;
    if (off >= size) {
        bs->flags = BV_BS_ZERO;
        bs->pnum = len;
        return 0;
    }
    bs->flags = BV_BS_DATA;
    bs->host_offset = off;
    bs->pnum = size - off < len ? size - off : len;
    return 0;
}

const struct bv_driver bv_drv_remote = {
    .name = "remote",
    .kind = BV_DRV_PROTOCOL,
    .instance_size = sizeof(struct rstate),
    .close = remote_close,
    .pread = remote_pread,
    .get_length = remote_get_length,
    .get_allocated = remote_get_length,
    .block_status = remote_block_status,
};
