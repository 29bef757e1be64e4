/*
 * convert: copy what a chain reads as into one new image (raw or qcow2).
 *
 * Pipeline.  This thread plans; worker threads read and write.
 *   plan:  walk the source chain's block status; runs that read as zero
 *          (zero clusters, holes, unallocated everywhere) are skipped, since a
 *          fresh image reads zeros there.  Data runs are widened to the
 *          granule (the target cluster, or 4 KiB for raw) and cut into
 *          extents of at most CONV_CHUNK bytes, queued in order.
 *   work:  a worker takes the next extent, fills its own buffer with one
 *          bv_node_pread of the source chain, skips granules that turned out
 *          to be all zeros and writes the rest: runs of granules with one
 *          pwrite each, or, with compression, one BV_WRITE_COMPRESSED pwrite
 *          per whole cluster.  Several workers run at once so that reads,
 *          page-cache copies and deflate use every core; extents are taken in
 *          order, so the target is written nearly sequentially.
 * The extent queue (a bounded FIFO) is guarded by conv.lock; memory is
 * nworkers * CONV_CHUNK.
 *
 * Errors: the first error wins and stops every thread; the target file is
 * left behind (as qemu-img convert does) and the error says where.
 * Durability: with o->flush the target is flushed (metadata, then
 * fdatasync) before returning, and a flusher thread syncs every
 * CONV_FLUSH_STEP bytes written so that the disk writes back while we copy
 * (the final sync then has little left to do).  Without it, as qemu-img convert's default
 * cache mode (unsafe), the target is opened with no_sync: cached metadata is
 * written back to the OS at close, but nothing is synced, not even the
 * syncs qcow2 orders its metadata with (an interrupted convert is redone,
 * not repaired), since an fdatasync costs as much as the copy itself.
 */
#include "image/image-int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/checked.h"

#define CONV_CHUNK          (4u << 20)
#define CONV_MAX_THREADS    16
#define CONV_PLAIN_WORKERS  4
#define CONV_QUEUE          64
#define RAW_GRANULE         4096u
#define CONV_FLUSH_STEP     (64ull << 20)

struct extent {
    uint64_t off, len;
};

struct conv {
    bv_node *src, *dst;
    uint64_t size;
    uint32_t granule;            /* zero-skip and planning unit; the cluster when compressing */
    bool compress;
    unsigned nworkers;

    pthread_mutex_t lock;        /* guards everything below */
    pthread_cond_t not_empty;    /* workers wait here for an extent */
    pthread_cond_t not_full;     /* the planner waits here for room */
    struct extent queue[CONV_QUEUE];   /* FIFO ring */
    unsigned head, count;
    bool planning_done;
    bool flusher, workers_done;  /* flusher: sync while copying (o->flush) */
    pthread_cond_t flush_cond;   /* wakes the flusher */
    uint64_t written, flushed;   /* bytes copied; bytes copied at the last sync start */
    int ret;                     /* first error, 0 while none */
    bv_error *err;
};

/* ---- the extent queue ---- */

static void conv_fail(struct conv *c, int ret, bv_error **errp)
{
    pthread_mutex_lock(&c->lock);
    if (c->ret == 0)
        c->ret = ret;
    bv_error_propagate(&c->err, errp);
    pthread_cond_broadcast(&c->not_empty);
    pthread_cond_broadcast(&c->not_full);
    pthread_mutex_unlock(&c->lock);
}

/* Queue an extent; -ECANCELED once the conversion failed. */
static int push_extent(struct conv *c, uint64_t off, uint64_t len)
{
    pthread_mutex_lock(&c->lock);
    while (c->count == CONV_QUEUE && c->ret == 0)
        pthread_cond_wait(&c->not_full, &c->lock);
    int r = c->ret ? -ECANCELED : 0;
    if (r == 0) {
        c->queue[(c->head + c->count) % CONV_QUEUE] = (struct extent){ off, len };
        c->count++;
        pthread_cond_signal(&c->not_empty);
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* The next extent; false when planning is over (or failed) and none is left. */
static bool pop_extent(struct conv *c, struct extent *e)
{
    pthread_mutex_lock(&c->lock);
    while (c->count == 0 && !c->planning_done && c->ret == 0)
        pthread_cond_wait(&c->not_empty, &c->lock);
    bool ok = c->count > 0 && c->ret == 0;
    if (ok) {
        *e = c->queue[c->head];
        c->head = (c->head + 1) % CONV_QUEUE;
        c->count--;
        pthread_cond_signal(&c->not_full);
    }
    pthread_mutex_unlock(&c->lock);
    return ok;
}

static void finish_planning(struct conv *c)
{
    pthread_mutex_lock(&c->lock);
    c->planning_done = true;
    pthread_cond_broadcast(&c->not_empty);
    pthread_mutex_unlock(&c->lock);
}

/* ---- workers ---- */

/* Length of the granule at off within an extent ending at end. */
static uint64_t granule_len(const struct conv *c, uint64_t off, uint64_t end)
{
    return end - off < c->granule ? end - off : c->granule;
}

static int write_compressed(struct conv *c, const struct extent *e, const uint8_t *buf,
                            bv_error **errp)
{
    uint64_t end = e->off + e->len;
    for (uint64_t off = e->off; off < end; off += c->granule) {
        uint64_t n = granule_len(c, off, end);
        const uint8_t *p = buf + (off - e->off);
        if (buf_is_zero(p, n))
            continue;
        /* a cluster cut short by the image end is stored plain */
        int flags = n == c->granule ? BV_WRITE_COMPRESSED : 0;
        int r = bv_node_pwrite(c->dst, p, n, off, flags, errp);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Writes the non-zero granule runs of the extent, each with one pwrite.
 * The last granule may be short (an image end that is not granule-aligned):
 * the walk steps by granule_len, so it ends exactly at `end` and the run
 * still open there is written too. */
static int write_plain(struct conv *c, const struct extent *e, const uint8_t *buf,
                       bv_error **errp)
{
    uint64_t end = e->off + e->len;
    uint64_t run = UINT64_MAX;           /* start of the current non-zero run */
    int r = 0;
    for (uint64_t off = e->off; off < end && r == 0;) {
        uint64_t n = granule_len(c, off, end);
        bool zero = buf_is_zero(buf + (off - e->off), n);
        if (!zero && run == UINT64_MAX)
            run = off;
        if (zero && run != UINT64_MAX) {
            r = bv_node_pwrite(c->dst, buf + (run - e->off), off - run, run, 0, errp);
            run = UINT64_MAX;
        }
        off += n;
    }
    if (r == 0 && run != UINT64_MAX)
        r = bv_node_pwrite(c->dst, buf + (run - e->off), end - run, run, 0, errp);
    return r;
}

static void count_written(struct conv *c, uint64_t len)
{
    pthread_mutex_lock(&c->lock);
    c->written += len;
    if (c->written - c->flushed >= CONV_FLUSH_STEP)
        pthread_cond_signal(&c->flush_cond);
    pthread_mutex_unlock(&c->lock);
}

static int copy_extent(struct conv *c, const struct extent *e, uint8_t *buf, bv_error **errp)
{
    int r = bv_node_pread(c->src, buf, e->len, e->off, errp);
    if (r < 0)
        return r;
    r = c->compress ? write_compressed(c, e, buf, errp) : write_plain(c, e, buf, errp);
    if (r == 0 && c->flusher)
        count_written(c, e->len);
    return r;
}

/* Syncs the target whenever CONV_FLUSH_STEP more bytes were written. */
static void *flusher_main(void *arg)
{
    struct conv *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->workers_done && c->ret == 0) {
        if (c->written - c->flushed < CONV_FLUSH_STEP) {
            pthread_cond_wait(&c->flush_cond, &c->lock);
            continue;
        }
        c->flushed = c->written;
        pthread_mutex_unlock(&c->lock);
        bv_error *err = NULL;
        int r = bv_node_flush(c->dst, &err);
        if (r < 0)
            conv_fail(c, r, &err);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void stop_flusher(struct conv *c, pthread_t t)
{
    pthread_mutex_lock(&c->lock);
    c->workers_done = true;
    pthread_cond_signal(&c->flush_cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(t, NULL);
}

static void *worker_main(void *arg)
{
    struct conv *c = arg;
    uint8_t *buf = malloc(CONV_CHUNK);
    bv_error *err = NULL;
    struct extent e;
    if (!buf) {
        conv_fail(c, bv_error_setf(&err, ENOMEM, "out of memory for a convert buffer"), &err);
        return NULL;
    }
    while (pop_extent(c, &e)) {
        int r = copy_extent(c, &e, buf, &err);
        if (r < 0) {
            conv_fail(c, r, &err);
            break;
        }
    }
    free(buf);
    return NULL;
}

/* ---- planner (the calling thread) ---- */

/* Queue [start, end) in extents of at most CONV_CHUNK. */
static int queue_range(struct conv *c, uint64_t start, uint64_t end)
{
    while (start < end) {
        uint64_t n = end - start < CONV_CHUNK ? end - start : CONV_CHUNK;
        int r = push_extent(c, start, n);
        if (r < 0)
            return r;
        start += n;
    }
    return 0;
}

static int plan(struct conv *c, bv_error **errp)
{
    uint64_t cursor = 0;                 /* everything below is queued or skipped */
    for (uint64_t off = 0; off < c->size;) {
        struct chain_status cs;
        int r = chain_status(c->src, off, c->size - off, &cs, errp);
        if (r < 0)
            return r;
        uint64_t run_end = off + cs.pnum;
        if (!cs.zero) {
            uint64_t start = align_down64(off, c->granule);
            uint64_t end;
            if (!ck_align_up(run_end, c->granule, &end) || end > c->size)
                end = c->size;
            r = queue_range(c, start > cursor ? start : cursor, end);
            if (r < 0)
                return r;
            cursor = end > cursor ? end : cursor;
        }
        off = run_end;
    }
    return 0;
}

/* ---- setup ---- */

/* Plain copies are bound by page-cache copies and I/O waits: a few workers
 * more than cores keep both busy.  Compression is bound by deflate: one per core. */
static unsigned pick_workers(const struct bv_convert_opts *o)
{
    long n = o->threads ? (long)o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (!o->compress && !o->threads)
        n = n < CONV_PLAIN_WORKERS ? CONV_PLAIN_WORKERS : n;
    return n > CONV_MAX_THREADS ? CONV_MAX_THREADS : (unsigned)n;
}

static void conv_destroy(struct conv *c)
{
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->not_empty);
    pthread_cond_destroy(&c->not_full);
    pthread_cond_destroy(&c->flush_cond);
    bv_error_free(c->err);
}

static int check_opts(bv_node *src, const struct bv_convert_opts *o, bv_error **errp)
{
    if (o->out_format != BV_FMT_RAW && o->out_format != BV_FMT_QCOW2)
        return bv_error_setf(errp, EINVAL, "unknown output format");
    if (o->compress && o->out_format != BV_FMT_QCOW2)
        return bv_error_setf(errp, ENOTSUP, "compression is supported for qcow2 output only");
    if (o->out_format == BV_FMT_RAW && o->cluster_size)
        return bv_error_setf(errp, EINVAL, "raw images have no cluster size");
    if (bv_node_size(src) > BV_MAX_IMAGE_SIZE)
        return bv_error_setf(errp, EFBIG, "source image is too large");
    return 0;
}

static int create_target(bv_node *src, const char *path, const struct bv_convert_opts *o,
                         bv_node **out, bv_error **errp)
{
    struct bv_create_opts co = {
        .path = path, .format = o->out_format, .size = bv_node_size(src),
        .cluster_size = o->cluster_size, .compression_zstd = o->compression_zstd,
        .extended_l2 = o->extended_l2,
    };
    int r = bv_image_create(&co, errp);
    if (r < 0)
        return r;
    struct bv_open_opts oo = { .path = path, .format = o->out_format, .no_backing = true,
                               .no_sync = !o->flush };
    return bv_node_open(&oo, out, errp);
}

/* Start the workers, plan here, then join them. */
static int run_pipeline(struct conv *c, bv_error **errp)
{
    pthread_t threads[CONV_MAX_THREADS], flusher;
    unsigned started = 0;
    int r = 0;
    if (c->flusher && pthread_create(&flusher, NULL, flusher_main, c) != 0)
        c->flusher = false;      /* no early syncs: the final one still runs */
    for (; started < c->nworkers; started++) {
        int e = pthread_create(&threads[started], NULL, worker_main, c);
        if (e) {
            r = bv_error_setf(errp, e, "cannot start a convert thread: %s", strerror(e));
            break;
        }
    }
    if (r == 0)
        r = plan(c, errp);
    if (r < 0 && r != -ECANCELED)
        conv_fail(c, r, NULL);
    finish_planning(c);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (c->flusher)
        stop_flusher(c, flusher);
    if (c->ret < 0) {            /* a worker's error, or ours */
        bv_error_propagate(errp, &c->err);
        return c->ret;
    }
    return r;
}

int bv_image_convert(bv_node *src, const char *dst_path, const struct bv_convert_opts *o,
                     bv_error **errp)
{
    struct conv c = { .src = src, .size = bv_node_size(src), .compress = o->compress };
    int r = check_opts(src, o, errp);
    if (r < 0)
        return r;
    r = create_target(src, dst_path, o, &c.dst, errp);
    if (r < 0)
        return r;
    uint32_t cs = bv_node_cluster_size(c.dst);
    c.granule = cs ? cs : RAW_GRANULE;
    c.size = bv_node_size(c.dst) < c.size ? bv_node_size(c.dst) : c.size;
    c.nworkers = pick_workers(o);
    c.flusher = o->flush;
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.not_empty, NULL);
    pthread_cond_init(&c.not_full, NULL);
    pthread_cond_init(&c.flush_cond, NULL);
    r = run_pipeline(&c, errp);
    if (r == 0 && o->flush)
        r = bv_node_flush(c.dst, errp);
    int rc = bv_node_close(c.dst, r < 0 ? NULL : errp);
    conv_destroy(&c);
    return r < 0 ? r : rc;
}
