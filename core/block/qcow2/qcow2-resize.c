/*
 * qcow2 resize.  Growing within the current L1 only rewrites the size
 * field; a larger L1 is written to new clusters and synced before the
 * header points to it, and the old L1 is freed afterwards.  Shrinking
 * drops every mapping past the new end (freeing the clusters through the
 * usual deferred-free path) before the header's size changes.
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/endian.h"

static int grow_l1_locked(bv_node *n, uint64_t need, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t first, got, cs = s->cluster_size;
    uint64_t clusters = (need * 8 + cs - 1) / cs;
    uint64_t entries = clusters * cs / 8;
    if (entries * 8 > QCOW2_MAX_L1_BYTES)
        entries = need;
    if (entries * 8 > QCOW2_MAX_L1_BYTES)
        return bv_error_setf(errp, EFBIG, "qcow2: Active L1 table too large");
    uint64_t *nl1 = calloc(entries, 8);
    uint8_t *disk = calloc(entries, 8);
    int r = nl1 && disk ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
    bv_node_event(n->file, BV_EV_L1_GROW_ALLOC_TABLE);
    if (r == 0)
        r = qcow2_alloc_clusters_locked(n, clusters, true, &first, &got, errp);
    if (r == 0)
        r = qcow2_flush_metadata_locked(n, errp);   /* L2s and refcounts before the new L1 */
    if (r == 0) {
        memcpy(nl1, s->l1, (size_t)s->l1_size * 8);
        for (uint64_t i = 0; i < entries; i++)
            st_be64(disk + 8 * i, nl1[i]);
        bv_node_event(n->file, BV_EV_L1_GROW_WRITE_TABLE);
        r = bv_child_pwrite(n->file, disk, entries * 8, first, errp);
    }
    if (r == 0)
        r = bv_child_flush(n->file, errp);
    uint64_t old_off = s->l1_offset, old_len = (uint64_t)s->l1_size * 8;
    if (r == 0) {
        bv_node_event(n->file, BV_EV_L1_GROW_ACTIVATE_TABLE);
        free(s->l1);
        s->l1 = nl1;
        nl1 = NULL;
        s->l1_size = (uint32_t)entries;
        s->l1_offset = first;
        s->l1_dirty_lo = s->l1_dirty_hi = 0;
        r = qcow2_write_header_fields_locked(n, errp);
        if (r == 0)
            r = bv_child_flush(n->file, errp);
        if (r == 0 && old_len)
            r = qcow2_queue_free_locked(n, old_off, old_len, errp);
    }
    free(nl1);
    free(disk);
    return r;
}

static int drop_entry(bv_node *n, uint64_t e, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (e & QCOW_OFLAG_COMPRESSED) {
        uint64_t coff, clen;
        qcow2_compressed_range(s, e, &coff, &clen);
        return qcow2_queue_free_locked(n, coff, clen, errp);
    }
    if (e & L2E_OFFSET_MASK)
        return qcow2_queue_free_locked(n, e & L2E_OFFSET_MASK, s->cluster_size, errp);
    return 0;
}

/* Unmap guest clusters from index `from` to the end of the L1 range. */
static int shrink_locked(bv_node *n, uint64_t from, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t per = 1ULL << s->l2_bits;
    int r = 0;
    for (uint64_t l1i = from >> s->l2_bits; r == 0 && l1i < s->l1_size; l1i++) {
        struct qcow2_cache_entry *e;
        uint64_t start = l1i == (from >> s->l2_bits) ? (from & (per - 1)) : 0;
        r = qcow2_get_l2_locked(n, l1i, false, &e, errp);
        if (r < 0 || !e)
            continue;
        for (uint64_t i = start; i < per && r == 0; i++) {
            r = drop_entry(n, qcow2_l2e(s, e->data, i), errp);
            memset(e->data + (i << s->l2e_shift), 0, 1u << s->l2e_shift);  /* and bitmap */
        }
        e->dirty = true;
        if (start == 0 && r == 0) {
            uint64_t l2off = s->l1[l1i] & L1E_OFFSET_MASK;
            r = qcow2_flush_metadata_locked(n, errp);  /* entries gone before the table */
            qcow2_cache_drop_locked(n, &s->l2, l2off);
            s->l1[l1i] = 0;
            if (s->l1_dirty_hi <= s->l1_dirty_lo)
                s->l1_dirty_lo = (uint32_t)l1i;
            if (s->l1_dirty_lo > l1i)
                s->l1_dirty_lo = (uint32_t)l1i;
            if (s->l1_dirty_hi < l1i + 1)
                s->l1_dirty_hi = (uint32_t)l1i + 1;
            if (r == 0)
                r = qcow2_queue_free_locked(n, l2off, s->cluster_size, errp);
        }
    }
    return r;
}

int qcow2_truncate(bv_node *n, uint64_t size, bool allow_shrink, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (size % 512)
        return bv_error_setf(errp, EINVAL, "The new size must be a multiple of 512");
    bv_mutex_lock(&s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    uint64_t need = qcow2_l1_entries_for(size, s->cluster_bits, s->l2_bits);
    if (r == 0 && size > n->size && need > s->l1_size)
        r = grow_l1_locked(n, need, errp);
    if (r == 0 && size < n->size) {
        uint64_t from = (size + s->cluster_size - 1) >> s->cluster_bits;
        r = shrink_locked(n, from, errp);
    }
    if (r == 0)
        r = qcow2_flush_metadata_locked(n, errp);
    uint64_t old = n->size;
    if (r == 0) {
        n->size = size;
        r = qcow2_write_header_fields_locked(n, errp);
        if (r == 0)
            r = bv_child_flush(n->file, errp);
        if (r < 0)
            n->size = old;
    }
    bv_mutex_unlock(&s->lock);
    return r;
}
