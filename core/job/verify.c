/*
 * Verify: the checksum pass over a link's own blocks, the compare pass's
 * job wiring, and the verify job driver.  See include/bv/verify.h.
 *
 * Checksum pass.  The work list is the link's CRC map: its present blocks,
 * taken in ascending runs of consecutive blocks cut at BV_VERIFY_CHUNK
 * bytes.  Each reader thread claims the next run under one mutex (a cursor
 * over block indexes), reads it with one pread through the point (so a run
 * costs one request however many blocks it holds), and computes each
 * block's CRC32 right away, while the bytes it just copied are still in
 * the CPU cache (a 1 MiB buffer per thread).  Bad blocks are collected per
 * thread (rare: each costs 8 bytes) and merged, sorted, at the end.
 * Memory: threads * BV_VERIFY_CHUNK plus the bad list.
 *
 * Why threads: on this 2-core machine a single reader spends about as long
 * copying from the page cache as computing CRCs; two readers overlap the
 * two and keep the verify near the plain read bandwidth (bench/README.md).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bv/verify.h"
#include "util/crc32.h"

/* ---- the checksum pass ---------------------------------------------------- */

struct bad_list {
    uint64_t *v;
    size_t n, cap;
};

struct blocks_state {
    const struct bv_verify_blocks_opts *o;
    uint64_t disk_size;
    uint32_t chunk;                      /* bytes per claimed run */
    uint32_t piece;                      /* bytes per read (a multiple of BV_CRC_BLOCK) */
    pthread_mutex_t lock;                /* guards next, err, first_* */
    uint64_t next;                       /* first block not yet claimed */
    int err;                             /* first failure (-errno), 0 */
    bv_error *error;                     /* its message */
    uint64_t first_bad;                  /* lowest bad block index, UINT64_MAX */
    uint8_t sample[BV_VERIFY_SAMPLE];
    uint32_t sample_len;
    _Atomic uint64_t checked, read;
};

struct reader {
    struct blocks_state *s;
    struct bad_list bad;
    bool direct;                         /* read the link's file beneath the format */
    int err;
};

static int bad_push(struct bad_list *b, uint64_t block)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        uint64_t *v = realloc(b->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = block;
    return 0;
}

/* Claim the next run of consecutive present blocks: [*first, *first+*n). */
static bool claim(struct blocks_state *s, uint64_t *first, uint64_t *n)
{
    const uint64_t max = s->chunk / BV_CRC_BLOCK;
    pthread_mutex_lock(&s->lock);
    uint64_t b = s->next;
    uint32_t crc;
    bool ok = s->err == 0 && bv_crcmap_next(s->o->map, &b, &crc);
    if (ok) {
        uint64_t k = 1;
        while (k < max && bv_crcmap_get(s->o->map, b + k, &crc))
            k++;
        *first = b;
        *n = k;
        s->next = b + k;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static void fail(struct blocks_state *s, int r, bv_error *e)
{
    pthread_mutex_lock(&s->lock);
    if (s->err == 0) {
        s->err = r;
        s->error = e;
        e = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    bv_error_free(e);
}

static void note_bad(struct blocks_state *s, uint64_t block, const uint8_t *data, uint64_t len)
{
    pthread_mutex_lock(&s->lock);
    if (block < s->first_bad) {
        s->first_bad = block;
        s->sample_len = len < BV_VERIFY_SAMPLE ? (uint32_t)len : BV_VERIFY_SAMPLE;
        memcpy(s->sample, data, s->sample_len);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Fill buf with the point's bytes [off, off+len).  Where the link itself
 * holds the data uncompressed (block status: BV_BS_DATA at a host offset),
 * the bytes are read straight from its file: one pread per piece, no format
 * driver work per request (qcow2's lookups were done once, by the block
 * status of the whole extent, cached in *bs across pieces).  Anything else
 * (zeros, compressed clusters, data from the backing chain, a filter in the
 * way) is read through the point. */
static int read_piece(struct reader *rd, struct bv_block_status *bs, uint64_t *bs_off,
                      uint8_t *buf, uint64_t off, uint64_t len, uint64_t run_end)
{
    bv_node *point = rd->s->o->point;
    bv_error *e = NULL;
    int r = 0;
    while (len && r >= 0) {
        if (off < *bs_off || off >= *bs_off + bs->pnum) {
            r = bv_node_block_status(point, off, run_end - off, bs, &e);
            if (r < 0)
                break;
            *bs_off = off;
        }
        uint64_t in = *bs_off + bs->pnum - off, n = len < in ? len : in;
        bool direct = rd->direct && (bs->flags & BV_BS_DATA) && (bs->flags & BV_BS_ALLOCATED) &&
                      !(bs->flags & BV_BS_COMPRESSED) && bs->host_offset;
        if (direct) {
            r = bv_node_pread_host(point, buf, n, bs->host_offset + (off - *bs_off), &e);
            if (r == -ENOTSUP) {              /* a filter in the way: read through it */
                bv_error_free(e);
                e = NULL;
                rd->direct = false;
                r = 0;
                continue;
            }
        } else {
            r = bv_node_pread(point, buf, n, off, &e);
        }
        buf += n;
        off += n;
        len -= n;
    }
    if (r < 0)
        fail(rd->s, r, e);
    return r < 0 ? r : 0;
}

/* Read one run and check its blocks, a piece at a time: each piece is
 * CRC-checked right after its read, while it is still in the CPU's L2. */
static int check_run(struct reader *rd, uint8_t *buf, uint64_t first, uint64_t n)
{
    struct blocks_state *s = rd->s;
    const uint64_t per_piece = s->piece / BV_CRC_BLOCK;
    uint64_t run_end = first * BV_CRC_BLOCK;
    for (uint64_t i = 0; i < n; i++)
        run_end += bv_crc_block_len(s->disk_size, first + i);
    struct bv_block_status bs = { 0 };
    uint64_t bs_off = 0;
    int r = 0;
    for (uint64_t b = first; b < first + n && r == 0; b += per_piece) {
        uint64_t k = first + n - b < per_piece ? first + n - b : per_piece;
        uint64_t off = b * BV_CRC_BLOCK, len = 0;
        for (uint64_t i = 0; i < k; i++)
            len += bv_crc_block_len(s->disk_size, b + i);
        r = read_piece(rd, &bs, &bs_off, buf, off, len, run_end);
        if (r < 0)
            return r;
        atomic_fetch_add(&s->read, len);
        uint64_t pos = 0;
        for (uint64_t i = 0; i < k && r == 0; i++) {
            uint64_t bl = bv_crc_block_len(s->disk_size, b + i);
            uint32_t want = 0;
            bv_crcmap_get(s->o->map, b + i, &want);
            uint32_t got = bv_crc32(0, buf + pos, bl);
            if (got != want) {
                r = bad_push(&rd->bad, b + i);
                note_bad(s, b + i, buf + pos, bl);
            }
            pos += bl;
        }
        if (r < 0)
            fail(s, r, NULL);
        atomic_fetch_add(&s->checked, k);
        if (s->o->job)
            bv_job_progress_add(s->o->job, len);
    }
    return r;
}

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    struct blocks_state *s = rd->s;
    uint8_t *buf = malloc(s->piece);
    if (!buf) {
        fail(s, -ENOMEM, NULL);
        return NULL;
    }
    uint64_t first, n;
    while (claim(s, &first, &n)) {
        if (s->o->job && bv_job_is_cancelled(s->o->job)) {
            fail(s, -ECANCELED, NULL);
            break;
        }
        if (check_run(rd, buf, first, n) < 0)
            break;
    }
    free(buf);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorted bad blocks -> merged extents (capped: the last one grows). */
static int merge_bad(struct bv_verify_blocks_result *res, const uint64_t *v, size_t n,
                     uint64_t disk_size)
{
    size_t cap = n < BV_VERIFY_MAX_BAD_EXTENTS ? n : BV_VERIFY_MAX_BAD_EXTENTS;
    res->extents = cap ? calloc(cap, sizeof(*res->extents)) : NULL;
    if (cap && !res->extents)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint64_t off = v[i] * BV_CRC_BLOCK, len = bv_crc_block_len(disk_size, v[i]);
        res->bad_blocks++;
        res->bad_bytes += len;
        struct bv_verify_extent *last = res->n_extents ? &res->extents[res->n_extents - 1]
                                                       : NULL;
        if (last && last->offset + last->length == off) {
            last->length += len;
            continue;
        }
        res->extents_total++;
        if (res->n_extents < cap)
            res->extents[res->n_extents++] = (struct bv_verify_extent){ off, len };
        else
            last->length = off + len - last->offset;
    }
    return 0;
}

static void result_init(struct bv_verify_blocks_result *res)
{
    memset(res, 0, sizeof(*res));
    res->first_bad = UINT64_MAX;
}

int bv_verify_blocks(const struct bv_verify_blocks_opts *o, struct bv_verify_blocks_result *res,
                     bv_error **errp)
{
    result_init(res);
    struct blocks_state s = {
        .o = o, .disk_size = bv_crcmap_disk_size(o->map), .first_bad = UINT64_MAX,
    };
    s.chunk = o->chunk / BV_CRC_BLOCK * BV_CRC_BLOCK;
    if (s.chunk == 0 || s.chunk > (16u << 20))
        s.chunk = BV_VERIFY_CHUNK;
    s.piece = o->piece / BV_CRC_BLOCK * BV_CRC_BLOCK;
    if (s.piece == 0 || s.piece > s.chunk)
        s.piece = BV_VERIFY_PIECE < s.chunk ? BV_VERIFY_PIECE : s.chunk;
    if (bv_node_size(o->point) < s.disk_size)
        return bv_error_setf(errp, EINVAL, "'%s' is smaller than its CRC map",
                             bv_node_filename(o->point));
    pthread_mutex_init(&s.lock, NULL);
    unsigned nt = o->threads ? o->threads : BV_VERIFY_THREADS;
    if (nt > 16)
        nt = 16;
    struct reader rd[16];
    pthread_t th[16];
    bool started[16] = { false };
    memset(rd, 0, sizeof(rd));
    for (unsigned i = 0; i < nt; i++) {
        rd[i].s = &s;
        rd[i].direct = true;
        started[i] = i > 0 && pthread_create(&th[i], NULL, reader_main, &rd[i]) == 0;
    }
    reader_main(&rd[0]);                  /* the calling thread is reader 0 */
    struct bad_list all = { NULL, 0, 0 };
    for (unsigned i = 0; i < nt; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        for (size_t k = 0; k < rd[i].bad.n && s.err == 0; k++)
            if (bad_push(&all, rd[i].bad.v[k]) < 0)
                s.err = -ENOMEM;
        free(rd[i].bad.v);
    }
    pthread_mutex_destroy(&s.lock);
    res->blocks_checked = atomic_load(&s.checked);
    res->bytes_read = atomic_load(&s.read);
    if (all.n)
        qsort(all.v, all.n, sizeof(*all.v), cmp_u64);
    int r = s.err;
    if (r == 0 && merge_bad(res, all.v, all.n, s.disk_size) < 0)
        r = -ENOMEM;
    free(all.v);
    if (s.first_bad != UINT64_MAX) {
        res->first_bad = s.first_bad * BV_CRC_BLOCK;
        res->sample_len = s.sample_len;
        memcpy(res->sample, s.sample, s.sample_len);
    }
    if (r == 0) {
        bv_error_free(s.error);
        return 0;
    }
    if (s.error) {
        bv_error_propagate(errp, &s.error);
        return r;
    }
    return bv_error_setf(errp, -r, r == -ECANCELED ? "the verify was cancelled"
                                                   : "checksum verify failed: %s",
                         strerror(-r));
}

void bv_verify_blocks_free(struct bv_verify_blocks_result *res)
{
    free(res->extents);
    res->extents = NULL;
    res->n_extents = 0;
}

/* ---- the compare pass ----------------------------------------------------- */

struct cmp_progress {
    struct bv_job *job;
    uint64_t reported;
    bool len_set;
};

static void cmp_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct cmp_progress *p = opaque;
    if (!p->job)
        return;
    if (!p->len_set) {
        bv_job_set_len(p->job, total);
        p->len_set = true;
    }
    if (done > p->reported) {
        bv_job_progress_add(p->job, done - p->reported);
        p->reported = done;
    }
}

static bool cmp_should_stop(void *opaque)
{
    struct cmp_progress *p = opaque;
    return p->job && bv_job_is_cancelled(p->job);
}

int bv_verify_compare(struct bv_job *job, bv_node *test, bv_node *ref, size_t max_extents,
                      struct bv_compare_report *rep, bv_error **errp)
{
    struct cmp_progress p = { job, 0, false };
    if (job) {
        uint64_t a = bv_node_size(test), b = bv_node_size(ref);
        bv_job_set_len(job, a > b ? a : b);
        p.len_set = true;
    }
    struct bv_compare_opts o = {
        .strict = false, .full = true, .max_extents = max_extents,
        .progress = cmp_progress, .should_stop = cmp_should_stop, .opaque = &p,
    };
    return bv_image_compare_ex(test, ref, &o, rep, errp);
}

/* ---- the job driver ------------------------------------------------------- */

struct verify_job {
    struct bv_verify_job_opts o;
};

static int verify_run(struct bv_job *job, bv_error **errp)
{
    struct verify_job *vj = bv_job_opaque(job);
    return vj->o.run(job, vj->o.opaque, errp);
}

static void verify_nothing(struct bv_job *job)
{
    (void)job;
}

static void verify_free(struct bv_job *job)
{
    struct verify_job *vj = bv_job_opaque(job);
    if (!vj)
        return;
    if (vj->o.release)
        vj->o.release(vj->o.release_opaque);
    free(vj);
}

static const struct bv_job_driver verify_driver = {
    .type = "verify",
    .run = verify_run,
    .commit = verify_nothing,
    .abort = verify_nothing,
    .clean = verify_nothing,
    .free = verify_free,
};

int bv_verify_job_create(struct bv_job_ctx *ctx, const struct bv_job_opts *jo,
                         const struct bv_verify_job_opts *o, struct bv_job **out,
                         bv_error **errp)
{
    struct verify_job *vj = calloc(1, sizeof(*vj));
    if (!vj) {
        if (o->release)
            o->release(o->release_opaque);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    vj->o = *o;
    return bv_job_create(ctx, &verify_driver, vj, jo, out, errp);   /* failure: verify_free ran */
}
