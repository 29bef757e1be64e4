/*
 * qcow2 refcounts: lookup, update, cluster allocation, deferred frees and
 * the metadata flush that writes everything back in a crash-safe order.
 *
 * Refcount entries are refcount_bits wide (1..64); entries under 8 bits are
 * packed from the least significant bit of each byte, wider ones are
 * big-endian.  A refblock holds cs*8/bits entries; the reftable (in memory,
 * host order) maps a block index to the refblock's host offset.
 *
 * Crash safety — the order in which things reach the file:
 *   1. A cluster's refcount is raised (in the refblock cache) before any
 *      mapping to it exists; data is written to it before its L2 entry.
 *   2. Dirty refblocks (and a new refblock's reftable entry) are written
 *      and the file synced before any L2 table is written (qcow2-cache.c),
 *      also when nothing is dirty but a refcount write since the last sync
 *      (an evicted refblock) is not yet durable: rb.unsynced.
 *   2a. A new refblock (and the refcount of its own cluster) is written and
 *      synced before the reftable entry that points to it is written.
 *   3. L2 tables are written and synced before the L1 entries that point
 *      to them (l2.unsynced): a new table may sit on a freed data cluster,
 *      whose old bytes would read as L2 entries.
 *   4. Frees are queued, not applied: a cluster's refcount is lowered only
 *      after the L2/L1 writes that dropped its last reference are on disk
 *      (and synced), and after unlocked reads/writes still using it have
 *      drained (qcow2-int.h).  Until then it cannot be reused.
 *   5. Growing the reftable: the new table is written and synced before the
 *      header points to it; the old table's clusters are freed later (4).
 * A crash at any point leaves refcounts >= references: at worst leaks,
 * which check repairs; never a reference to a free cluster.
 *
 * Allocation scans from free_hint (no free cluster below it) for a run of
 * clusters with refcount 0, skipping ranges reserved by an allocation in
 * progress (a refblock allocated while raising a run's refcounts must not
 * land inside that run).  Sequential writes therefore allocate contiguously
 * at the end of the image.
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/checked.h"
#include "util/endian.h"

static uint64_t rb_entry_get(const uint8_t *b, uint64_t i, uint32_t order)
{
    switch (order) {
    case 3: return b[i];
    case 4: return ld_be16(b + 2 * i);
    case 5: return ld_be32(b + 4 * i);
    case 6: return ld_be64(b + 8 * i);
    default: {
        uint32_t bits = 1u << order;
        uint64_t bit = i * bits;
        return (b[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    }
}

static void rb_entry_set(uint8_t *b, uint64_t i, uint32_t order, uint64_t v)
{
    switch (order) {
    case 3: b[i] = (uint8_t)v; break;
    case 4: st_be16(b + 2 * i, (uint16_t)v); break;
    case 5: st_be32(b + 4 * i, (uint32_t)v); break;
    case 6: st_be64(b + 8 * i, v); break;
    default: {
        uint32_t bits = 1u << order;
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        b[bit / 8] = (uint8_t)((b[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
    }
    }
}

static bool reserved(const struct qcow2_state *s, uint64_t idx)
{
    for (unsigned i = 0; i < s->nreserve; i++)
        if (idx >= s->reserve[i].start && idx < s->reserve[i].end)
            return true;
    return false;
}

static int reserve_push(struct qcow2_state *s, uint64_t start, uint64_t count, bv_error **errp)
{
    if (s->nreserve >= QCOW2_MAX_RESERVE)
        return bv_error_setf(errp, EIO, "qcow2: allocation nested too deeply");
    s->reserve[s->nreserve].start = start;
    s->reserve[s->nreserve].end = start + count;
    s->nreserve++;
    return 0;
}

/* Refblock offset for block index bi; 0 if none.  Validates the entry. */
static int refblock_offset(struct qcow2_state *s, uint64_t bi, uint64_t *off, bv_error **errp)
{
    *off = 0;
    if (bi >= s->reftable_entries)
        return 0;
    uint64_t e = s->reftable[bi];
    if (e & ~REFT_OFFSET_MASK)
        return qcow2_corrupt(errp, s->reftable_offset + bi * 8,
                             "reftable entry %" PRIu64 " has reserved bits set", bi);
    if ((e & (s->cluster_size - 1)) || e >= QCOW2_MAX_OFFSET)
        return qcow2_corrupt(errp, e, "refcount block %" PRIu64 " at 0x%" PRIx64
                             " is not cluster aligned or out of range", bi, e);
    *off = e;
    return 0;
}

int qcow2_rc_get_locked(bv_node *n, uint64_t idx, uint64_t *rc, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t off;
    struct qcow2_cache_entry *e;
    *rc = 0;
    int r = refblock_offset(s, idx >> s->rb_bits, &off, errp);
    if (r < 0 || off == 0)
        return r;
    r = qcow2_cache_get_locked(n, &s->rb, off, false, &e, errp);
    if (r == 0)
        *rc = rb_entry_get(e->data, idx & ((1ULL << s->rb_bits) - 1), s->refcount_order);
    return r;
}

static int grow_reftable(bv_node *n, uint64_t need, bv_error **errp);
static int alloc_refblock(bv_node *n, uint64_t bi, int depth, bv_error **errp);
static int find_free(bv_node *n, uint64_t want, bool exact, uint64_t *first, uint64_t *got,
                     bv_error **errp);
static int rc_update_depth(bv_node *n, uint64_t idx, int64_t delta, int depth, bv_error **errp);

/* Write reftable entry bi to disk (skipped while a grown table is pending). */
static int write_reftable_entry(bv_node *n, uint64_t bi, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint8_t buf[8];
    if (bi >= (uint64_t)s->reftable_clusters * s->cluster_size / 8)
        return 0;
    st_be64(buf, s->reftable[bi]);
    bv_node_event(n->file, BV_EV_REFTABLE_UPDATE);
    s->rb.unsynced = true;             /* must be durable before an L2 write (qcow2-cache.c) */
    return bv_child_pwrite(n->file, buf, 8, s->reftable_offset + bi * 8, errp);
}

/* A new, zeroed refblock for block index bi; written at once with its table entry. */
static int alloc_refblock(bv_node *n, uint64_t bi, int depth, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t c, got;
    struct qcow2_cache_entry *e;
    bv_node_event(n->file, BV_EV_REFBLOCK_ALLOC);
    if (depth > 4)
        return bv_error_setf(errp, EIO, "qcow2: refcount block allocation does not converge");
    int r = find_free(n, 1, true, &c, &got, errp);
    if (r < 0)
        return r;
    r = reserve_push(s, c, 1, errp);
    if (r < 0)
        return r;
    if ((c >> s->rb_bits) != bi)
        r = rc_update_depth(n, c, 1, depth + 1, errp);
    if (r == 0)
        r = qcow2_cache_get_locked(n, &s->rb, c << s->cluster_bits, true, &e, errp);
    if (r == 0 && (c >> s->rb_bits) == bi)
        rb_entry_set(e->data, c & ((1ULL << s->rb_bits) - 1), s->refcount_order, 1);
    if (r == 0) {
        bv_node_event(n->file, BV_EV_REFBLOCK_ALLOC_WRITE);
        r = bv_child_pwrite(n->file, e->data, s->cluster_size, c << s->cluster_bits, errp);
        e->dirty = false;
        s->rb.unsynced = true;
    }
    /* The block, and the refcount of its own cluster (in it or in another
     * block), durable before the reftable points to it: else a power loss
     * may keep the entry and lose the block (QEMU syncs both writes too). */
    if (r == 0)
        r = qcow2_cache_sync_refcounts_locked(n, errp);
    s->nreserve--;
    if (r < 0)
        return r;
    s->reftable[bi] = c << s->cluster_bits;
    bv_node_event(n->file, BV_EV_REFBLOCK_ALLOC_HOOKUP);
    r = write_reftable_entry(n, bi, errp);
    if (r < 0)
        s->failed = true;
    return r;
}

static int rc_update_depth(bv_node *n, uint64_t idx, int64_t delta, int depth, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t bi = idx >> s->rb_bits, off = 0, v;
    struct qcow2_cache_entry *e;
    int r = 0;
    if (delta > 0 && bi >= s->reftable_entries)
        r = grow_reftable(n, bi + 1, errp);
    if (r == 0)
        r = refblock_offset(s, bi, &off, errp);
    if (r == 0 && off == 0 && delta > 0) {
        r = alloc_refblock(n, bi, depth, errp);
        if (r == 0)
            r = refblock_offset(s, bi, &off, errp);
    }
    if (r < 0)
        return r;
    if (off == 0)
        return qcow2_corrupt(errp, idx << s->cluster_bits,
                             "cluster %" PRIu64 " freed but has no refcount block", idx);
    r = qcow2_cache_get_locked(n, &s->rb, off, false, &e, errp);
    if (r < 0)
        return r;
    uint64_t i = idx & ((1ULL << s->rb_bits) - 1);
    v = rb_entry_get(e->data, i, s->refcount_order);
    if (delta > 0 && v + (uint64_t)delta > s->refcount_max)
        return bv_error_setf(errp, ERANGE, "qcow2: refcount of cluster %" PRIu64 " overflows",
                             idx);
    if (delta < 0 && v < (uint64_t)-delta)
        return qcow2_corrupt(errp, idx << s->cluster_bits,
                             "refcount of cluster %" PRIu64 " would drop below zero", idx);
    v += (uint64_t)delta;
    rb_entry_set(e->data, i, s->refcount_order, v);
    e->dirty = true;
    if (v == 0 && idx < s->free_hint)
        s->free_hint = idx;
    return 0;
}

int qcow2_rc_update_locked(bv_node *n, uint64_t idx, int64_t delta, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    return rc_update_depth(n, idx, delta, 0, errp);
}

/* First run of free clusters at or after free_hint (exactly `want` if exact). */
static int find_free(bv_node *n, uint64_t want, bool exact, uint64_t *first, uint64_t *got,
                     bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t limit = QCOW2_MAX_OFFSET >> s->cluster_bits;
    uint64_t start = 0, len = 0, rc;
    bool hint_ok = true;
    for (uint64_t idx = s->free_hint; idx < limit; idx++) {
        int r = 0;
        bool is_free = !reserved(s, idx);
        if (is_free) {
            r = qcow2_rc_get_locked(n, idx, &rc, errp);
            is_free = rc == 0;
        }
        if (r < 0)
            return r;
        if (!is_free) {
            if (len && !exact)
                break;
            if (len == 0 && hint_ok && s->nreserve == 0)
                s->free_hint = idx + 1;
            hint_ok = hint_ok && len == 0;
            len = 0;
            continue;
        }
        if (len++ == 0)
            start = idx;
        if (len == want)
            break;
    }
    if (len == 0 || (exact && len < want))
        return bv_error_setf(errp, ENOSPC, "qcow2: no free clusters left in the image");
    *first = start;
    *got = len;
    return 0;
}

int qcow2_alloc_clusters_locked(bv_node *n, uint64_t want, bool exact, uint64_t *first,
                                uint64_t *got, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t start, cnt;
    bv_node_event(n->file, BV_EV_CLUSTER_ALLOC);
    int r = find_free(n, want, exact, &start, &cnt, errp);
    if (r < 0)
        return r;
    r = reserve_push(s, start, cnt, errp);
    for (uint64_t i = 0; i < cnt && r == 0; i++)
        r = qcow2_rc_update_locked(n, start + i, 1, errp);
    s->nreserve--;
    if (r < 0) {
        s->failed = true;
        return r;
    }
    if (s->free_hint == start)
        s->free_hint = start + cnt;
    *first = start << s->cluster_bits;
    *got = cnt;
    return 0;
}

/* Compressed data is packed byte-wise; each host cluster a range touches
 * gets one reference per compressed cluster (qemu-semantics §2.4). */
int qcow2_alloc_bytes_locked(bv_node *n, uint64_t len, uint64_t *off, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, cur = s->free_byte, first, got, rc = 1;
    int r = 0;
    bv_node_event(n->file, BV_EV_CLUSTER_ALLOC_BYTES);
    if (cur && (cur & (cs - 1)) == 0)
        cur = 0;                              /* cursor at a cluster boundary: start anew */
    if (cur && (cur & (cs - 1)) + len > cs) { /* spills into the next cluster: must be free */
        uint64_t next = (cur >> s->cluster_bits) + 1;
        r = reserved(s, next) ? 0 : qcow2_rc_get_locked(n, next, &rc, errp);
        if (r < 0)
            return r;
        if (rc == 0 && !reserved(s, next))
            r = qcow2_rc_update_locked(n, next, 1, errp);
        else
            cur = 0;
    }
    if (r == 0 && cur)
        r = qcow2_rc_update_locked(n, cur >> s->cluster_bits, 1, errp);
    if (r == 0 && !cur) {
        r = qcow2_alloc_clusters_locked(n, 1, true, &first, &got, errp);
        cur = first;
    }
    if (r < 0)
        return r;
    *off = cur;
    s->free_byte = cur + len;
    return 0;
}

int qcow2_queue_free_locked(bv_node *n, uint64_t off, uint64_t len, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    if (s->nfrees && s->frees[s->nfrees - 1].off + s->frees[s->nfrees - 1].len == off &&
        (off & (s->cluster_size - 1)) == 0) {
        s->frees[s->nfrees - 1].len += len;
        return 0;
    }
    if ((s->nfrees & (s->nfrees + 1)) == 0 || s->nfrees == 0) {
        size_t cap = s->nfrees ? (s->nfrees + 1) * 2 : 16;
        void *p = realloc(s->frees, cap * sizeof(*s->frees));
        if (!p)
            return bv_error_setf(errp, ENOMEM, "out of memory");
        s->frees = p;
    }
    s->frees[s->nfrees].off = off;
    s->frees[s->nfrees].len = len;
    s->nfrees++;
    return 0;
}

static int apply_frees(bv_node *n, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    int r = 0;
    for (size_t i = 0; i < s->nfrees && r == 0; i++) {
        uint64_t a = s->frees[i].off >> s->cluster_bits;
        uint64_t b = (s->frees[i].off + s->frees[i].len - 1) >> s->cluster_bits;
        bv_node_event(n->file, BV_EV_CLUSTER_FREE);
        for (uint64_t c = a; c <= b && r == 0; c++)
            r = qcow2_rc_update_locked(n, c, -1, errp);
    }
    s->nfrees = 0;
    s->free_byte = 0;
    return r;
}

/* The dirty L1 span, after the L2 tables it points to are durable (order 3). */
static int write_l1_dirty(bv_node *n, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (s->l1_dirty_hi <= s->l1_dirty_lo)
        return 0;
    int r = qcow2_cache_sync_refcounts_locked(n, errp);
    if (r == 0 && s->l2.unsynced)
        r = qcow2_sync_locked(n, errp);
    if (r < 0)
        return r;
    uint32_t lo = s->l1_dirty_lo, cnt = s->l1_dirty_hi - lo;
    uint64_t *buf = malloc((size_t)cnt * 8);
    if (!buf)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    for (uint32_t i = 0; i < cnt; i++)
        st_be64(&buf[i], s->l1[lo + i]);
    bv_node_event(n->file, BV_EV_L1_UPDATE);
    r = bv_child_pwrite(n->file, buf, (uint64_t)cnt * 8, s->l1_offset + (uint64_t)lo * 8,
                            errp);
    free(buf);
    if (r == 0)
        s->l1_dirty_lo = s->l1_dirty_hi = 0;
    return r;
}

/*
 * Get to where dirty L2 tables and the L1 may be written: refblocks on disk
 * and synced (order 2) and, if frees are due, no unlocked I/O on clusters
 * (order 4).  The sync runs with the lock dropped so that writers go on
 * meanwhile; whatever they dirtied is caught by the next round, and a
 * round that drops nothing ends with everything settled under one hold.
 * After two rounds the sync is done locked so that busy writers cannot
 * keep us going.
 */
static int settle_locked(bv_node *n, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    for (int round = 0;; round++) {
        if (s->nfrees)     /* nobody may be reading or writing a cluster about to be freed */
            qcow2_drain_io_locked(n);
        int r = qcow2_cache_flush_locked(n, &s->rb, NULL, errp);
        bool more = qcow2_cache_has_dirty(&s->l2) || s->l1_dirty_hi > s->l1_dirty_lo;
        if (r < 0 || !s->rb.unsynced || !more)    /* unsynced: written now or evicted earlier */
            return r;
        bool l2_unsynced = s->l2.unsynced;
        s->rb.unsynced = s->l2.unsynced = false;   /* later writes: caught by the next round */
        if (round >= 2) {
            r = bv_child_flush(n->file, errp);
        } else {
            bv_mutex_unlock(&s->lock);
            r = bv_child_flush(n->file, errp);
            bv_mutex_lock(&s->lock);
        }
        if (r < 0) {
            s->rb.unsynced = true;
            s->l2.unsynced |= l2_unsynced;
        }
        if (r < 0 || round >= 2)
            return r;
    }
}

int qcow2_flush_metadata_locked(bv_node *n, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    if (s->failed)
        return bv_error_setf(errp, EIO, "qcow2: image failed earlier; reopen it");
    int r = settle_locked(n, errp);
    if (r == 0)
        r = qcow2_cache_flush_locked(n, &s->l2, NULL, errp);
    if (r == 0)
        r = write_l1_dirty(n, errp);
    if (r == 0 && s->nfrees) {
        r = qcow2_sync_locked(n, errp);
        if (r == 0)
            r = apply_frees(n, errp);
        if (r == 0)
            r = qcow2_cache_flush_locked(n, &s->rb, NULL, errp);
    }
    if (r < 0)
        s->failed = true;
    return r;
}

/* Replace the reftable by one with at least `need` entries (see order 5). */
static int grow_reftable(bv_node *n, uint64_t need, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t per = s->cluster_size / 8, entries = s->reftable_entries * 2, first, got;
    if (entries < need)
        entries = need;
    entries = (entries + per - 1) / per * per;
    uint64_t clusters = entries / per;
    if (entries * 8 > QCOW2_MAX_REFTABLE_BYTES)
        return bv_error_setf(errp, ENOSPC, "qcow2: refcount table would exceed %u bytes",
                             QCOW2_MAX_REFTABLE_BYTES);
    bv_node_event(n->file, BV_EV_REFTABLE_GROW);
    uint64_t *nt = calloc(entries, 8), *old = s->reftable;
    uint8_t *disk = malloc(entries * 8);
    if (!nt || !disk) {
        free(nt);
        free(disk);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    memcpy(nt, old, s->reftable_entries * 8);
    uint64_t old_off = s->reftable_offset, old_clusters = s->reftable_clusters;
    s->reftable = nt;
    s->reftable_entries = entries;
    s->reftable_clusters = 0;             /* entries are not written one by one meanwhile */
    free(old);
    int r = qcow2_alloc_clusters_locked(n, clusters, true, &first, &got, errp);
    if (r == 0)
        r = qcow2_cache_flush_locked(n, &s->rb, NULL, errp);
    for (uint64_t i = 0; r == 0 && i < entries; i++)
        st_be64(disk + 8 * i, s->reftable[i]);
    if (r == 0)
        r = bv_child_pwrite(n->file, disk, entries * 8, first, errp);
    if (r == 0)
        r = qcow2_sync_locked(n, errp);
    if (r == 0) {
        s->reftable_offset = first;
        s->reftable_clusters = (uint32_t)clusters;
        r = qcow2_write_header_fields_locked(n, errp);
    }
    if (r == 0)
        r = qcow2_sync_locked(n, errp);
    if (r == 0)
        r = qcow2_queue_free_locked(n, old_off, old_clusters << s->cluster_bits, errp);
    free(disk);
    if (r < 0)
        s->failed = true;
    return r;
}
