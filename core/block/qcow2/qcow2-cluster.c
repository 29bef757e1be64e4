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
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "util/checked.h"
#include "util/endian.h"

enum q_type { Q_UNALLOC, Q_ZERO, Q_NORMAL, Q_COMPRESSED };

struct q_run {
    enum q_type type;
    uint64_t host;        /* Q_NORMAL: host offset of the run's first byte */
    uint64_t len;         /* bytes */
    uint64_t l2e;         /* Q_COMPRESSED: the descriptor */
};

static enum q_type entry_type(const struct qcow2_state *s, uint64_t e)
{
    if (e & QCOW_OFLAG_COMPRESSED)
        return Q_COMPRESSED;
    if ((e & QCOW_OFLAG_ZERO) && s->version >= 3)
        return Q_ZERO;
    return (e & L2E_OFFSET_MASK) ? Q_NORMAL : Q_UNALLOC;
}

static inline uint64_t l2_get(const struct qcow2_cache_entry *e, uint64_t i)
{
    return ld_be64(e->data + 8 * i);
}

static inline void l2_set(struct qcow2_cache_entry *e, uint64_t i, uint64_t v)
{
    st_be64(e->data + 8 * i, v);
    e->dirty = true;
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

int qcow2_get_l2_locked(bv_node *n, uint64_t l1i, bool alloc, struct qcow2_cache_entry **e,
                        bv_error **errp)
{
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
    if (entry_type(s, e) == Q_NORMAL && (e & L2E_OFFSET_MASK & (s->cluster_size - 1)))
        return qcow2_corrupt(errp, e & L2E_OFFSET_MASK, "offset=%" PRIx64 ": Data cluster is "
                             "not properly aligned; L2 entry corrupted.", (uint64_t)(e & L2E_OFFSET_MASK));
    return 0;
}

/* Longest leading run of [off, off+len) with one mapping type (locked). */
static int map_run_locked(bv_node *n, uint64_t off, uint64_t len, struct q_run *run,
                          bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, per = 1ULL << s->l2_bits;
    uint64_t ci = off >> s->cluster_bits, covered = 0, expect = 0;
    struct qcow2_cache_entry *e = NULL;
    bool first = true;
    while (covered < len) {
        uint64_t l1i = ci >> s->l2_bits, l2i = ci & (per - 1), span, host = 0, ent = 0;
        int r = qcow2_get_l2_locked(n, l1i, false, &e, errp);
        if (r < 0)
            return r;
        enum q_type t = Q_UNALLOC;
        span = e ? cs : (per - l2i) * cs;
        if (e) {
            ent = l2_get(e, l2i);
            r = check_data_entry(s, ent, errp);
            if (r < 0)
                return r;
            t = entry_type(s, ent);
            host = ent & L2E_OFFSET_MASK;
        }
        if (first) {
            run->type = t;
            run->l2e = ent;
            run->host = host + (off & (cs - 1));
            expect = host;
        } else if (t != run->type || t == Q_COMPRESSED || (t == Q_NORMAL && host != expect)) {
            break;
        }
        uint64_t in = first ? span - (off & (cs - 1)) : span;
        covered += in;
        ci += span >> s->cluster_bits;
        expect += cs;
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

/* Inflate the compressed cluster l2e into out (cluster_size bytes). */
static int read_compressed(bv_node *n, uint64_t l2e, uint8_t *out, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t coff = l2e & s->coffset_mask, flen;
    uint64_t nsec = ((l2e >> s->csize_shift) & s->csize_mask) + 1;
    uint64_t csize = nsec * 512 - (coff & 511);
    int r = bv_child_length(n->file, &flen, errp);
    if (r == 0 && coff >= flen)
        r = qcow2_corrupt(errp, coff, "compressed cluster at 0x%" PRIx64 " is past the end of "
                          "the file", coff);
    uint8_t *in = r == 0 ? malloc(csize) : NULL;
    if (r == 0 && !in)
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r == 0) {
        bv_node_event(n->file, BV_EV_READ_COMPRESSED);
        r = bv_child_pread(n->file, in, csize, coff, errp);
    }
    if (r == 0) {
        z_stream z = { .next_in = in, .avail_in = (uInt)csize, .next_out = out,
                       .avail_out = s->cluster_size };
        int zr = inflateInit2(&z, -12);
        if (zr == Z_OK)
            zr = inflate(&z, Z_FINISH);
        if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR && zr != Z_OK) || z.avail_out != 0)
            r = qcow2_corrupt(errp, coff, "compressed cluster at 0x%" PRIx64 " does not "
                              "decompress to a full cluster", coff);
        inflateEnd(&z);
    }
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

static bool inflight_overlaps(const struct qcow2_state *s, uint64_t ci, uint64_t cnt)
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
    uint64_t want = *cnt;
    for (;;) {
        *cnt = want;
        if (!s->drainers && !inflight_blocks(s, ci, cnt))
            return;
        pthread_cond_wait(&s->cond, &s->lock);
    }
}

static void inflight_add_locked(struct qcow2_state *s, struct qcow2_inflight *rec,
                                uint64_t start, uint64_t end)
{
    rec->start = start;
    rec->end = end;
    rec->next = s->inflight;
    s->inflight = rec;
}

static void inflight_remove_locked(struct qcow2_state *s, struct qcow2_inflight *rec)
{
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
    if (--s->io_unlocked == 0 && s->drainers)
        pthread_cond_broadcast(&s->cond);
}

void qcow2_drain_io_locked(bv_node *n)
{
    struct qcow2_state *s = q_state(n);
    s->drainers++;
    while (s->io_unlocked)
        pthread_cond_wait(&s->cond, &s->lock);
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
        pthread_mutex_lock(&s->lock);
        while (s->drainers)
            pthread_cond_wait(&s->cond, &s->lock);
        r = map_run_locked(n, off, len, &run, errp);
        bool counted = r == 0 && run_reads_host(&run);
        if (counted)
            s->io_unlocked++;
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
            break;
        r = read_run(n, &run, p, off, errp);
        if (counted) {
            pthread_mutex_lock(&s->lock);
            io_end_locked(s);
            pthread_mutex_unlock(&s->lock);
        }
        p += run.len;
        off += run.len;
        len -= run.len;
    }
    return r;
}

/* ---------------- writes ---------------- */

/* What guest cluster gci (mapped by old entry) reads as now, into out. */
static int read_old_cluster(bv_node *n, uint64_t old, uint64_t gci, uint8_t *out,
                            bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    bv_node_event(n->file, BV_EV_COW_READ);
    switch (entry_type(s, old)) {
    case Q_NORMAL:
        return bv_child_pread(n->file, out, s->cluster_size, old & L2E_OFFSET_MASK, errp);
    case Q_ZERO:
        memset(out, 0, s->cluster_size);
        return 0;
    case Q_COMPRESSED:
        return read_compressed(n, old, out, errp);
    default:
        return read_backing(n, out, s->cluster_size, gci << s->cluster_bits, errp);
    }
}

/* Host space an L2 entry holds, to be freed when the entry is replaced. */
static int free_old_entry(bv_node *n, uint64_t old, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (old & QCOW_OFLAG_COMPRESSED) {
        uint64_t coff = old & s->coffset_mask;
        uint64_t nsec = ((old >> s->csize_shift) & s->csize_mask) + 1;
        return qcow2_queue_free_locked(n, coff, nsec * 512 - (coff & 511), errp);
    }
    if (old & L2E_OFFSET_MASK)
        return qcow2_queue_free_locked(n, old & L2E_OFFSET_MASK, s->cluster_size, errp);
    return 0;
}

/* One partial cluster: old content with guest bytes [from, from+cnt) replaced. */
static int write_partial(bv_node *n, uint64_t old, uint64_t gci, uint64_t host,
                         const uint8_t *data, uint64_t from, uint64_t cnt, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint8_t *tmp = malloc(s->cluster_size);
    if (!tmp)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int r = read_old_cluster(n, old, gci, tmp, errp);
    if (r == 0) {
        memcpy(tmp + from, data, cnt);
        bv_node_event(n->file, BV_EV_COW_WRITE);
        r = bv_child_pwrite(n->file, tmp, s->cluster_size, host, errp);
    }
    free(tmp);
    return r;
}

/*
 * One step of a write: a run of clusters inside one L2 table that are either
 * all owned (COPIED, contiguous on the host: written in place) or all to be
 * replaced by `k` freshly allocated contiguous clusters.  Planned and
 * finished under the lock; the data moves without it.
 */
struct wstep {
    uint64_t ci, l1i, l2i;       /* first guest cluster; its L1/L2 indices */
    uint64_t k;                  /* clusters in the step */
    uint64_t bytes;              /* guest bytes the step writes */
    uint64_t host;               /* host offset of cluster ci (owned or new) */
    bool owned;
    uint64_t old_head, old_tail; /* fresh: old entries of the first/last cluster (COW) */
    struct qcow2_inflight rec;   /* fresh: the in-flight range, linked while unlocked */
};

/* Leading clusters of e from l2i (at most want) that share e0's ownership
 * and, when owned, continue its host run. */
static uint64_t same_kind_run(const struct qcow2_state *s, const struct qcow2_cache_entry *e,
                              uint64_t l2i, uint64_t want, bool owned)
{
    uint64_t e0 = l2_get(e, l2i), k = 1;
    for (; k < want; k++) {
        uint64_t ek = l2_get(e, l2i + k);
        bool ok = entry_type(s, ek) == Q_NORMAL && (ek & QCOW_OFLAG_COPIED);
        if (ok != owned ||
            (owned && (ek & L2E_OFFSET_MASK) != (e0 & L2E_OFFSET_MASK) + k * s->cluster_size))
            break;
    }
    return k;
}

/* Fresh step: allocate st->k clusters and note the COW sources. */
static int plan_fresh_locked(bv_node *n, struct wstep *st, uint64_t off, uint64_t len,
                             bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, head = off & (cs - 1), first, got;
    struct qcow2_cache_entry *e;
    int r = qcow2_alloc_clusters_locked(n, st->k, false, &first, &got, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, st->l1i, false, &e, errp);   /* alloc may evict it */
    if (r < 0)
        return r;
    st->k = got;
    st->host = first;
    st->bytes = got * cs - head < len ? got * cs - head : len;
    st->old_head = l2_get(e, st->l2i);
    st->old_tail = l2_get(e, st->l2i + ((head + st->bytes - 1) >> s->cluster_bits));
    r = overlap_guard_locked(n, first, got * cs, errp);
    if (r == 0)
        inflight_add_locked(s, &st->rec, st->ci, st->ci + got);
    return r;
}

/* Plan the step that starts at off: on success the caller owns either an
 * unlocked-I/O count (owned) or an in-flight range (fresh). */
static int plan_step_locked(bv_node *n, struct wstep *st, uint64_t off, uint64_t len,
                            bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, per = 1ULL << s->l2_bits, head = off & (cs - 1);
    struct qcow2_cache_entry *e;
    st->ci = off >> s->cluster_bits;
    st->l1i = st->ci >> s->l2_bits;
    st->l2i = st->ci & (per - 1);
    uint64_t want = ((off + len - 1) >> s->cluster_bits) - st->ci + 1;
    if (want > per - st->l2i)
        want = per - st->l2i;
    wait_clear_locked(s, st->ci, &want);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, st->l1i, true, &e, errp);
    if (r < 0)
        return r;
    uint64_t e0 = l2_get(e, st->l2i);
    if ((r = check_data_entry(s, e0, errp)) < 0)
        return r;
    st->owned = entry_type(s, e0) == Q_NORMAL && (e0 & QCOW_OFLAG_COPIED);
    st->k = same_kind_run(s, e, st->l2i, want, st->owned);
    if (!st->owned)
        return plan_fresh_locked(n, st, off, len, errp);
    st->host = e0 & L2E_OFFSET_MASK;
    st->bytes = st->k * cs - head < len ? st->k * cs - head : len;
    r = overlap_guard_locked(n, st->host + head, st->bytes, errp);
    if (r == 0)
        s->io_unlocked++;            /* no drain pending: wait_clear_locked saw none */
    return r;
}

/* Fresh step's data (unlocked): COW head/tail partial clusters, one pwrite
 * for the whole clusters between. */
static int write_fresh(bv_node *n, const struct wstep *st, const uint8_t *buf, uint64_t off,
                       bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, head = off & (cs - 1), bytes = st->bytes;
    uint64_t done = 0, ci = 0;
    int r = 0;
    bv_node_event(n->file, BV_EV_WRITE_AIO);
    if (head || bytes < cs) {
        uint64_t cnt = cs - head < bytes ? cs - head : bytes;
        r = write_partial(n, st->old_head, st->ci, st->host, buf, head, cnt, errp);
        done = cnt;
        ci = 1;
    }
    uint64_t full = (bytes - done) / cs * cs;
    if (r == 0 && full)
        r = bv_child_pwrite(n->file, buf + done, full, st->host + ci * cs, errp);
    done += full;
    ci += full / cs;
    if (r == 0 && done < bytes)
        r = write_partial(n, st->old_tail, st->ci + ci, st->host + ci * cs, buf + done, 0,
                          bytes - done, errp);
    return r;
}

static int write_step_data(bv_node *n, const struct wstep *st, const uint8_t *buf,
                           uint64_t off, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (!st->owned)
        return write_fresh(n, st, buf, off, errp);
    bv_node_event(n->file, BV_EV_WRITE_AIO);
    return bv_child_pwrite(n->file, buf, st->bytes, st->host + (off & (s->cluster_size - 1)),
                           errp);
}

/* Fresh step, data written (r == 0): map the new clusters and queue frees
 * for what they replace.  Data failed: give the new clusters back. */
static int map_fresh_locked(bv_node *n, struct wstep *st, int r, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    struct qcow2_cache_entry *e;
    uint64_t mapped = 0, cs = s->cluster_size;
    if (r == 0)
        r = qcow2_get_l2_locked(n, st->l1i, false, &e, errp);
    if (r == 0) {
        bv_node_event(n->file, BV_EV_L2_UPDATE);
        for (; mapped < st->k; mapped++) {
            int fr = free_old_entry(n, l2_get(e, st->l2i + mapped), r ? NULL : errp);
            r = r ? r : fr;
            l2_set(e, st->l2i + mapped, (st->host + mapped * cs) | QCOW_OFLAG_COPIED);
        }
    }
    if (mapped < st->k)
        qcow2_queue_free_locked(n, st->host + mapped * cs, (st->k - mapped) * cs, NULL);
    inflight_remove_locked(s, &st->rec);
    return r;
}

static int end_write_locked(bv_node *n, bv_error **errp)
{
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
        struct wstep st;
        pthread_mutex_lock(&s->lock);
        r = plan_step_locked(n, &st, off, len, errp);
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
            break;
        r = write_step_data(n, &st, p, off, errp);
        pthread_mutex_lock(&s->lock);
        if (st.owned)
            io_end_locked(s);
        else
            r = map_fresh_locked(n, &st, r, errp);
        if (r == 0)
            r = end_write_locked(n, errp);
        pthread_mutex_unlock(&s->lock);
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

/* Reserve clen compressed bytes for guest cluster ci, which must be
 * unallocated; on success *hoff is theirs and rec is in flight. */
static int alloc_compressed_locked(bv_node *n, uint64_t ci, uint64_t clen, uint64_t *hoff,
                                   struct qcow2_inflight *rec, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    struct qcow2_cache_entry *e;
    uint64_t one = 1;
    while (inflight_blocks(s, ci, &one))
        pthread_cond_wait(&s->cond, &s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, ci >> s->l2_bits, true, &e, errp);
    if (r < 0)
        return r;
    if (l2_get(e, ci & ((1ULL << s->l2_bits) - 1)) & ~QCOW_OFLAG_ZERO)
        return bv_error_setf(errp, EIO, "compressed write to an allocated cluster (guest "
                             "offset %" PRIu64 ")", ci << s->cluster_bits);
    r = qcow2_alloc_bytes_locked(n, clen, hoff, errp);
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
    pthread_mutex_lock(&s->lock);
    int r = alloc_compressed_locked(n, ci, clen, &hoff, &rec, errp);
    pthread_mutex_unlock(&s->lock);
    if (r < 0)
        return r;
    bv_node_event(n->file, BV_EV_WRITE_COMPRESSED);
    r = bv_child_pwrite(n->file, cdata, clen, hoff, errp);
    pthread_mutex_lock(&s->lock);
    if (r == 0)
        r = qcow2_get_l2_locked(n, ci >> s->l2_bits, false, &e, errp);
    if (r == 0) {
        uint64_t nsec = ((hoff + clen - 1) >> 9) - (hoff >> 9);
        bv_node_event(n->file, BV_EV_L2_UPDATE_COMPRESSED);
        l2_set(e, ci & ((1ULL << s->l2_bits) - 1),
               QCOW_OFLAG_COMPRESSED | (nsec << s->csize_shift) | hoff);
    } else {
        qcow2_queue_free_locked(n, hoff, clen, NULL);
    }
    inflight_remove_locked(s, &rec);
    pthread_mutex_unlock(&s->lock);
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
        uint64_t clen = deflate_cluster(in, cs, out, cs - 1);
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
    enum q_type t = entry_type(s, old);
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
    struct qcow2_state *s = q_state(n);
    uint64_t l1i = ci >> s->l2_bits, l2i = ci & ((1ULL << s->l2_bits) - 1);
    struct qcow2_cache_entry *e;
    bool backing = n->backing != NULL;
    while (inflight_overlaps(s, ci, cnt))     /* let allocations there finish first */
        pthread_cond_wait(&s->cond, &s->lock);
    if (!backing && !(s->l1[l1i] & L1E_OFFSET_MASK))
        return 0;                          /* reads as zeros already */
    int r = qcow2_get_l2_locked(n, l1i, true, &e, errp);
    bv_node_event(n->file, BV_EV_L2_UPDATE);
    for (uint64_t i = 0; i < cnt && r == 0; i++) {
        uint64_t old = l2_get(e, l2i + i);
        uint64_t nv = zeroed_entry(s, old, unmap, discard, backing);
        if (s->version < 3 && nv == QCOW_OFLAG_ZERO)
            nv = 0;                        /* v2: no ZERO flag; no backing, so 0 reads zeros */
        if (nv == old)
            continue;
        if ((nv & L2E_OFFSET_MASK) == 0)
            r = free_old_entry(n, old, errp);
        l2_set(e, l2i + i, nv);
    }
    return r;
}

/* Whole clusters [a, b) (byte offsets, cluster aligned), one table at a time. */
static int zero_clusters(bv_node *n, uint64_t a, uint64_t b, bool unmap, bool discard,
                         bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t per = 1ULL << s->l2_bits, last = b >> s->cluster_bits;
    pthread_mutex_lock(&s->lock);
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
    pthread_mutex_unlock(&s->lock);
    return r;
}

static int zero_entry(bv_node *n, uint64_t len, uint64_t off, bool unmap, bool discard,
                      bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, end = off + len;
    uint64_t a = (off + cs - 1) & ~(cs - 1);              /* first whole cluster */
    uint64_t b = end == n->size ? ((end + cs - 1) & ~(cs - 1)) : (end & ~(cs - 1));
    if ((s->version < 3 && n->backing) || a >= b)
        return write_zero_bytes(n, len, off, errp);
    int r = off < a ? write_zero_bytes(n, a - off, off, errp) : 0;
    if (r == 0)
        r = zero_clusters(n, a, b, unmap, discard, errp);
    if (r == 0 && b < end)
        r = write_zero_bytes(n, end - b, b, errp);
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
    pthread_mutex_lock(&s->lock);
    int r = map_run_locked(n, off, len, &run, errp);
    pthread_mutex_unlock(&s->lock);
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
