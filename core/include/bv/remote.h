/*
 * Remote objects as layers of an image: a read-only protocol node ("remote") whose bytes
 * come from a callback the opener supplies (the service: ranged GETs of an S3 object), read
 * through a bounded block cache, so that qcow2 over it works exactly as over a file and a
 * backing chain may mix local files and remote objects (bv_open_opts.layers).
 *
 * The cache (struct bv_remote_cache) is shared by the remote nodes of one open (a chain):
 * blocks of block_size bytes of each object, LRU, at most max_bytes held (a block being
 * fetched counts; only demand reads may go past the ceiling, by the blocks the reading
 * threads have in hand).  A read that misses fetches its block itself; the blocks after it
 * that the same request covers, and readahead blocks when the reader looks sequential (the
 * block before was read recently), are fetched by the cache's own threads (`fetchers`, at
 * most that many ranged reads in flight besides the readers'), started on first need.  A
 * failed fetch is not cached: the reader gets the callback's error and a later read tries
 * again.
 *
 * Threads: a node over a remote object may be read from several threads at once (as any
 * node, bv/image.h); the callback is called concurrently from them and from the fetch
 * threads.  cache->lock guards the block list, the queue and the statistics; it is never
 * held across a callback.
 */
#ifndef BV_REMOTE_H
#define BV_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/error.h"

struct bv_remote_object {
    uint64_t length;             /* the object's size in bytes (reads past it are zeros) */
    /* Read exactly len bytes at off (off + len <= length) into buf: 0 or -errno with errp
     * filled.  Called concurrently from any thread. */
    int (*pread)(void *opaque, void *buf, size_t len, uint64_t off, bv_error **errp);
    /* Called once when the node is freed, also when its open fails after the resolver
     * filled this object (may be NULL). */
    void (*release)(void *opaque);
    void *opaque;
};

#define BV_REMOTE_BLOCK_DEFAULT   (1u << 20)
#define BV_REMOTE_CACHE_DEFAULT   (32ull << 20)
#define BV_REMOTE_READAHEAD_DEFAULT 8
#define BV_REMOTE_FETCHERS_DEFAULT  4

struct bv_remote_cache_opts {
    uint32_t block_size;         /* 0: 1 MiB; a power of two in [4 KiB, 16 MiB] */
    uint64_t max_bytes;          /* 0: 32 MiB; at least 2 blocks, at most 1 GiB */
    unsigned readahead;          /* blocks fetched ahead of a sequential reader; 0: 8, max 64 */
    unsigned fetchers;           /* fetch threads; 0: 4, max 16 */
};

struct bv_remote_cache;

/* *out holds one reference (bv_remote_cache_unref).  EINVAL on an option out of range. */
int bv_remote_cache_new(const struct bv_remote_cache_opts *o, struct bv_remote_cache **out,
                        bv_error **errp);
void bv_remote_cache_ref(struct bv_remote_cache *c);
/* The last reference stops the fetch threads (every node over it is closed by then). */
void bv_remote_cache_unref(struct bv_remote_cache *c);

struct bv_remote_cache_stats {
    uint64_t requests;           /* callback calls (each one ranged read) */
    uint64_t bytes_fetched;      /* bytes they returned */
    uint64_t hits, misses;       /* block lookups of reads */
    uint64_t prefetched;         /* blocks fetched by the fetch threads */
    uint64_t peak_bytes;         /* the most block bytes held at once */
};
void bv_remote_cache_get_stats(struct bv_remote_cache *c, struct bv_remote_cache_stats *out);

/*
 * Chooses, layer by layer, where an image's layers live (bv_open_opts.layers).  resolve is
 * called with each layer's root-relative name (the top's path; a backing name resolved
 * against its overlay's directory, as the engine would open it): 1 opens the local file as
 * usual, 0 reads the layer from *obj (filled by resolve; the node owns it from then on, its
 * release is called when the node goes, also on a failed open), <0 fails the open.  A
 * remote layer's node is named `name`, so its backing names resolve as for a file there.
 */
struct bv_layer_resolver {
    int (*resolve)(void *opaque, const char *name, struct bv_remote_object *obj,
                   bv_error **errp);
    void *opaque;
    struct bv_remote_cache *cache;   /* required: every remote node takes a reference */
};

#endif
