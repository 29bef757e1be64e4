/*
 * qcow2 extended L2 entries (subclusters, see qcow2-int.h): what one
 * subcluster of a mapped cluster reads from, the bitmaps of clusters being
 * written (fresh clusters written only where touched, owned clusters whose
 * touched subclusters become allocated), and zeroing of whole subclusters.
 * The write path that plans, writes and maps steps is in qcow2-cluster.c;
 * these are its subcluster parts, split out of it without change.
 */
#include "block/qcow2/qcow2-int.h"

#include <inttypes.h>

/* What allocation unit sc (a subcluster; 0 without extended L2) of the
 * cluster mapped by (ent, bm) reads from, and its host offset if data. */
int qcow2_sc_unit_status(const struct qcow2_state *s, uint64_t ent, uint64_t bm, uint32_t sc,
                         enum q_type *t, uint64_t *host, bv_error **errp)
{
    uint64_t h = ent & L2E_OFFSET_MASK;
    *t = qcow2_entry_type(s, ent);
    *host = h;
    if (!s->extl2 || *t == Q_COMPRESSED)
        return 0;
    bool alloc = (bm >> sc) & 1, zero = (bm >> (32 + sc)) & 1;
    if ((alloc && zero) || (alloc && !h))
        return qcow2_corrupt(errp, h, "Invalid cluster entry found (L2 entry 0x%016" PRIx64
                             ", bitmap 0x%016" PRIx64 ")", ent, bm);
    *t = alloc ? Q_NORMAL : zero ? Q_ZERO : Q_UNALLOC;
    *host = h + ((uint64_t)sc << s->sc_bits);
    return 0;
}

/* Extended L2: whether a fresh cluster replacing old is written only where
 * touched (old holds no host data, so untouched subclusters keep reading as
 * they did); else the whole cluster is copied. */
bool qcow2_sc_fresh_sub(const struct qcow2_state *s, uint64_t old)
{
    return s->extl2 && !(old & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED));
}

/* Whether the subcluster holding byte pos of the cluster (old, bm) already
 * holds data in old's host cluster (extended L2 only). */
bool qcow2_sc_unit_allocated(const struct qcow2_state *s, uint64_t old, uint64_t bm, uint64_t pos)
{
    return s->extl2 && qcow2_entry_type(s, old) == Q_NORMAL && ((bm >> (pos >> s->sc_bits)) & 1);
}

/* Allocated-half bitmap bits of the subclusters that bytes [from, from + cnt) touch. */
uint64_t qcow2_sc_touched_mask(const struct qcow2_state *s, uint64_t from, uint64_t cnt)
{
    return qcow2_sc_mask((uint32_t)(from >> s->sc_bits),
                         (uint32_t)((from + cnt - 1) >> s->sc_bits) + 1);
}

/* Bitmap of a fresh cluster replacing (old, oldbm) whose guest bytes
 * [from, from + cnt) are written. */
uint64_t qcow2_sc_fresh_bitmap(const struct qcow2_state *s, uint64_t old, uint64_t oldbm,
                               uint64_t from, uint64_t cnt)
{
    if (!qcow2_sc_fresh_sub(s, old))
        return QCOW2_SC_ALL_ALLOC;
    uint64_t m = qcow2_sc_touched_mask(s, from, cnt);
    return (oldbm & QCOW2_SC_ALL_ZERO & ~(m << 32)) | m;
}

/* Owned step with extended L2: a first or last touched subcluster that is
 * unallocated and only partly written must be filled from its old content.
 * The first one makes the step a one-cluster cow step; a last one in a
 * later cluster ends the step before that cluster. */
void qcow2_sc_plan_owned(const struct qcow2_state *s, struct qcow2_wstep *st,
                         const struct qcow2_cache_entry *e, uint64_t len)
{
    uint64_t cs = s->cluster_size, us = 1ULL << s->sc_bits, end = st->head + st->bytes;
    uint64_t lastc = (end - 1) >> s->cluster_bits;
    uint64_t e0 = qcow2_l2_get(s, e, st->l2i), bm0 = qcow2_l2_get_bm(s, e, st->l2i);
    uint64_t el = qcow2_l2_get(s, e, st->l2i + lastc), bml = qcow2_l2_get_bm(s, e, st->l2i + lastc);
    bool hfill = (st->head & (us - 1)) && !qcow2_sc_unit_allocated(s, e0, bm0, st->head);
    bool tfill = (end & (us - 1)) && !qcow2_sc_unit_allocated(s, el, bml, (end - 1) & (cs - 1));
    if (hfill || (tfill && lastc == 0)) {
        st->k = 1;
        st->bytes = cs - st->head < len ? cs - st->head : len;
        st->cow = true;
        st->old_head = e0;
        st->old_head_bm = bm0;
    } else if (tfill) {
        st->k = lastc;
        st->bytes = lastc * cs - st->head;
    }
}

/* Bitmap of the step's new cluster i. */
uint64_t qcow2_sc_fresh_bm_of(const struct qcow2_state *s, const struct qcow2_wstep *st, uint64_t i)
{
    if (i == 0 && (st->head || st->bytes < s->cluster_size))
        return st->new_head_bm;
    return i == st->k - 1 ? st->new_tail_bm : QCOW2_SC_ALL_ALLOC;
}

/* Owned step written (extended L2): its touched subclusters are allocated
 * now, in each cluster whose entry still maps the host cluster written. */
int qcow2_sc_mark_owned_locked(bv_node *n, const struct qcow2_wstep *st, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    struct qcow2_cache_entry *e;
    uint64_t cs = s->cluster_size, end = st->head + st->bytes;
    int r = qcow2_get_l2_locked(n, st->l1i, false, &e, errp);
    for (uint64_t i = 0; r == 0 && e && i < st->k; i++) {
        uint64_t a = i ? 0 : st->head, b = end - i * cs < cs ? end - i * cs : cs;
        uint64_t ent = qcow2_l2_get(s, e, st->l2i + i), bm = qcow2_l2_get_bm(s, e, st->l2i + i);
        if ((ent & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED)) != st->host + i * cs)
            continue;                    /* discarded or replaced meanwhile */
        uint64_t m = qcow2_sc_touched_mask(s, a, b - a), nbm = (bm | m) & ~(m << 32);
        if (nbm != bm)
            qcow2_l2_set(s, e, st->l2i + i, ent, nbm);
    }
    return r;
}

/* Extended L2: new (entry, bitmap) for a whole cluster being zeroed or
 * discarded; *nv == old and *nbm == bm keep it. */
void qcow2_sc_zeroed_entry(const struct qcow2_state *s, uint64_t old, uint64_t bm, bool unmap,
                           bool discard, bool backing, uint64_t *nv, uint64_t *nbm)
{
    enum q_type t = qcow2_entry_type(s, old);
    *nv = old;
    *nbm = bm;
    if (t == Q_UNALLOC && (!backing || bm == QCOW2_SC_ALL_ZERO))
        return;                        /* reads as zeros already */
    *nbm = QCOW2_SC_ALL_ZERO;
    if (!unmap && !discard && t == Q_NORMAL && (old & QCOW_OFLAG_COPIED))
        return;                        /* keeps its host cluster, reads as zeros */
    *nv = 0;
}

/* Extended L2: whole subclusters [off, off + len) of one cluster get their
 * zero bits under the lock when the cluster has no host data (over a
 * backing file; without one they read as zeros already) or is owned (their
 * allocated bits drop); *done is false when neither holds (compressed or
 * shared: the caller writes zeros). */
int qcow2_sc_zero_locked(bv_node *n, uint64_t off, uint64_t len, bool *done,
                         bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t ci = off >> s->cluster_bits, l1i = ci >> s->l2_bits;
    uint64_t l2i = ci & ((1ULL << s->l2_bits) - 1);
    struct qcow2_cache_entry *e = NULL;
    bool backing = n->backing != NULL || n->backing_hidden;
    *done = false;
    while (qcow2_inflight_overlaps(s, ci, 1))
        bv_cond_wait(&s->cond, &s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0 && (backing || (s->l1[l1i] & L1E_OFFSET_MASK)))
        r = qcow2_get_l2_locked(n, l1i, backing, &e, errp);
    if (r < 0 || !e) {
        *done = r == 0;                /* no table, no backing file: zeros already */
        return r;
    }
    uint64_t ent = qcow2_l2_get(s, e, l2i), bm = qcow2_l2_get_bm(s, e, l2i), nbm = bm;
    uint64_t m = qcow2_sc_touched_mask(s, off & (s->cluster_size - 1), len);
    enum q_type t = qcow2_entry_type(s, ent);
    if (t == Q_UNALLOC) {
        nbm = backing ? bm | (m << 32) : bm;
        *done = true;
    } else if (t == Q_NORMAL && (ent & QCOW_OFLAG_COPIED)) {
        nbm = (bm & ~m) | (m << 32);
        *done = true;
    }
    if (*done && nbm != bm) {
        bv_node_event(n->file, BV_EV_L2_UPDATE);
        qcow2_l2_set(s, e, l2i, ent, nbm);
    }
    return r;
}
