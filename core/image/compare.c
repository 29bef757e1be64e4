/*
 * compare: do two images (each with its backing chain) read the same?
 *
 * Algorithm: walk the common length in runs where both chains' block status
 * is constant.  Runs both sides know are zero are skipped without reading.
 * Elsewhere up to CMP_CHUNK bytes are read from each side, the two reads
 * running in parallel (a helper thread reads side B while this thread reads
 * side A), then compared with memcmp; only a mismatching chunk is rescanned
 * sector by sector to find the first differing 512-byte sector.  A side that
 * is zero is not read: the other side's buffer is tested for zeros instead.
 *
 * Sizes: strict mode wants equal sizes; otherwise the tail of the larger
 * image must read as zeros, as qemu-img compare demands.
 *
 * Memory: two CMP_CHUNK buffers.  Threads: one helper for the whole call.
 */
#include "image/image-int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CMP_CHUNK (8u << 20)
#define SECTOR    512u

/* A helper thread that performs one pread at a time for the caller. */
struct side_reader {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started, busy, quit;    /* guarded by lock */
    bv_node *node;
    void *buf;
    uint64_t len, off;
    int ret;
    bv_error *err;
};

static void *side_reader_main(void *arg)
{
    struct side_reader *sr = arg;
    pthread_mutex_lock(&sr->lock);
    for (;;) {
        while (!sr->busy && !sr->quit)
            pthread_cond_wait(&sr->cond, &sr->lock);
        if (sr->quit)
            break;
        pthread_mutex_unlock(&sr->lock);
        int r = bv_node_pread(sr->node, sr->buf, sr->len, sr->off, &sr->err);
        pthread_mutex_lock(&sr->lock);
        sr->ret = r;
        sr->busy = false;
        pthread_cond_broadcast(&sr->cond);
    }
    pthread_mutex_unlock(&sr->lock);
    return NULL;
}

static int side_reader_start(struct side_reader *sr, bv_node *n, bv_error **errp)
{
    memset(sr, 0, sizeof(*sr));
    sr->node = n;
    pthread_mutex_init(&sr->lock, NULL);
    pthread_cond_init(&sr->cond, NULL);
    int r = pthread_create(&sr->thread, NULL, side_reader_main, sr);
    if (r)
        return bv_error_setf(errp, r, "cannot start a reader thread: %s", strerror(r));
    sr->started = true;
    return 0;
}

static void side_reader_submit(struct side_reader *sr, void *buf, uint64_t len, uint64_t off)
{
    pthread_mutex_lock(&sr->lock);
    sr->buf = buf;
    sr->len = len;
    sr->off = off;
    sr->busy = true;
    pthread_cond_broadcast(&sr->cond);
    pthread_mutex_unlock(&sr->lock);
}

static int side_reader_wait(struct side_reader *sr, bv_error **errp)
{
    pthread_mutex_lock(&sr->lock);
    while (sr->busy)
        pthread_cond_wait(&sr->cond, &sr->lock);
    int r = sr->ret;
    pthread_mutex_unlock(&sr->lock);
    bv_error_propagate(errp, &sr->err);
    return r;
}

static void side_reader_stop(struct side_reader *sr)
{
    if (sr->started) {
        pthread_mutex_lock(&sr->lock);
        sr->quit = true;
        pthread_cond_broadcast(&sr->cond);
        pthread_mutex_unlock(&sr->lock);
        pthread_join(sr->thread, NULL);
    }
    pthread_mutex_destroy(&sr->lock);
    pthread_cond_destroy(&sr->cond);
    bv_error_free(sr->err);
}

struct cmp_state {
    bv_node *a, *b;
    uint8_t *bufa, *bufb;
    struct side_reader rb;
    uint64_t first_diff;         /* UINT64_MAX while none found */
};

/* Offset (from buf) of the first 512-byte sector that is not all zeros. */
static uint64_t first_nonzero_sector(const uint8_t *buf, uint64_t len)
{
    for (uint64_t i = 0; i < len; i += SECTOR) {
        uint64_t n = len - i < SECTOR ? len - i : SECTOR;
        if (!buf_is_zero(buf + i, n))
            return i;
    }
    return len;
}

static uint64_t first_differing_sector(const uint8_t *x, const uint8_t *y, uint64_t len)
{
    for (uint64_t i = 0; i < len; i += SECTOR) {
        uint64_t n = len - i < SECTOR ? len - i : SECTOR;
        if (memcmp(x + i, y + i, n))
            return i;
    }
    return len;
}

/* Side n (zero on the other side) must read as zeros over [off, off+len). */
static int check_zero_range(bv_node *n, uint8_t *buf, uint64_t off, uint64_t len,
                            uint64_t *diff, bv_error **errp)
{
    int r = bv_node_pread(n, buf, len, off, errp);
    if (r < 0)
        return r;
    if (!buf_is_zero(buf, len))
        *diff = off + first_nonzero_sector(buf, len);
    return 0;
}

static int compare_both_read(struct cmp_state *s, uint64_t off, uint64_t len, bv_error **errp)
{
    side_reader_submit(&s->rb, s->bufb, len, off);
    int ra = bv_node_pread(s->a, s->bufa, len, off, errp);
    int rb = side_reader_wait(&s->rb, errp);
    if (ra < 0 || rb < 0)
        return ra < 0 ? ra : rb;
    if (memcmp(s->bufa, s->bufb, len))
        s->first_diff = off + first_differing_sector(s->bufa, s->bufb, len);
    return 0;
}

/* Compare [off, off+len) where len ≤ CMP_CHUNK and each side's status is constant. */
static int compare_run(struct cmp_state *s, const struct chain_status *sa,
                       const struct chain_status *sb, uint64_t off, uint64_t len,
                       bv_error **errp)
{
    if (sa->zero && sb->zero)
        return 0;
    if (sa->zero)
        return check_zero_range(s->b, s->bufb, off, len, &s->first_diff, errp);
    if (sb->zero)
        return check_zero_range(s->a, s->bufa, off, len, &s->first_diff, errp);
    return compare_both_read(s, off, len, errp);
}

static int compare_common(struct cmp_state *s, uint64_t size, bv_error **errp)
{
    for (uint64_t off = 0; off < size && s->first_diff == UINT64_MAX;) {
        struct chain_status sa, sb;
        int r = chain_status(s->a, off, size - off, &sa, errp);
        if (r == 0)
            r = chain_status(s->b, off, size - off, &sb, errp);
        if (r < 0)
            return r;
        uint64_t n = sa.pnum < sb.pnum ? sa.pnum : sb.pnum;
        if (!(sa.zero && sb.zero) && n > CMP_CHUNK)
            n = CMP_CHUNK;
        r = compare_run(s, &sa, &sb, off, n, errp);
        if (r < 0)
            return r;
        off += n;
    }
    return 0;
}

/* The part of n past from must read as zeros. */
static int compare_tail(bv_node *n, uint8_t *buf, uint64_t from, uint64_t *diff,
                        bv_error **errp)
{
    uint64_t size = bv_node_size(n);
    for (uint64_t off = from; off < size && *diff == UINT64_MAX;) {
        struct chain_status cs;
        int r = chain_status(n, off, size - off, &cs, errp);
        if (r < 0)
            return r;
        uint64_t len = cs.pnum;
        if (!cs.zero) {
            len = len < CMP_CHUNK ? len : CMP_CHUNK;
            r = check_zero_range(n, buf, off, len, diff, errp);
            if (r < 0)
                return r;
        }
        off += len;
    }
    return 0;
}

static int compare_sized(struct cmp_state *s, bv_error **errp)
{
    uint64_t sa = bv_node_size(s->a), sb = bv_node_size(s->b);
    uint64_t common = sa < sb ? sa : sb;
    int r = compare_common(s, common, errp);
    if (r < 0 || s->first_diff != UINT64_MAX || sa == sb)
        return r;
    return sa > sb ? compare_tail(s->a, s->bufa, common, &s->first_diff, errp)
                   : compare_tail(s->b, s->bufb, common, &s->first_diff, errp);
}

int bv_image_compare(bv_node *a, bv_node *b, bool strict, bool *identical,
                     uint64_t *first_diff, bv_error **errp)
{
    struct cmp_state s = { .a = a, .b = b, .first_diff = UINT64_MAX };
    uint64_t sa = bv_node_size(a), sb = bv_node_size(b);
    int r = 0;
    if (strict && sa != sb) {
        s.first_diff = sa < sb ? sa : sb;
        goto out;
    }
    s.bufa = malloc(CMP_CHUNK);
    s.bufb = malloc(CMP_CHUNK);
    if (!s.bufa || !s.bufb) {
        r = bv_error_setf(errp, ENOMEM, "out of memory for compare buffers");
        goto out_free;
    }
    r = side_reader_start(&s.rb, b, errp);
    if (r == 0)
        r = compare_sized(&s, errp);
    side_reader_stop(&s.rb);
out_free:
    free(s.bufa);
    free(s.bufb);
out:
    if (r == 0) {
        *identical = s.first_diff == UINT64_MAX;
        *first_diff = s.first_diff;
    }
    return r;
}
