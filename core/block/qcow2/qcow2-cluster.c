/*
 * qcow2 guest-to-host mapping and the data path: reads (coalesced runs,
 * backing read-through, zero and compressed clusters), writes (in place for
 * clusters we own, else allocate contiguously with copy-on-write of partial
 * head/tail clusters), zeroing and discard (v3 ZERO flag), block status.
 *
 * Crash-safety order in this file (the rest is in qcow2-refcount.c):
 *   allocate (refcount raised in cache) -> write guest data / COW data to
 *   the new clusters -> update the L2 entries in the cache -> queue a free
 *   for whatever host space the old entries held.  A new L2 table is
 *   zeroed in the cache and its L1 entry changes only in memory; the L1 is
 *   written after the L2 tables at flush.  So a mapping never reaches the
 *   disk before the data and refcounts it depends on.
 *
 * Runs: lookups return the longest leading run of one type (and, for data,
 * contiguous host offsets) so a read or write of many clusters is one
 * pread/pwrite, and an unallocated L1 entry is skipped in O(1).
 *
 * Extended L2 (subclusters, see qcow2-int.h): the unit of a run is the
 * subcluster (s->sc_bits) instead of the cluster.  A write into a cluster
 * without host data allocates the cluster but writes (and COW-fills) only
 * the subclusters it touches and marks those allocated; the others keep
 * reading as zeros or from the backing file.  A write into an owned cluster
 * whose first or last touched subcluster is unallocated and only partly
 * covered fills that subcluster from its old content; such a step covers
 * one cluster and holds it in flight like an allocation, so no other writer
 * fills the same subcluster at the same time.  Bitmap bits are set under the
 * lock after the data is written, and only while the entry still maps the
 * host cluster that was written (a discard in between wins).  Whole-cluster
 * zeroing sets all zero bits; compressed clusters (zlib or zstd) are whole.
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "util/checked.h"
#include "util/endian.h"

struct q_run {
    enum q_type type;
    uint64_t host;        /* Q_NORMAL: host offset of the run's first byte */
    uint64_t len;         /* bytes */
    uint64_t l2e;         /* Q_COMPRESSED: the descriptor */
};

void qcow2_compressed_range(const struct qcow2_state *s, uint64_t l2e, uint64_t *off,
                            uint64_t *len)
{
    uint64_t coff = l2e & s->coffset_mask;
    uint64_t nsec = ((l2e >> s->csize_shift) & s->csize_mask) + 1;
    *off = coff;
    *len = nsec * 512 - (coff & 511);
}

uint64_t qcow2_compressed_entry(const struct qcow2_state *s, uint64_t off, uint64_t len)
{
    uint64_t extra = ((off + len - 1) >> 9) - (off >> 9);   /* sectors after the first */
    return QCOW_OFLAG_COMPRESSED | (extra << s->csize_shift) | off;
}

static int load_check(bv_node *n, uint64_t off, uint64_t l1i, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t flen;
    if (off & (s->cluster_size - 1))
        return qcow2_corrupt(errp, off, "L2 table offset 0x%" PRIx64 " (L1 index %" PRIu64
                             ") is not cluster aligned", off, l1i);
    if (qcow2_cache_contains(&s->l2, off))
        return 0;
    int r = bv_child_length(n->file, &flen, errp);
    if (r == 0 && off >= flen)
        r = qcow2_corrupt(errp, off, "L2 table offset 0x%" PRIx64 " (L1 index %" PRIu64
                          ") is past the end of the file", off, l1i);
    return r;
}

static int overlap_guard_locked(bv_node *n, uint64_t off, uint64_t len, bv_error **errp);

int qcow2_get_l2_locked(bv_node *n, uint64_t l1i, bool alloc, struct qcow2_cache_entry **e,
                        bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t first, got;
    *e = NULL;
    if (l1i >= s->l1_size)
        return qcow2_corrupt(errp, s->l1_offset, "L1 index %" PRIu64 " beyond the L1 table",
                             l1i);
    uint64_t off = s->l1[l1i] & L1E_OFFSET_MASK;
    if (off) {
        int r = load_check(n, off, l1i, errp);
        return r < 0 ? r : qcow2_cache_get_locked(n, &s->l2, off, false, e, errp);
    }
    if (!alloc)
        return 0;
    bv_node_event(n->file, BV_EV_L2_ALLOC_WRITE);
    int r = qcow2_alloc_clusters_locked(n, 1, true, &first, &got, errp);
    if (r == 0)                  /* refcounts that call metadata free (even the header) */
        r = overlap_guard_locked(n, first, s->cluster_size, errp);
    if (r == 0)
        r = qcow2_cache_get_locked(n, &s->l2, first, true, e, errp);
    if (r < 0)
        return r;
    (*e)->dirty = true;
    s->l1[l1i] = first | QCOW_OFLAG_COPIED;
    if (s->l1_dirty_hi <= s->l1_dirty_lo) {
        s->l1_dirty_lo = (uint32_t)l1i;
        s->l1_dirty_hi = (uint32_t)l1i + 1;
    } else {
        if (l1i < s->l1_dirty_lo)
            s->l1_dirty_lo = (uint32_t)l1i;
        if (l1i + 1 > s->l1_dirty_hi)
            s->l1_dirty_hi = (uint32_t)l1i + 1;
    }
    return 0;
}

static int check_data_entry(const struct qcow2_state *s, uint64_t e, bv_error **errp)
{
    if (qcow2_entry_type(s, e) == Q_NORMAL && (e & L2E_OFFSET_MASK & (s->cluster_size - 1)))
        return qcow2_corrupt(errp, e & L2E_OFFSET_MASK, "offset=%" PRIx64 ": Data cluster is "
                             "not properly aligned; L2 entry corrupted.", (uint64_t)(e & L2E_OFFSET_MASK));
    return 0;
}

/* Longest leading run of [off, off+len) with one mapping type (locked).
 * Steps one allocation unit (cluster, or subcluster with extended L2) at a
 * time; a compressed cluster or an unallocated L2 table is one step. */
static int map_run_locked(bv_node *n, uint64_t off, uint64_t len, struct q_run *run,
                          bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint32_t ub = s->sc_bits, upc = s->cluster_bits - ub;   /* log2 units per cluster */
    uint64_t us = 1ULL << ub, per = 1ULL << s->l2_bits;
    uint64_t ui = off >> ub, covered = 0, expect = 0;
    struct qcow2_cache_entry *e = NULL;
    bool first = true;
    while (covered < len) {
        uint64_t ci = ui >> upc, l1i = ci >> s->l2_bits, l2i = ci & (per - 1), host = 0, ent = 0;
        uint32_t sc = (uint32_t)(ui & ((1ULL << upc) - 1));
        int r = qcow2_get_l2_locked(n, l1i, false, &e, errp);
        if (r < 0)
            return r;
        enum q_type t = Q_UNALLOC;
        uint64_t span = e ? 1 : ((per - l2i) << upc) - sc;     /* units */
        if (e) {
            ent = qcow2_l2_get(s, e, l2i);
            r = check_data_entry(s, ent, errp);
            if (r == 0)
                r = qcow2_sc_unit_status(s, ent, qcow2_l2_get_bm(s, e, l2i), sc, &t, &host, errp);
            if (r < 0)
                return r;
            if (t == Q_COMPRESSED)
                span = (1ULL << upc) - sc;
        }
        if (first) {
            run->type = t;
            run->l2e = ent;
            run->host = host + (off & (us - 1));
            expect = host;
        } else if (t != run->type || t == Q_COMPRESSED || (t == Q_NORMAL && host != expect)) {
            break;
        }
        covered += (span << ub) - (first ? (off & (us - 1)) : 0);
        ui += span;
        expect += us;
        first = false;
        if (t == Q_COMPRESSED)
            break;
    }
    run->len = covered < len ? covered : len;
    return 0;
}

static int read_backing(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    bv_node *b = n->backing;
    uint64_t bsize = b ? bv_node_size(b) : 0, part = 0;
    if (b && off < bsize) {
        part = bsize - off < len ? bsize - off : len;
        bv_node_event(n->file, BV_EV_READ_BACKING_AIO);
        int r = bv_node_pread(b, buf, part, off, errp);
        if (r < 0)
            return r;
    }
    memset((uint8_t *)buf + part, 0, len - part);
    return 0;
}

/* Raw deflate stream (windowBits -12) in -> exactly olen bytes: 0 or -1. */
static int zlib_inflate(const uint8_t *in, uint64_t ilen, uint8_t *out, uint64_t olen)
{
    z_stream z = { .next_in = (uint8_t *)in, .avail_in = (uInt)ilen, .next_out = out,
                   .avail_out = (uInt)olen };
    int zr = inflateInit2(&z, -12);
    if (zr == Z_OK)
        zr = inflate(&z, Z_FINISH);
    int r = (zr != Z_STREAM_END && zr != Z_BUF_ERROR && zr != Z_OK) || z.avail_out ? -1 : 0;
    inflateEnd(&z);
    return r;
}

/* One zstd frame in -> exactly olen bytes: 0 or -1.  The input is sector
 * rounded, so bytes after the frame are ignored; streaming stops once the
 * cluster is full. */
static int zstd_inflate(const uint8_t *in, uint64_t ilen, uint8_t *out, uint64_t olen)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer ib = { in, ilen, 0 };
    ZSTD_outBuffer ob = { out, olen, 0 };
    int r = d ? 0 : -1;
    while (r == 0 && ob.pos < ob.size) {
        size_t in0 = ib.pos, out0 = ob.pos;
        size_t zr = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(zr) || (ib.pos == in0 && ob.pos == out0))
            r = -1;
    }
    ZSTD_freeDCtx(d);
    return r;
}

/* Decompress the compressed cluster l2e into out (cluster_size bytes). */
static int read_compressed(bv_node *n, uint64_t l2e, uint8_t *out, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t coff, csize, flen;
    qcow2_compressed_range(s, l2e, &coff, &csize);
    int r = bv_child_length(n->file, &flen, errp);
    if (r == 0 && coff >= flen)
        r = qcow2_corrupt(errp, coff, "compressed cluster at 0x%" PRIx64 " is past the end of "
                          "the file", coff);
    if (r == 0 && csize > flen - coff)
        csize = flen - coff;         /* the last stream may end before its last sector */
    uint8_t *in = r == 0 ? malloc(csize) : NULL;
    if (r == 0 && !in)
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r == 0) {
        bv_node_event(n->file, BV_EV_READ_COMPRESSED);
        r = bv_child_pread(n->file, in, csize, coff, errp);
    }
    if (r == 0 && (s->compression_type == QCOW2_COMPRESS_ZSTD
                       ? zstd_inflate(in, csize, out, s->cluster_size)
                       : zlib_inflate(in, csize, out, s->cluster_size)) < 0)
        r = qcow2_corrupt(errp, coff, "compressed cluster at 0x%" PRIx64 " does not "
                          "decompress to a full cluster", coff);
    free(in);
    return r;
}

static int read_run(bv_node *n, const struct q_run *run, uint8_t *buf, uint64_t off,
                    bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    switch (run->type) {
    case Q_NORMAL:
        bv_node_event(n->file, BV_EV_READ_AIO);
        return bv_child_pread(n->file, buf, run->len, run->host, errp);
    case Q_ZERO:
        memset(buf, 0, run->len);
        return 0;
    case Q_UNALLOC:
        return read_backing(n, buf, run->len, off, errp);
    case Q_COMPRESSED: {
        uint8_t *tmp = malloc(s->cluster_size);
        if (!tmp)
            return bv_error_setf(errp, ENOMEM, "out of memory");
        int r = read_compressed(n, run->l2e, tmp, errp);
        if (r == 0)
            memcpy(buf, tmp + (off & (s->cluster_size - 1)), run->len);
        free(tmp);
        return r;
    }
    }
    return -EINVAL;
}

/* ---------------- concurrency: in-flight allocations, unlocked I/O ---------------- */

/* Whether an in-flight allocation covers guest cluster ci; else trims *cnt
 * so that [ci, ci + *cnt) stops before the next in-flight range. */
static bool inflight_blocks(const struct qcow2_state *s, uint64_t ci, uint64_t *cnt)
{
    for (const struct qcow2_inflight *p = s->inflight; p; p = p->next) {
        if (p->start <= ci && ci < p->end)
            return true;
        if (p->start > ci && p->start - ci < *cnt)
            *cnt = p->start - ci;
    }
    return false;
}

bool qcow2_inflight_overlaps(const struct qcow2_state *s, uint64_t ci, uint64_t cnt)
{
    for (const struct qcow2_inflight *p = s->inflight; p; p = p->next)
        if (p->start < ci + cnt && ci < p->end)
            return true;
    return false;
}

/* Waits until cluster ci is not being allocated and no drain is pending,
 * then trims *cnt as inflight_blocks does.  May drop the lock while waiting,
 * so the caller looks at the mapping only afterwards. */
static void wait_clear_locked(struct qcow2_state *s, uint64_t ci, uint64_t *cnt)
{
    BV_ASSERT_HELD(&s->lock);
    uint64_t want = *cnt;
    for (;;) {
        *cnt = want;
        if (!s->drainers && !inflight_blocks(s, ci, cnt))
            return;
        bv_cond_wait(&s->cond, &s->lock);
    }
}

static void inflight_add_locked(struct qcow2_state *s, struct qcow2_inflight *rec,
                                uint64_t start, uint64_t end)
{
    BV_ASSERT_HELD(&s->lock);
    rec->start = start;
    rec->end = end;
    rec->next = s->inflight;
    s->inflight = rec;
}

static void inflight_remove_locked(struct qcow2_state *s, struct qcow2_inflight *rec)
{
    BV_ASSERT_HELD(&s->lock);
    struct qcow2_inflight **pp = &s->inflight;
    while (*pp && *pp != rec)
        pp = &(*pp)->next;
    if (*pp)
        *pp = rec->next;
    pthread_cond_broadcast(&s->cond);
}

/* Unlocked I/O on clusters that an overwrite or discard could free is
 * counted (io_unlocked++ once no drain is pending, in the same lock hold as
 * the mapping), so that applying frees, the only way such a cluster gets
 * reused, waits for it. */
static void io_end_locked(struct qcow2_state *s)
{
    BV_ASSERT_HELD(&s->lock);
    if (--s->io_unlocked == 0 && s->drainers)
        pthread_cond_broadcast(&s->cond);
}

void qcow2_drain_io_locked(bv_node *n)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    s->drainers++;
    while (s->io_unlocked)
        bv_cond_wait(&s->cond, &s->lock);
    if (--s->drainers == 0)
        pthread_cond_broadcast(&s->cond);
}

/* ---------------- overlap guard ---------------- */

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return blen && a < b + blen && b < a + alen;
}

/* Which live metadata [off, off+len) would overwrite, or NULL (QEMU's names). */
static const char *metadata_overlap(const struct qcow2_state *s, uint64_t off, uint64_t len)
{
    uint64_t cs = s->cluster_size;
    if (overlaps(off, len, 0, cs))
        return "qcow2_header";
    if (overlaps(off, len, s->l1_offset, (uint64_t)s->l1_size * 8))
        return "active L1 table";
    if (overlaps(off, len, s->reftable_offset, (uint64_t)s->reftable_clusters * cs))
        return "refcount table";
    for (uint32_t i = 0; i < s->l1_size; i++)
        if ((s->l1[i] & L1E_OFFSET_MASK) && overlaps(off, len, s->l1[i] & L1E_OFFSET_MASK, cs))
            return "active L2 table";
    for (uint64_t i = 0; i < s->reftable_entries; i++)
        if (s->reftable[i] && overlaps(off, len, s->reftable[i] & REFT_OFFSET_MASK, cs))
            return "refcount block";
    return NULL;
}

/* A data write to [off, off+len) that would land on metadata fails the node
 * and sets the corrupt bit (qemu-semantics §2.2). */
static int overlap_guard_locked(bv_node *n, uint64_t off, uint64_t len, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    const char *what = metadata_overlap(q_state(n), off, len);
    if (!what)
        return 0;
    char msg[128];
    snprintf(msg, sizeof(msg), "Preventing invalid write on metadata (overlaps with %s)", what);
    return qcow2_mark_corrupt_locked(n, off, msg, errp);
}

/* ---------------- reads ---------------- */

/* Whether reading this run touches host clusters an overwrite could free. */
static bool run_reads_host(const struct q_run *run)
{
    return run->type == Q_NORMAL || run->type == Q_COMPRESSED;
}

int qcow2_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint8_t *p = buf;
    int r = 0;
    while (len && r == 0) {
        struct q_run run;
        bv_mutex_lock(&s->lock);
        while (s->drainers)
            bv_cond_wait(&s->cond, &s->lock);
        r = map_run_locked(n, off, len, &run, errp);
        bool counted = r == 0 && run_reads_host(&run);
        if (counted)
            s->io_unlocked++;
        bv_mutex_unlock(&s->lock);
        if (r < 0)
            break;
        r = read_run(n, &run, p, off, errp);
        if (counted) {
            bv_mutex_lock(&s->lock);
            io_end_locked(s);
            bv_mutex_unlock(&s->lock);
        }
        p += run.len;
        off += run.len;
        len -= run.len;
    }
    return r;
}

/* ---------------- writes ---------------- */

/* Guest bytes of one unit type into out (len bytes at guest offset goff). */
static int read_old_unit(bv_node *n, enum q_type t, uint64_t host, uint64_t goff, uint8_t *out,
                         uint64_t len, bv_error **errp)
{
    switch (t) {
    case Q_NORMAL:
        return bv_child_pread(n->file, out, len, host, errp);
    case Q_ZERO:
        memset(out, 0, len);
        return 0;
    default:
        return read_backing(n, out, len, goff, errp);
    }
}

/* What bytes [from, from + len) of guest cluster gci, mapped by (old, bm),
 * read as now, into out (a cluster buffer, indexed from the cluster's
 * start).  from and len are whole units; a compressed cluster is read whole. */
static int read_old_range(bv_node *n, uint64_t old, uint64_t bm, uint64_t gci, uint64_t from,
                          uint64_t len, uint8_t *out, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t goff = gci << s->cluster_bits;
    uint32_t a = (uint32_t)(from >> s->sc_bits), b = (uint32_t)((from + len) >> s->sc_bits);
    int r = 0;
    bv_node_event(n->file, BV_EV_COW_READ);
    if (qcow2_entry_type(s, old) == Q_COMPRESSED)
        return read_compressed(n, old, out, errp);
    while (r == 0 && a < b) {
        enum q_type t, t2;
        uint64_t h, h2;
        uint32_t k = 1;
        r = qcow2_sc_unit_status(s, old, bm, a, &t, &h, errp);
        while (r == 0 && a + k < b &&
               qcow2_sc_unit_status(s, old, bm, a + k, &t2, &h2, NULL) == 0 && t2 == t)
            k++;
        uint64_t uoff = (uint64_t)a << s->sc_bits;
        if (r == 0)
            r = read_old_unit(n, t, h, goff + uoff, out + uoff, (uint64_t)k << s->sc_bits, errp);
        a += k;
    }
    return r;
}

/* Host space an L2 entry holds, to be freed when the entry is replaced. */
static int free_old_entry(bv_node *n, uint64_t old, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (old & QCOW_OFLAG_COMPRESSED) {
        uint64_t coff, clen;
        qcow2_compressed_range(s, old, &coff, &clen);
        return qcow2_queue_free_locked(n, coff, clen, errp);
    }
    if (old & L2E_OFFSET_MASK)
        return qcow2_queue_free_locked(n, old & L2E_OFFSET_MASK, s->cluster_size, errp);
    return 0;
}

/* One partial cluster: its old content (old, bm) with guest bytes [from,
 * from + cnt) replaced, written to host cluster `host`.  Without sub the
 * whole cluster is written; with sub (extended L2) only the touched
 * subclusters, filling a partly touched one from its old content unless it
 * is already allocated there (then only the new bytes are written). */
static int write_partial(bv_node *n, uint64_t old, uint64_t bm, bool sub, uint64_t gci,
                         uint64_t host, const uint8_t *data, uint64_t from, uint64_t cnt,
                         bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, eu = sub ? 1ULL << s->sc_bits : cs;
    uint64_t ua = from & ~(eu - 1), ub = (from + cnt + eu - 1) & ~(eu - 1);
    if (sub && qcow2_sc_unit_allocated(s, old, bm, from))
        ua = from;
    if (sub && qcow2_sc_unit_allocated(s, old, bm, from + cnt - 1))
        ub = from + cnt;
    uint8_t *tmp = malloc(cs);
    int r = tmp ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
    if (r == 0 && from > ua)
        r = read_old_range(n, old, bm, gci, ua, eu, tmp, errp);
    if (r == 0 && from + cnt < ub && (ub - eu != ua || from == ua))
        r = read_old_range(n, old, bm, gci, ub - eu, eu, tmp, errp);
    if (r == 0) {
        memcpy(tmp + from, data, cnt);
        bv_node_event(n->file, BV_EV_COW_WRITE);
        r = bv_child_pwrite(n->file, tmp + ua, ub - ua, host + ua, errp);
    }
    free(tmp);
    return r;
}

/* Leading clusters of e from l2i (at most want) that share e0's ownership
 * and, when owned, continue its host run. */
static uint64_t same_kind_run(const struct qcow2_state *s, const struct qcow2_cache_entry *e,
                              uint64_t l2i, uint64_t want, bool owned)
{
    uint64_t e0 = qcow2_l2_get(s, e, l2i), k = 1;
    for (; k < want; k++) {
        uint64_t ek = qcow2_l2_get(s, e, l2i + k);
        bool ok = qcow2_entry_type(s, ek) == Q_NORMAL && (ek & QCOW_OFLAG_COPIED);
        if (ok != owned ||
            (owned && (ek & L2E_OFFSET_MASK) != (e0 & L2E_OFFSET_MASK) + k * s->cluster_size))
            break;
    }
    return k;
}

/* Fresh step: note the COW sources of its partial first and last clusters
 * and the bitmaps their new clusters get. */
static void plan_fresh_edges(const struct qcow2_state *s, struct qcow2_wstep *st,
                             const struct qcow2_cache_entry *e)
{
    uint64_t cs = s->cluster_size, end = st->head + st->bytes;
    uint64_t tl2i = st->l2i + ((end - 1) >> s->cluster_bits);
    st->old_head = qcow2_l2_get(s, e, st->l2i);
    st->old_head_bm = qcow2_l2_get_bm(s, e, st->l2i);
    st->old_tail = qcow2_l2_get(s, e, tl2i);
    st->old_tail_bm = qcow2_l2_get_bm(s, e, tl2i);
    st->new_head_bm = qcow2_sc_fresh_bitmap(s, st->old_head, st->old_head_bm, st->head,
                                   cs - st->head < st->bytes ? cs - st->head : st->bytes);
    st->new_tail_bm = (end & (cs - 1))
                          ? qcow2_sc_fresh_bitmap(s, st->old_tail, st->old_tail_bm, 0,
                                                  end & (cs - 1))
                          : QCOW2_SC_ALL_ALLOC;
}

/* Fresh step: allocate st->k clusters and note the COW sources. */
static int plan_fresh_locked(bv_node *n, struct qcow2_wstep *st, uint64_t len, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, first, got;
    struct qcow2_cache_entry *e;
    int r = qcow2_alloc_clusters_locked(n, st->k, false, &first, &got, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, st->l1i, false, &e, errp);   /* alloc may evict it */
    if (r < 0)
        return r;
    st->k = got;
    st->host = first;
    st->bytes = got * cs - st->head < len ? got * cs - st->head : len;
    plan_fresh_edges(s, st, e);
    r = overlap_guard_locked(n, first, got * cs, errp);
    if (r == 0)
        inflight_add_locked(s, &st->rec, st->ci, st->ci + got);
    return r;
}

/* Plan the step that starts at off: on success the caller owns either an
 * unlocked-I/O count (owned, not cow) or an in-flight range (fresh, cow). */
static int plan_step_locked(bv_node *n, struct qcow2_wstep *st, uint64_t off, uint64_t len,
                            bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, per = 1ULL << s->l2_bits;
    struct qcow2_cache_entry *e;
    st->ci = off >> s->cluster_bits;
    st->l1i = st->ci >> s->l2_bits;
    st->l2i = st->ci & (per - 1);
    st->head = off & (cs - 1);
    st->cow = false;
    uint64_t want = ((off + len - 1) >> s->cluster_bits) - st->ci + 1;
    if (want > per - st->l2i)
        want = per - st->l2i;
    wait_clear_locked(s, st->ci, &want);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, st->l1i, true, &e, errp);
    if (r < 0)
        return r;
    uint64_t e0 = qcow2_l2_get(s, e, st->l2i);
    if ((r = check_data_entry(s, e0, errp)) < 0)
        return r;
    st->owned = qcow2_entry_type(s, e0) == Q_NORMAL && (e0 & QCOW_OFLAG_COPIED);
    st->k = same_kind_run(s, e, st->l2i, want, st->owned);
    if (!st->owned)
        return plan_fresh_locked(n, st, len, errp);
    st->host = e0 & L2E_OFFSET_MASK;
    st->bytes = st->k * cs - st->head < len ? st->k * cs - st->head : len;
    if (s->extl2)
        qcow2_sc_plan_owned(s, st, e, len);
    r = overlap_guard_locked(n, st->host + st->head, st->bytes, errp);
    if (r == 0 && st->cow)
        inflight_add_locked(s, &st->rec, st->ci, st->ci + 1);
    else if (r == 0)
        s->io_unlocked++;            /* no drain pending: wait_clear_locked saw none */
    return r;
}

/* Fresh step's data (unlocked): COW head/tail partial clusters, one pwrite
 * for the whole clusters between. */
static int write_fresh(bv_node *n, const struct qcow2_wstep *st, const uint8_t *buf,
                       bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, head = st->head, bytes = st->bytes;
    uint64_t done = 0, ci = 0;
    int r = 0;
    bv_node_event(n->file, BV_EV_WRITE_AIO);
    if (head || bytes < cs) {
        uint64_t cnt = cs - head < bytes ? cs - head : bytes;
        r = write_partial(n, st->old_head, st->old_head_bm, qcow2_sc_fresh_sub(s, st->old_head),
                          st->ci, st->host, buf, head, cnt, errp);
        done = cnt;
        ci = 1;
    }
    uint64_t full = (bytes - done) / cs * cs;
    if (r == 0 && full)
        r = bv_child_pwrite(n->file, buf + done, full, st->host + ci * cs, errp);
    done += full;
    ci += full / cs;
    if (r == 0 && done < bytes)
        r = write_partial(n, st->old_tail, st->old_tail_bm, qcow2_sc_fresh_sub(s, st->old_tail),
                          st->ci + ci, st->host + ci * cs, buf + done, 0, bytes - done, errp);
    return r;
}

static int write_step_data(bv_node *n, const struct qcow2_wstep *st, const uint8_t *buf,
                           bv_error **errp)
{
    if (!st->owned)
        return write_fresh(n, st, buf, errp);
    if (st->cow)
        return write_partial(n, st->old_head, st->old_head_bm, true, st->ci, st->host, buf,
                             st->head, st->bytes, errp);
    bv_node_event(n->file, BV_EV_WRITE_AIO);
    return bv_child_pwrite(n->file, buf, st->bytes, st->host + st->head, errp);
}

/* Fresh step, data written (r == 0): map the new clusters and queue frees
 * for what they replace.  Data failed: give the new clusters back. */
static int map_fresh_locked(bv_node *n, struct qcow2_wstep *st, int r, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    struct qcow2_cache_entry *e;
    uint64_t mapped = 0, cs = s->cluster_size;
    if (r == 0)
        r = qcow2_get_l2_locked(n, st->l1i, false, &e, errp);
    if (r == 0) {
        bv_node_event(n->file, BV_EV_L2_UPDATE);
        for (; mapped < st->k; mapped++) {
            int fr = free_old_entry(n, qcow2_l2_get(s, e, st->l2i + mapped), r ? NULL : errp);
            r = r ? r : fr;
            qcow2_l2_set(s, e, st->l2i + mapped, (st->host + mapped * cs) | QCOW_OFLAG_COPIED,
                   qcow2_sc_fresh_bm_of(s, st, mapped));
        }
    }
    if (mapped < st->k)
        qcow2_queue_free_locked(n, st->host + mapped * cs, (st->k - mapped) * cs, NULL);
    inflight_remove_locked(s, &st->rec);
    return r;
}

/* Owned step, data written or not (r): publish subclusters, end the step. */
static int finish_owned_locked(bv_node *n, struct qcow2_wstep *st, int r, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    if (r == 0 && s->extl2)
        r = qcow2_sc_mark_owned_locked(n, st, errp);
    if (st->cow)
        inflight_remove_locked(s, &st->rec);
    else
        io_end_locked(s);
    return r;
}

static int end_write_locked(bv_node *n, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    if (s->nfrees >= QCOW2_MAX_PENDING_FREES)
        return qcow2_flush_metadata_locked(n, errp);
    return 0;
}

/* Write [off, off+len) (called without the lock). */
static int write_range(bv_node *n, const uint8_t *p, uint64_t len, uint64_t off,
                       bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    int r = 0;
    while (len && r == 0) {
        struct qcow2_wstep st;
        bv_mutex_lock(&s->lock);
        r = plan_step_locked(n, &st, off, len, errp);
        bv_mutex_unlock(&s->lock);
        if (r < 0)
            break;
        r = write_step_data(n, &st, p, errp);
        bv_mutex_lock(&s->lock);
        if (st.owned)
            r = finish_owned_locked(n, &st, r, errp);
        else
            r = map_fresh_locked(n, &st, r, errp);
        if (r == 0)
            r = end_write_locked(n, errp);
        bv_mutex_unlock(&s->lock);
        p += st.bytes;
        off += st.bytes;
        len -= st.bytes;
    }
    return r;
}

static int write_compressed(bv_node *n, const uint8_t *buf, uint64_t len, uint64_t off,
                            bv_error **errp);

int qcow2_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                 bv_error **errp)
{
    if (flags & BV_WRITE_COMPRESSED)
        return write_compressed(n, buf, len, off, errp);
    return write_range(n, buf, len, off, errp);
}

/* ---------------- compressed writes ---------------- */

/* Raw deflate (windowBits -12) of one cluster into out (cap bytes). 0 if it doesn't fit. */
static uint64_t deflate_cluster(const uint8_t *in, uint64_t len, uint8_t *out, uint64_t cap)
{
    z_stream z = { 0 };
    uint64_t got = 0;
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    z.next_in = (uint8_t *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) == Z_STREAM_END)
        got = cap - z.avail_out;
    deflateEnd(&z);
    return got;
}

/* One zstd frame (default level) of one cluster into out (cap bytes). 0 if it doesn't fit. */
static uint64_t zstd_cluster(const uint8_t *in, uint64_t len, uint8_t *out, uint64_t cap)
{
    size_t got = ZSTD_compress(out, cap, in, len, ZSTD_CLEVEL_DEFAULT);
    return ZSTD_isError(got) ? 0 : got;
}

/* Reserve clen compressed bytes for guest cluster ci, which must be
 * unallocated; on success *hoff is theirs and rec is in flight. */
static int alloc_compressed_locked(bv_node *n, uint64_t ci, uint64_t clen, uint64_t *hoff,
                                   struct qcow2_inflight *rec, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    struct qcow2_cache_entry *e;
    uint64_t one = 1;
    while (inflight_blocks(s, ci, &one))
        bv_cond_wait(&s->cond, &s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, ci >> s->l2_bits, true, &e, errp);
    if (r < 0)
        return r;
    if (qcow2_l2_get(s, e, ci & ((1ULL << s->l2_bits) - 1)) & ~QCOW_OFLAG_ZERO)
        return bv_error_setf(errp, EIO, "compressed write to an allocated cluster (guest "
                             "offset %" PRIu64 ")", ci << s->cluster_bits);
    r = qcow2_alloc_bytes_locked(n, clen, hoff, errp);
    if (r == 0)
        r = overlap_guard_locked(n, *hoff, clen, errp);
    if (r == 0)
        inflight_add_locked(s, rec, ci, ci + 1);
    return r;
}

/* Store one deflated cluster: allocate and map under the lock, write without. */
static int put_compressed(bv_node *n, const uint8_t *cdata, uint64_t clen, uint64_t off,
                          bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t ci = off >> s->cluster_bits, hoff;
    struct qcow2_inflight rec;
    struct qcow2_cache_entry *e;
    bv_mutex_lock(&s->lock);
    int r = alloc_compressed_locked(n, ci, clen, &hoff, &rec, errp);
    bv_mutex_unlock(&s->lock);
    if (r < 0)
        return r;
    bv_node_event(n->file, BV_EV_WRITE_COMPRESSED);
    r = bv_child_pwrite(n->file, cdata, clen, hoff, errp);
    bv_mutex_lock(&s->lock);
    if (r == 0)
        r = qcow2_get_l2_locked(n, ci >> s->l2_bits, false, &e, errp);
    if (r == 0) {
        bv_node_event(n->file, BV_EV_L2_UPDATE_COMPRESSED);
        qcow2_l2_set(s, e, ci & ((1ULL << s->l2_bits) - 1), qcow2_compressed_entry(s, hoff, clen),
                     0);
    } else {
        qcow2_queue_free_locked(n, hoff, clen, NULL);
    }
    inflight_remove_locked(s, &rec);
    bv_mutex_unlock(&s->lock);
    return r;
}

/* Deflate runs without the lock, so several writers compress in parallel. */
static int write_compressed(bv_node *n, const uint8_t *buf, uint64_t len, uint64_t off,
                            bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size;
    if ((off & (cs - 1)) || ((len & (cs - 1)) && off + len != n->size))
        return bv_error_setf(errp, EINVAL, "compressed writes must cover whole clusters");
    uint8_t *in = malloc(cs), *out = malloc(cs);
    int r = in && out ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
    for (uint64_t done = 0; done < len && r == 0; done += cs) {
        uint64_t chunk = len - done < cs ? len - done : cs;
        memcpy(in, buf + done, chunk);
        memset(in + chunk, 0, cs - chunk);
        uint64_t clen = s->compression_type == QCOW2_COMPRESS_ZSTD
                            ? zstd_cluster(in, cs, out, cs - 1)
                            : deflate_cluster(in, cs, out, cs - 1);
        if (clen)
            r = put_compressed(n, out, clen, off + done, errp);
        else
            r = write_range(n, buf + done, chunk, off + done, errp);
    }
    free(in);
    free(out);
    return r;
}

/* ---------------- zeroing and discard ---------------- */

/* Partial clusters are zeroed by writing zeros (called without the lock). */
static int write_zero_bytes(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t chunk = s->cluster_size < (1u << 20) ? (1u << 20) : s->cluster_size;
    uint8_t *z = calloc(1, chunk);
    int r = z ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
    while (len && r == 0) {
        uint64_t c = len < chunk ? len : chunk;
        r = write_range(n, z, c, off, errp);
        off += c;
        len -= c;
    }
    free(z);
    return r;
}

/* New L2 value for a whole cluster being zeroed/discarded, or `old` to keep it. */
static uint64_t zeroed_entry(const struct qcow2_state *s, uint64_t old, bool unmap,
                             bool discard, bool backing)
{
    enum q_type t = qcow2_entry_type(s, old);
    if (discard && t == Q_UNALLOC && !backing)
        return old;
    if (t == Q_ZERO && !(old & L2E_OFFSET_MASK))
        return old;
    if (!unmap && !discard && t == Q_NORMAL && (old & QCOW_OFLAG_COPIED))
        return old | QCOW_OFLAG_ZERO;
    if (t == Q_UNALLOC && !backing)
        return old;
    return QCOW_OFLAG_ZERO;
}

/* Whole clusters [ci, ci+cnt) of one L2 table (locked, v3). */
static int zero_table_locked(bv_node *n, uint64_t ci, uint64_t cnt, bool unmap, bool discard,
                             bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t l1i = ci >> s->l2_bits, l2i = ci & ((1ULL << s->l2_bits) - 1);
    struct qcow2_cache_entry *e;
    bool backing = n->backing != NULL || n->backing_hidden;
    while (qcow2_inflight_overlaps(s, ci, cnt))     /* let allocations there finish first */
        bv_cond_wait(&s->cond, &s->lock);
    if (!backing && !(s->l1[l1i] & L1E_OFFSET_MASK))
        return 0;                          /* reads as zeros already */
    int r = qcow2_get_l2_locked(n, l1i, true, &e, errp);
    bv_node_event(n->file, BV_EV_L2_UPDATE);
    for (uint64_t i = 0; i < cnt && r == 0; i++) {
        uint64_t old = qcow2_l2_get(s, e, l2i + i), bm = qcow2_l2_get_bm(s, e, l2i + i);
        uint64_t nv, nbm = 0;
        if (s->extl2) {
            qcow2_sc_zeroed_entry(s, old, bm, unmap, discard, backing, &nv, &nbm);
        } else {
            nv = zeroed_entry(s, old, unmap, discard, backing);
            if (s->version < 3 && nv == QCOW_OFLAG_ZERO)
                nv = 0;                    /* v2: no ZERO flag; no backing, so 0 reads zeros */
        }
        if (nv == old && nbm == bm)
            continue;
        if ((nv & L2E_OFFSET_MASK) == 0)
            r = free_old_entry(n, old, errp);
        qcow2_l2_set(s, e, l2i + i, nv, nbm);
    }
    return r;
}

/* Whole clusters [a, b) (byte offsets, cluster aligned), one table at a time. */
static int zero_clusters(bv_node *n, uint64_t a, uint64_t b, bool unmap, bool discard,
                         bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t per = 1ULL << s->l2_bits, last = b >> s->cluster_bits;
    bv_mutex_lock(&s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    for (uint64_t ci = a >> s->cluster_bits; r == 0 && ci < last;) {
        uint64_t cnt = per - (ci & (per - 1));
        if (cnt > last - ci)
            cnt = last - ci;
        r = zero_table_locked(n, ci, cnt, unmap || s->version < 3, discard, errp);
        ci += cnt;
    }
    if (r == 0)
        r = end_write_locked(n, errp);
    bv_mutex_unlock(&s->lock);
    return r;
}

/* [off, off + len) inside one cluster: zero bits for the whole subclusters
 * where possible (extended L2), zero bytes written for the rest. */
static int zero_in_cluster(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t us = 1ULL << s->sc_bits, end = off + len, a = (off + us - 1) & ~(us - 1);
    uint64_t b = end == n->size ? ((end + us - 1) & ~(us - 1)) : (end & ~(us - 1));
    bool done = false;
    if (!s->extl2 || a >= b)
        return write_zero_bytes(n, len, off, errp);
    int r = off < a ? write_zero_bytes(n, a - off, off, errp) : 0;
    if (r == 0) {
        bv_mutex_lock(&s->lock);
        r = qcow2_sc_zero_locked(n, a, b - a, &done, errp);
        if (r == 0)
            r = end_write_locked(n, errp);
        bv_mutex_unlock(&s->lock);
    }
    if (r == 0 && !done)
        r = write_zero_bytes(n, b - a, a, errp);
    if (r == 0 && b < end)
        r = write_zero_bytes(n, end - b, b, errp);
    return r;
}

/* A range with no whole cluster in it, one cluster piece at a time. */
static int zero_partial(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    int r = 0;
    while (len && r == 0) {
        uint64_t room = s->cluster_size - (off & (s->cluster_size - 1));
        uint64_t piece = len < room ? len : room;
        r = zero_in_cluster(n, piece, off, errp);
        off += piece;
        len -= piece;
    }
    return r;
}

static int zero_entry(bv_node *n, uint64_t len, uint64_t off, bool unmap, bool discard,
                      bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, end = off + len;
    uint64_t a = (off + cs - 1) & ~(cs - 1);              /* first whole cluster */
    uint64_t b = end == n->size ? ((end + cs - 1) & ~(cs - 1)) : (end & ~(cs - 1));
    if (s->version < 3 && (n->backing || n->backing_hidden))
        return write_zero_bytes(n, len, off, errp);
    if (a >= b)
        return zero_partial(n, len, off, errp);
    int r = off < a ? zero_partial(n, a - off, off, errp) : 0;
    if (r == 0)
        r = zero_clusters(n, a, b, unmap, discard, errp);
    if (r == 0 && b < end)
        r = zero_partial(n, end - b, b, errp);
    return r;
}

int qcow2_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    return zero_entry(n, len, off, flags & BV_ZERO_MAY_UNMAP, false, errp);
}

int qcow2_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    return zero_entry(n, len, off, true, true, errp);
}

/* ---------------- block status ---------------- */

int qcow2_block_status(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                       bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    struct q_run run;
    bv_mutex_lock(&s->lock);
    int r = map_run_locked(n, off, len, &run, errp);
    bv_mutex_unlock(&s->lock);
    if (r < 0)
        return r;
    bs->pnum = run.len;
    bs->host_offset = 0;
    switch (run.type) {
    case Q_NORMAL:
        bs->flags = BV_BS_DATA | BV_BS_ALLOCATED;
        bs->host_offset = run.host;
        break;
    case Q_ZERO:
        bs->flags = BV_BS_ZERO | BV_BS_ALLOCATED;
        break;
    case Q_COMPRESSED:
        bs->flags = BV_BS_DATA | BV_BS_ALLOCATED | BV_BS_COMPRESSED;
        break;
    case Q_UNALLOC: {
        uint64_t bsize = n->backing ? bv_node_size(n->backing) : 0;
        bs->flags = off >= bsize ? BV_BS_ZERO : 0;
        if (off < bsize && bsize - off < bs->pnum)
            bs->pnum = bsize - off;
        break;
    }
    }
    return 0;
}
