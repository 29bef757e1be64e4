/*
 * convert: copy what a chain reads as into one new image (raw or qcow2).
 *
 * Pipeline.  This thread plans and reads; writer threads write.
 *   plan:  walk the source chain's block status; runs that read as zero
 *          (zero clusters, holes, unallocated everywhere) are skipped, since a
 *          fresh image reads zeros there.  Data runs are widened to the
 *          granule (the target cluster, or 4 KiB for raw) and cut into slots
 *          of at most CONV_CHUNK bytes.
 *   read:  each slot is filled with one bv_node_pread of the source chain.
 *   write: a writer skips granules that turned out to be all zeros and
 *          writes the rest: runs of granules with one pwrite (one writer, so
 *          the target is written in order), or, with compression, one
 *          BV_WRITE_COMPRESSED pwrite per whole cluster from several writers
 *          at once so that deflate runs on every core.
 * Slots cycle between a free list and a ready FIFO, both guarded by
 * conv.lock; the number of slots bounds memory to nslots * CONV_CHUNK.
 *
 * Errors: the first error wins and stops every thread; the target file is
 * left behind (as qemu-img convert does) and the error says where.
 * Durability: with o->flush the target is flushed (metadata, then
 * fdatasync) before returning; bv_node_close flushes in any case.
 */
#include "image/image-int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/checked.h"

#define CONV_CHUNK        (4u << 20)
#define CONV_MAX_THREADS  16
#define CONV_MAX_SLOTS    (2 * CONV_MAX_THREADS + 2)
#define RAW_GRANULE       4096u

struct slot {
    uint8_t *buf;
    uint64_t off, len;
};

struct conv {
    bv_node *src, *dst;
    uint64_t size;
    uint32_t granule;            /* zero-skip and planning unit; the cluster when compressing */
    bool compress;
    unsigned nwriters, nslots;
    struct slot slots[CONV_MAX_SLOTS];

    pthread_mutex_t lock;        /* guards everything below */
    pthread_cond_t cond;
    unsigned free_list[CONV_MAX_SLOTS], nfree;
    unsigned ready[CONV_MAX_SLOTS], ready_head, nready;   /* FIFO ring */
    bool reading_done;
    int ret;                     /* first error, 0 while none */
    bv_error *err;
};

/* ---- the slot queue ---- */

static void conv_fail(struct conv *c, int ret, bv_error **errp)
{
    pthread_mutex_lock(&c->lock);
    if (c->ret == 0)
        c->ret = ret;
    bv_error_propagate(&c->err, errp);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* A free slot index, or -1 once the conversion failed. */
static int take_free(struct conv *c)
{
    pthread_mutex_lock(&c->lock);
    while (c->nfree == 0 && c->ret == 0)
        pthread_cond_wait(&c->cond, &c->lock);
    int i = c->ret ? -1 : (int)c->free_list[--c->nfree];
    pthread_mutex_unlock(&c->lock);
    return i;
}

static void put_free(struct conv *c, unsigned i)
{
    pthread_mutex_lock(&c->lock);
    c->free_list[c->nfree++] = i;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void put_ready(struct conv *c, unsigned i)
{
    pthread_mutex_lock(&c->lock);
    c->ready[(c->ready_head + c->nready) % c->nslots] = i;
    c->nready++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* The next filled slot, or -1 when reading is over (or failed) and none is left. */
static int take_ready(struct conv *c)
{
    pthread_mutex_lock(&c->lock);
    while (c->nready == 0 && !c->reading_done && c->ret == 0)
        pthread_cond_wait(&c->cond, &c->lock);
    int i = -1;
    if (c->nready > 0 && c->ret == 0) {
        i = (int)c->ready[c->ready_head];
        c->ready_head = (c->ready_head + 1) % c->nslots;
        c->nready--;
    }
    pthread_mutex_unlock(&c->lock);
    return i;
}

static void finish_reading(struct conv *c)
{
    pthread_mutex_lock(&c->lock);
    c->reading_done = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* ---- writers ---- */

/* Length of the granule at off within a slot ending at end. */
static uint64_t granule_len(const struct conv *c, uint64_t off, uint64_t end)
{
    return end - off < c->granule ? end - off : c->granule;
}

static int write_compressed(struct conv *c, const struct slot *s, bv_error **errp)
{
    uint64_t end = s->off + s->len;
    for (uint64_t off = s->off; off < end; off += c->granule) {
        uint64_t n = granule_len(c, off, end);
        const uint8_t *p = s->buf + (off - s->off);
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

/* Writes the non-zero granule runs of the slot, each with one pwrite. */
static int write_plain(struct conv *c, const struct slot *s, bv_error **errp)
{
    uint64_t end = s->off + s->len;
    uint64_t run = UINT64_MAX;           /* start of the current non-zero run */
    for (uint64_t off = s->off; off <= end; off += c->granule) {
        bool zero = off == end || buf_is_zero(s->buf + (off - s->off), granule_len(c, off, end));
        if (!zero && run == UINT64_MAX)
            run = off;
        if (zero && run != UINT64_MAX) {
            uint64_t stop = off < end ? off : end;
            int r = bv_node_pwrite(c->dst, s->buf + (run - s->off), stop - run, run, 0, errp);
            if (r < 0)
                return r;
            run = UINT64_MAX;
        }
        if (off == end)
            break;
    }
    return 0;
}

static void *writer_main(void *arg)
{
    struct conv *c = arg;
    int i;
    while ((i = take_ready(c)) >= 0) {
        bv_error *err = NULL;
        const struct slot *s = &c->slots[i];
        int r = c->compress ? write_compressed(c, s, &err) : write_plain(c, s, &err);
        put_free(c, (unsigned)i);
        if (r < 0) {
            conv_fail(c, r, &err);
            break;
        }
    }
    return NULL;
}

/* ---- planner and reader (the calling thread) ---- */

static int read_slot(struct conv *c, uint64_t off, uint64_t len, bv_error **errp)
{
    int i = take_free(c);
    if (i < 0)
        return -ECANCELED;
    struct slot *s = &c->slots[i];
    s->off = off;
    s->len = len;
    int r = bv_node_pread(c->src, s->buf, len, off, errp);
    if (r < 0) {
        put_free(c, (unsigned)i);
        return r;
    }
    put_ready(c, (unsigned)i);
    return 0;
}

/* Queue [start, end) in slots of at most CONV_CHUNK. */
static int read_range(struct conv *c, uint64_t start, uint64_t end, bv_error **errp)
{
    while (start < end) {
        uint64_t n = end - start < CONV_CHUNK ? end - start : CONV_CHUNK;
        int r = read_slot(c, start, n, errp);
        if (r < 0)
            return r;
        start += n;
    }
    return 0;
}

static int plan_and_read(struct conv *c, bv_error **errp)
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
            r = read_range(c, start > cursor ? start : cursor, end, errp);
            if (r < 0)
                return r;
            cursor = end > cursor ? end : cursor;
        }
        off = run_end;
    }
    return 0;
}

/* ---- setup ---- */

static unsigned pick_threads(const struct bv_convert_opts *o)
{
    long n = o->threads ? (long)o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > CONV_MAX_THREADS ? CONV_MAX_THREADS : (unsigned)n;
}

static int conv_init(struct conv *c, const struct bv_convert_opts *o, bv_error **errp)
{
    c->nwriters = o->compress ? pick_threads(o) : 1;
    c->nslots = c->nwriters * 2 + 2;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    for (unsigned i = 0; i < c->nslots; i++) {
        c->slots[i].buf = malloc(CONV_CHUNK);
        if (!c->slots[i].buf)
            return bv_error_setf(errp, ENOMEM, "out of memory for convert buffers");
        c->free_list[c->nfree++] = i;
    }
    return 0;
}

static void conv_destroy(struct conv *c)
{
    for (unsigned i = 0; i < c->nslots; i++)
        free(c->slots[i].buf);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
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
        .cluster_size = o->cluster_size,
    };
    int r = bv_image_create(&co, errp);
    if (r < 0)
        return r;
    struct bv_open_opts oo = { .path = path, .format = o->out_format, .no_backing = true };
    return bv_node_open(&oo, out, errp);
}

/* Start the writers, plan and read here, then join them. */
static int run_pipeline(struct conv *c, bv_error **errp)
{
    pthread_t threads[CONV_MAX_THREADS];
    unsigned started = 0;
    int r = 0;
    for (; started < c->nwriters; started++) {
        int e = pthread_create(&threads[started], NULL, writer_main, c);
        if (e) {
            r = bv_error_setf(errp, e, "cannot start a writer thread: %s", strerror(e));
            break;
        }
    }
    if (r == 0)
        r = plan_and_read(c, errp);
    if (r < 0 && r != -ECANCELED)
        conv_fail(c, r, NULL);
    finish_reading(c);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (c->ret < 0) {            /* a writer's error, or ours */
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
    r = conv_init(&c, o, errp);
    if (r == 0)
        r = run_pipeline(&c, errp);
    if (r == 0 && o->flush)
        r = bv_node_flush(c.dst, errp);
    int rc = bv_node_close(c.dst, r < 0 ? NULL : errp);
    conv_destroy(&c);
    return r < 0 ? r : rc;
}
