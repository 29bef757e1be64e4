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

int qcow2_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint8_t *p = buf;
    int r = 0;
    while (len && r == 0) {
        struct q_run run;
        pthread_mutex_lock(&s->lock);
        r = map_run_locked(n, off, len, &run, errp);
        pthread_mutex_unlock(&s->lock);
        if (r == 0)
            r = read_run(n, &run, p, off, errp);
        p += run.len;
        off += run.len;
        len -= run.len;
    }
    return r;
}

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

/* Write [off, off+bytes) into `got` fresh clusters at host (locked). */
static int write_fresh(bv_node *n, struct qcow2_cache_entry *e, uint64_t l2i, uint64_t host,
                       uint64_t got, const uint8_t *buf, uint64_t off, uint64_t bytes,
                       bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, head = off & (cs - 1), gci = off >> s->cluster_bits;
    uint64_t done = 0, ci = 0;
    int r = 0;
    bv_node_event(n->file, BV_EV_WRITE_AIO);
    if (head || bytes < cs) {
        uint64_t cnt = cs - head < bytes ? cs - head : bytes;
        r = write_partial(n, l2_get(e, l2i), gci, host, buf, head, cnt, errp);
        done = cnt;
        ci = 1;
    }
    uint64_t full = (bytes - done) / cs * cs;
    if (r == 0 && full)
        r = bv_child_pwrite(n->file, buf + done, full, host + ci * cs, errp);
    done += full;
    ci += full / cs;
    if (r == 0 && done < bytes)
        r = write_partial(n, l2_get(e, l2i + ci), gci + ci, host + ci * cs, buf + done, 0,
                          bytes - done, errp);
    return r;
}

static int write_step_locked(bv_node *n, const uint8_t *buf, uint64_t off, uint64_t len,
                             uint64_t *done, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, per = 1ULL << s->l2_bits, ci = off >> s->cluster_bits;
    uint64_t l1i = ci >> s->l2_bits, l2i = ci & (per - 1), first, got, k = 1;
    struct qcow2_cache_entry *e;
    int r = qcow2_get_l2_locked(n, l1i, true, &e, errp);
    if (r < 0)
        return r;
    uint64_t want = ((off + len - 1) >> s->cluster_bits) - ci + 1;
    if (want > per - l2i)
        want = per - l2i;
    uint64_t e0 = l2_get(e, l2i);
    bool owned = entry_type(s, e0) == Q_NORMAL && (e0 & QCOW_OFLAG_COPIED);
    if ((r = check_data_entry(s, e0, errp)) < 0)
        return r;
    while (k < want) {
        uint64_t ek = l2_get(e, l2i + k);
        bool ok = entry_type(s, ek) == Q_NORMAL && (ek & QCOW_OFLAG_COPIED);
        if (ok != owned || (owned && (ek & L2E_OFFSET_MASK) != (e0 & L2E_OFFSET_MASK) + k * cs))
            break;
        k++;
    }
    uint64_t head = off & (cs - 1);
    if (owned) {
        *done = k * cs - head < len ? k * cs - head : len;
        bv_node_event(n->file, BV_EV_WRITE_AIO);
        return bv_child_pwrite(n->file, buf, *done, (e0 & L2E_OFFSET_MASK) + head, errp);
    }
    r = qcow2_alloc_clusters_locked(n, k, false, &first, &got, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, l1i, false, &e, errp);
    if (r < 0)
        return r;
    *done = got * cs - head < len ? got * cs - head : len;
    r = write_fresh(n, e, l2i, first, got, buf, off, *done, errp);
    if (r == 0)
        r = qcow2_get_l2_locked(n, l1i, false, &e, errp);
    bv_node_event(n->file, BV_EV_L2_UPDATE);
    for (uint64_t i = 0; i < got && r == 0; i++) {
        r = free_old_entry(n, l2_get(e, l2i + i), errp);
        l2_set(e, l2i + i, (first + i * cs) | QCOW_OFLAG_COPIED);
    }
    return r;
}

static int end_write_locked(bv_node *n, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (s->nfrees >= QCOW2_MAX_PENDING_FREES)
        return qcow2_flush_metadata_locked(n, errp);
    return 0;
}

static int write_locked(bv_node *n, const uint8_t *p, uint64_t len, uint64_t off,
                        bv_error **errp)
{
    int r = 0;
    while (len && r == 0) {
        uint64_t done = 0;
        r = write_step_locked(n, p, off, len, &done, errp);
        p += done;
        off += done;
        len -= done;
    }
    return r;
}

static int write_compressed(bv_node *n, const uint8_t *buf, uint64_t len, uint64_t off,
                            bv_error **errp);

int qcow2_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                 bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    if (flags & BV_WRITE_COMPRESSED)
        return write_compressed(n, buf, len, off, errp);
    pthread_mutex_lock(&s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0)
        r = write_locked(n, buf, len, off, errp);
    if (r == 0)
        r = end_write_locked(n, errp);
    pthread_mutex_unlock(&s->lock);
    return r;
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

static int put_compressed_locked(bv_node *n, const uint8_t *cdata, uint64_t clen, uint64_t off,
                                 bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t ci = off >> s->cluster_bits, hoff;
    struct qcow2_cache_entry *e;
    int r = qcow2_get_l2_locked(n, ci >> s->l2_bits, true, &e, errp);
    if (r < 0)
        return r;
    uint64_t l2i = ci & ((1ULL << s->l2_bits) - 1), old = l2_get(e, l2i);
    if (old & ~QCOW_OFLAG_ZERO)
        return bv_error_setf(errp, EIO, "compressed write to an allocated cluster (guest "
                             "offset %" PRIu64 ")", off);
    r = qcow2_alloc_bytes_locked(n, clen, &hoff, errp);
    if (r == 0) {
        bv_node_event(n->file, BV_EV_WRITE_COMPRESSED);
        r = bv_child_pwrite(n->file, cdata, clen, hoff, errp);
    }
    if (r == 0)
        r = qcow2_get_l2_locked(n, ci >> s->l2_bits, false, &e, errp);
    if (r < 0)
        return r;
    uint64_t nsec = ((hoff + clen - 1) >> 9) - (hoff >> 9);
    bv_node_event(n->file, BV_EV_L2_UPDATE_COMPRESSED);
    l2_set(e, l2i, QCOW_OFLAG_COMPRESSED | (nsec << s->csize_shift) | hoff);
    return 0;
}

static int write_compressed(bv_node *n, const uint8_t *buf, uint64_t len, uint64_t off,
                            bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size;
    if ((off & (cs - 1)) || ((len & (cs - 1)) && off + len != n->size))
        return bv_error_setf(errp, EINVAL, "compressed writes must cover whole clusters");
    uint8_t *in = malloc(cs), *out = malloc(cs);
    int r = in && out ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
    pthread_mutex_lock(&s->lock);
    if (r == 0)
        r = qcow2_prepare_write_locked(n, errp);
    for (uint64_t done = 0; done < len && r == 0; done += cs) {
        uint64_t chunk = len - done < cs ? len - done : cs;
        memcpy(in, buf + done, chunk);
        memset(in + chunk, 0, cs - chunk);
        uint64_t clen = deflate_cluster(in, cs, out, cs - 1);
        if (clen)
            r = put_compressed_locked(n, out, clen, off + done, errp);
        else
            r = write_locked(n, buf + done, chunk, off + done, errp);
    }
    pthread_mutex_unlock(&s->lock);
    free(in);
    free(out);
    return r;
}

/* ---------------- zeroing and discard ---------------- */

static int write_zero_bytes_locked(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t chunk = s->cluster_size < (1u << 20) ? (1u << 20) : s->cluster_size;
    uint8_t *z = calloc(1, chunk);
    int r = z ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
    while (len && r == 0) {
        uint64_t c = len < chunk ? len : chunk;
        r = write_locked(n, z, c, off, errp);
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

static int zero_locked(bv_node *n, uint64_t len, uint64_t off, bool unmap, bool discard,
                       bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size, per = 1ULL << s->l2_bits;
    uint64_t end = off + len;
    uint64_t a = (off + cs - 1) & ~(cs - 1);              /* first whole cluster */
    uint64_t b = end == n->size ? ((end + cs - 1) & ~(cs - 1)) : (end & ~(cs - 1));
    int r = 0;
    if (s->version < 3 && n->backing)
        return write_zero_bytes_locked(n, len, off, errp);
    if (a >= b)
        return write_zero_bytes_locked(n, len, off, errp);
    if (off < a)
        r = write_zero_bytes_locked(n, a - off, off, errp);
    for (uint64_t ci = a >> s->cluster_bits; r == 0 && ci < (b >> s->cluster_bits);) {
        uint64_t cnt = per - (ci & (per - 1));
        if (cnt > (b >> s->cluster_bits) - ci)
            cnt = (b >> s->cluster_bits) - ci;
        r = zero_table_locked(n, ci, cnt, unmap || s->version < 3, discard, errp);
        ci += cnt;
    }
    if (r == 0 && b < end)
        r = write_zero_bytes_locked(n, end - b, b, errp);
    if (r == 0)
        r = end_write_locked(n, errp);
    return r;
}

static int zero_entry(bv_node *n, uint64_t len, uint64_t off, bool unmap, bool discard,
                      bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    pthread_mutex_lock(&s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0)
        r = zero_locked(n, len, off, unmap, discard, errp);
    pthread_mutex_unlock(&s->lock);
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
