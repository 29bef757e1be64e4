/*
 * qcow2 check: rebuild every cluster's reference count from the metadata
 * (header, L1, L2 tables, data and compressed clusters, reftable, refblocks,
 * persistent bitmap structures) and compare with the stored refcounts, with
 * qemu-img's wording (qemu-semantics §2.11).  Leaks (stored > found) can be
 * repaired by lowering the stored count; corruptions are only reported.
 *
 * Cost: one pass over the metadata plus a 32-bit counter per cluster of the
 * file (bounded by the file size, refused beyond 2^28 clusters).
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/endian.h"

struct ck {
    bv_node *n;
    struct bv_check_result *res;
    uint32_t *refs;
    uint64_t nclusters;
    uint8_t *buf;             /* one cluster */
    uint8_t *bad_rb;          /* per reftable entry: 1 = bad, reported once, range skipped */
    bool active;              /* walking the active L1 (not a snapshot's) */
};

static void msg(struct ck *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg(struct ck *c, const char *fmt, ...)
{
    if (c->res->nmessages >= BV_CHECK_MAX_MESSAGES)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) >= 0)
        c->res->messages[c->res->nmessages++] = m;
    va_end(ap);
}

static void add_ref(struct ck *c, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = q_state(c->n);
    if (len == 0)
        return;
    uint64_t a = off >> s->cluster_bits, b = (off + len - 1) >> s->cluster_bits;
    if (b >= c->nclusters) {
        msg(c, "ERROR: counting reference for region exceeding the end of the file by one "
            "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64, off, len);
        c->res->corruptions++;
        return;
    }
    for (uint64_t i = a; i <= b; i++)
        if (c->refs[i] < UINT32_MAX)
            c->refs[i]++;
}

static int copied_check(struct ck *c, uint64_t off, bool copied, uint64_t *rc)
{
    struct qcow2_state *s = q_state(c->n);
    return qcow2_rc_get_locked(c->n, off >> s->cluster_bits, rc, NULL) < 0 ? -1
           : ((*rc == 1) != copied);
}

static void check_l2_entry(struct ck *c, uint64_t e)
{
    struct qcow2_state *s = q_state(c->n);
    uint64_t rc;
    if (e & QCOW_OFLAG_COMPRESSED) {
        uint64_t coff, clen;
        qcow2_compressed_range(s, e, &coff, &clen);
        add_ref(c, coff, clen);
        c->res->allocated_clusters += c->active;
        return;
    }
    uint64_t off = e & L2E_OFFSET_MASK;
    if (!off)
        return;
    if (off & (s->cluster_size - 1)) {
        msg(c, "ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; L2 entry "
            "corrupted.", off);
        c->res->corruptions++;
        return;
    }
    add_ref(c, off, s->cluster_size);
    if (!c->active)           /* shared with the active L1: COPIED is its business */
        return;
    if (!(e & QCOW_OFLAG_ZERO) || s->version < 3)
        c->res->allocated_clusters++;
    if (copied_check(c, off, e & QCOW_OFLAG_COPIED, &rc) == 1) {
        msg(c, "ERROR OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64, e, rc);
        c->res->corruptions++;
    }
}

/* Count an L1 table (host order), its L2 tables and what they map.  The
 * active L1 also gets the COPIED checks; snapshot L1s share tables with it. */
static void walk_l1(struct ck *c, const uint64_t *l1, uint32_t l1_size, uint64_t l1_off)
{
    struct qcow2_state *s = q_state(c->n);
    uint64_t per = 1ULL << s->l2_bits, rc;
    add_ref(c, l1_off, (uint64_t)l1_size * 8);
    for (uint64_t i = 0; i < l1_size; i++) {
        uint64_t e = l1[i], off = e & L1E_OFFSET_MASK;
        if (e & L1E_RESERVED_MASK) {
            msg(c, "ERROR found L1 entry with reserved bits set: %016" PRIx64, e);
            c->res->corruptions++;
            continue;
        }
        if (!off)
            continue;
        if (off & (s->cluster_size - 1)) {
            msg(c, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry "
                "corrupted", off);
            c->res->corruptions++;
            continue;
        }
        add_ref(c, off, s->cluster_size);
        if (c->active && copied_check(c, off, e & QCOW_OFLAG_COPIED, &rc) == 1) {
            msg(c, "ERROR OFLAG_COPIED L2 cluster: l1_index=%" PRIu64 " l1_entry=%" PRIx64
                " refcount=%" PRIu64, i, e, rc);
            c->res->corruptions++;
        }
        if ((off >> s->cluster_bits) >= c->nclusters ||
            bv_child_pread(c->n->file, c->buf, s->cluster_size, off, NULL) < 0) {
            c->res->check_errors++;
            continue;
        }
        for (uint64_t j = 0; j < per; j++)
            check_l2_entry(c, qcow2_l2e(s, c->buf, j));   /* 8- or 16-byte entries */
    }
}

static void check_l1(struct ck *c)
{
    struct qcow2_state *s = q_state(c->n);
    c->active = true;
    walk_l1(c, s->l1, s->l1_size, s->l1_offset);
    c->active = false;
}

/* One snapshot's L1 table, read from the file and walked like the active one. */
static void check_snapshot_l1(struct ck *c, const struct qcow2_snapshot *sn)
{
    struct qcow2_state *s = q_state(c->n);
    if (sn->l1_size > QCOW2_MAX_L1_BYTES / 8) {
        msg(c, "ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 size is too large; snapshot "
            "table entry corrupted", sn->id, sn->name, sn->l1_size);
        c->res->corruptions++;
        return;
    }
    if (sn->l1_offset & (s->cluster_size - 1)) {
        msg(c, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not cluster "
            "aligned; snapshot table entry corrupted", sn->id, sn->name, sn->l1_offset);
        c->res->corruptions++;
        return;
    }
    uint64_t *l1 = malloc((uint64_t)sn->l1_size * 8 + 8);
    if (!l1 || bv_child_pread(c->n->file, l1, (uint64_t)sn->l1_size * 8, sn->l1_offset,
                              NULL) < 0) {
        c->res->check_errors++;
        free(l1);
        return;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = ld_be64(&l1[i]);
    walk_l1(c, l1, sn->l1_size, sn->l1_offset);
    free(l1);
}

/* The snapshot table and every snapshot's L1 tree are in use too. */
static void check_snapshots(struct ck *c)
{
    struct qcow2_state *s = q_state(c->n);
    struct qcow2_snapshot *sn;
    uint32_t count;
    uint64_t bytes;
    bv_error *err = NULL;
    if (qcow2_snapshots_read_locked(c->n, &sn, &count, &bytes, &err) < 0) {
        msg(c, "ERROR %s", err ? err->msg : "cannot read the snapshot table");
        c->res->corruptions++;
        bv_error_free(err);
        return;
    }
    add_ref(c, s->snapshots_offset, bytes);
    for (uint32_t i = 0; i < count; i++)
        check_snapshot_l1(c, &sn[i]);
    qcow2_snapshots_free(sn, count);
}

static void check_reftable(struct ck *c)
{
    struct qcow2_state *s = q_state(c->n);
    add_ref(c, s->reftable_offset, (uint64_t)s->reftable_clusters << s->cluster_bits);
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        uint64_t off = s->reftable[i] & REFT_OFFSET_MASK;
        if (s->reftable[i] == 0)
            continue;
        c->bad_rb[i] = 1;
        if (s->reftable[i] & ~REFT_OFFSET_MASK) {
            msg(c, "ERROR refcount table entry %" PRIu64 " has reserved bits set", i);
        } else if (off & (s->cluster_size - 1)) {
            msg(c, "ERROR refcount block %" PRIu64 " is not cluster aligned; refcount table "
                "entry corrupted", i);
        } else if ((off >> s->cluster_bits) >= c->nclusters) {
            msg(c, "ERROR refcount block %" PRIu64 " is outside image", i);
        } else {
            c->bad_rb[i] = 0;
            add_ref(c, off, s->cluster_size);
            continue;
        }
        c->res->corruptions++;
    }
}

/* Persistent bitmaps: directory, tables and data clusters are in use too. */
static void check_bitmaps(struct ck *c)
{
    struct qcow2_state *s = q_state(c->n);
    for (uint32_t pos = 0; pos + 8 <= s->exts_len;) {
        uint32_t type = ld_be32(s->exts + pos), len = ld_be32(s->exts + pos + 4);
        if (type == QCOW2_EXT_BITMAPS && len >= 24) {
            uint32_t nb = ld_be32(s->exts + pos + 8);
            uint64_t dsize = ld_be64(s->exts + pos + 16), doff = ld_be64(s->exts + pos + 24);
            if (dsize > (64u << 20))
                return;
            uint8_t *dir = malloc(dsize ? dsize : 1);
            if (dir && bv_child_pread(c->n->file, dir, dsize, doff, NULL) == 0) {
                add_ref(c, doff, dsize);
                uint64_t p = 0;
                for (uint32_t i = 0; i < nb && p + 24 <= dsize; i++) {
                    uint64_t toff = ld_be64(dir + p);
                    uint32_t tsize = ld_be32(dir + p + 8);
                    uint32_t nlen = ld_be16(dir + p + 18), xlen = ld_be32(dir + p + 20);
                    add_ref(c, toff, (uint64_t)tsize * 8);
                    uint64_t *t = tsize <= (1u << 24) ? malloc((uint64_t)tsize * 8 + 8) : NULL;
                    if (t && bv_child_pread(c->n->file, t, (uint64_t)tsize * 8, toff, NULL) == 0)
                        for (uint32_t k = 0; k < tsize; k++)
                            add_ref(c, ld_be64(&t[k]) & L2E_OFFSET_MASK,
                                    (ld_be64(&t[k]) & L2E_OFFSET_MASK) ? s->cluster_size : 0);
                    free(t);
                    p += (24 + (uint64_t)xlen + nlen + 7) & ~7ULL;
                }
            }
            free(dir);
        }
        pos += 8 + ((len + 7) & ~7u);
    }
}

/* Stored against counted refcounts, for the clusters of the file only (as
 * QEMU: a refcount past the end is no cluster's); a bad refblock was reported
 * once by check_reftable and its clusters are skipped, so the work is bounded
 * by the file's size, not by what a reftable entry claims to cover. */
static void compare_one(struct ck *c, uint64_t i, bool repair, uint64_t *end, bv_error **errp)
{
    uint64_t rc, ref = c->refs[i];
    if (qcow2_rc_get_locked(c->n, i, &rc, NULL) < 0) {
        c->res->check_errors++;
        return;
    }
    if (ref)
        *end = i + 1;
    if (rc > ref) {
        msg(c, "Leaked cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
            i, rc, ref);
        c->res->leaks++;
        if (repair && qcow2_rc_update_locked(c->n, i, -(int64_t)(rc - ref), errp) == 0)
            c->res->leaks_fixed++;
    } else if (rc < ref) {
        msg(c, "ERROR cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
            i, rc, ref);
        c->res->corruptions++;
    }
}

static int compare(struct ck *c, bool repair, bv_error **errp)
{
    struct qcow2_state *s = q_state(c->n);
    uint64_t end = 0, per = 1ULL << s->rb_bits;
    for (uint64_t i = 0; i < c->nclusters;) {
        uint64_t bi = i >> s->rb_bits;
        if (bi < s->reftable_entries && c->bad_rb[bi]) {
            i = (bi + 1) * per;
            continue;
        }
        compare_one(c, i, repair, &end, errp);
        i++;
    }
    c->res->image_end_offset = end << s->cluster_bits;
    return 0;
}

static int run_check(struct ck *c, bool repair, bv_error **errp)
{
    struct qcow2_state *s = q_state(c->n);
    uint64_t flen;
    int r = c->n->read_only ? 0 : qcow2_flush_metadata_locked(c->n, errp);
    if (r == 0)
        r = bv_child_length(c->n->file, &flen, errp);
    if (r < 0)
        return r;
    c->nclusters = (flen + s->cluster_size - 1) >> s->cluster_bits;
    if (c->nclusters > (1ULL << 28))
        return bv_error_setf(errp, EFBIG, "qcow2: image file too large to check");
    c->refs = calloc(c->nclusters + 1, sizeof(uint32_t));
    c->buf = malloc(s->cluster_size);
    c->bad_rb = calloc(s->reftable_entries + 1, 1);
    if (!c->refs || !c->buf || !c->bad_rb)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    c->res->total_clusters = (c->n->size + s->cluster_size - 1) >> s->cluster_bits;
    add_ref(c, 0, s->cluster_size);
    check_l1(c);
    check_snapshots(c);
    check_reftable(c);
    check_bitmaps(c);
    if (repair)
        r = qcow2_prepare_write_locked(c->n, errp);
    if (r == 0)
        r = compare(c, repair, errp);
    if (r == 0 && repair && c->res->leaks_fixed) {
        r = qcow2_flush_metadata_locked(c->n, errp);
        if (r == 0)
            r = bv_child_flush(c->n->file, errp);
    }
    return r;
}

int qcow2_check(bv_node *n, bool repair, struct bv_check_result *res, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    struct ck c = { .n = n, .res = res };
    bv_mutex_lock(&s->lock);
    int r = run_check(&c, repair, errp);
    bv_mutex_unlock(&s->lock);
    free(c.refs);
    free(c.buf);
    free(c.bad_rb);
    return r;
}
