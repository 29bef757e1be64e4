/*
 * qcow2 driver: open (header and extension parsing with every field
 * validated before it is used for an allocation or an offset), create,
 * header rewrites (rebase -u, feature bits, geometry changes), resize,
 * info, flush, and the driver table.
 *
 * Robustness: cluster 0 (at most 2 MiB) is the only thing read before
 * validation; L1 (<= 32 MiB) and reftable (<= 8 MiB) are read only after
 * their sizes and offsets passed the checks in validate_geometry().
 * Everything else is loaded lazily, one cluster at a time, and checked
 * where it is used (qcow2-cluster.c, qcow2-refcount.c).
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/checked.h"
#include "util/endian.h"

int qcow2_corrupt(bv_error **errp, uint64_t off, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return bv_error_set_kind(errp, EIO, BV_ERR_CORRUPT, off, "qcow2: %s", msg);
}

uint64_t qcow2_l1_entries_for(uint64_t size, uint32_t cluster_bits, uint32_t l2_bits)
{
    uint32_t shift = cluster_bits + l2_bits;    /* bytes mapped by one L2 table */
    return (size + (1ULL << shift) - 1) >> shift;
}

/* ---------------- header image (cluster 0) ---------------- */

struct qcow2_hdr_params {
    int version;
    uint32_t cluster_bits, l1_size, reftable_clusters, refcount_order, nb_snapshots;
    uint64_t size, l1_offset, reftable_offset, snapshots_offset;
    uint64_t incompat, compat, autoclear;
    uint8_t compression_type;
    const char *backing;
    enum bv_format backing_format;
    const uint8_t *exts;
    uint32_t exts_len;
};

static uint32_t put_ext(uint8_t *buf, uint32_t pos, uint32_t type, const void *data,
                        uint32_t len)
{
    st_be32(buf + pos, type);
    st_be32(buf + pos + 4, len);
    memcpy(buf + pos + 8, data, len);
    uint32_t padded = (len + 7) & ~7u;
    memset(buf + pos + 8 + len, 0, padded - len);
    return pos + 8 + padded;
}

/* Lay out cluster 0 into buf (cs bytes); *used = bytes to write. */
static int build_header(const struct qcow2_hdr_params *p, uint8_t *buf, uint32_t *used,
                        bv_error **errp)
{
    uint32_t cs = 1u << p->cluster_bits, hlen = p->version >= 3 ? QCOW2_V3_HEADER_LEN
                                                                 : QCOW2_V2_HEADER_LEN;
    const char *fmt = p->backing ? bv_format_name(p->backing_format) : NULL;
    uint32_t blen = p->backing ? (uint32_t)strlen(p->backing) : 0;
    uint64_t need = hlen + p->exts_len + 8 + blen + (fmt ? 8 + 16 : 0);
    if (need > cs)
        return bv_error_setf(errp, ENOSPC, "qcow2 header and backing name do not fit in "
                             "the first cluster");
    memset(buf, 0, cs);
    struct qcow2_header h = { 0 };
    h.magic = htobe32(QCOW2_MAGIC);
    h.version = htobe32((uint32_t)p->version);
    h.cluster_bits = htobe32(p->cluster_bits);
    h.size = htobe64(p->size);
    h.l1_size = htobe32(p->l1_size);
    h.l1_table_offset = htobe64(p->l1_offset);
    h.refcount_table_offset = htobe64(p->reftable_offset);
    h.refcount_table_clusters = htobe32(p->reftable_clusters);
    h.nb_snapshots = htobe32(p->nb_snapshots);
    h.snapshots_offset = htobe64(p->snapshots_offset);
    h.incompatible_features = htobe64(p->incompat);
    h.compatible_features = htobe64(p->compat);
    h.autoclear_features = htobe64(p->autoclear);
    h.refcount_order = htobe32(p->refcount_order);
    h.header_length = htobe32(hlen);
    h.compression_type = p->compression_type;
    memcpy(buf, &h, hlen);
    uint32_t pos = hlen;
    if (fmt)
        pos = put_ext(buf, pos, QCOW2_EXT_BACKING_FORMAT, fmt, (uint32_t)strlen(fmt));
    if (p->exts_len)
        memcpy(buf + pos, p->exts, p->exts_len);
    pos += p->exts_len;
    pos += 8;                                  /* end marker */
    if (p->backing) {
        memcpy(buf + pos, p->backing, blen);
        st_be64(buf + 8, pos);
        st_be32(buf + 16, blen);
        pos += blen;
    }
    *used = pos;
    return 0;
}

static void params_from_state(bv_node *n, struct qcow2_hdr_params *p)
{
    struct qcow2_state *s = q_state(n);
    *p = (struct qcow2_hdr_params){
        .version = s->version, .cluster_bits = s->cluster_bits, .l1_size = s->l1_size,
        .reftable_clusters = s->reftable_clusters, .refcount_order = s->refcount_order,
        .nb_snapshots = s->nb_snapshots, .size = n->size, .l1_offset = s->l1_offset,
        .reftable_offset = s->reftable_offset, .snapshots_offset = s->snapshots_offset,
        .incompat = s->incompat, .compat = s->compat, .autoclear = s->autoclear,
        .compression_type = s->compression_type, .backing = n->backing_name, .backing_format = n->backing_format,
        .exts = s->exts, .exts_len = s->exts_len,
    };
}

/* In-place update of the geometry and feature fields (one sector). */
int qcow2_write_header_fields_locked(bv_node *n, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint8_t b[96];
    int r = bv_child_pread(n->file, b, sizeof(b), 0, errp);
    if (r < 0)
        return r;
    st_be64(b + QH_SIZE_OFF, n->size);
    st_be32(b + QH_L1_SIZE_OFF, s->l1_size);
    st_be64(b + QH_L1_OFFSET_OFF, s->l1_offset);
    st_be64(b + QH_REFTABLE_OFF, s->reftable_offset);
    st_be32(b + QH_REFTABLE_OFF + 8, s->reftable_clusters);
    uint32_t len = QCOW2_V2_HEADER_LEN;
    if (s->version >= 3) {
        st_be64(b + QH_INCOMPAT_OFF, s->incompat);
        st_be64(b + QH_INCOMPAT_OFF + 8, s->compat);
        st_be64(b + QH_AUTOCLEAR_OFF, s->autoclear);
        len = sizeof(b);
    }
    return bv_child_pwrite(n->file, b, len, 0, errp);
}

/* Before the first write: clear autoclear bits we do not maintain. */
int qcow2_prepare_write_locked(bv_node *n, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    if (s->failed)
        return bv_error_setf(errp, EIO, "qcow2: image failed earlier; reopen it");
    if (s->header_writable)
        return 0;
    int r = 0;
    if (s->autoclear) {
        s->autoclear = 0;
        r = qcow2_write_header_fields_locked(n, errp);
        if (r == 0)
            r = bv_child_flush(n->file, errp);
    }
    if (r < 0)
        s->failed = true;
    else
        s->header_writable = true;
    return r;
}

int qcow2_mark_corrupt_locked(bv_node *n, uint64_t off, const char *what, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    s->incompat |= QCOW2_INCOMPAT_CORRUPT;
    if (s->version >= 3)
        qcow2_write_header_fields_locked(n, NULL);
    s->failed = true;
    return qcow2_corrupt(errp, off, "Marking image as corrupt: %s", what);
}

/* ---------------- open ---------------- */

static int validate_basic(const struct qcow2_header *h, uint64_t flen, bv_error **errp)
{
    if (flen < QCOW2_V2_HEADER_LEN || be32toh(h->magic) != QCOW2_MAGIC)
        return bv_error_setf(errp, EINVAL, "Image is not in qcow2 format (truncated or "
                             "bad magic)");
    uint32_t v = be32toh(h->version), cb = be32toh(h->cluster_bits);
    if (v != 2 && v != 3)
        return bv_error_setf(errp, ENOTSUP, "Unsupported qcow2 version %u", v);
    if (cb < 9 || cb > 21)
        return bv_error_setf(errp, EINVAL, "Unsupported cluster size: 2^%u", cb);
    if (v == 3) {
        uint32_t hl = be32toh(h->header_length);
        if (hl < 104 || (hl & 7) || hl > (1u << cb))
            return bv_error_setf(errp, EINVAL, "qcow2 header length %u is invalid", hl);
        if (flen < 104)
            return bv_error_setf(errp, EINVAL, "qcow2 header is truncated");
    }
    return 0;
}

static int check_features(bv_node *n, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t known = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DATA_FILE |
                     QCOW2_INCOMPAT_COMPRESS | QCOW2_INCOMPAT_EXTL2;
    if (s->incompat & ~known)
        return bv_error_setf(errp, ENOTSUP, "Unsupported qcow2 feature(s): Unknown "
                             "incompatible feature: %" PRIx64, s->incompat & ~known);
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
        return bv_error_setf(errp, ENOTSUP, "qcow2: external data files not supported");
    if ((s->incompat & QCOW2_INCOMPAT_EXTL2) && s->cluster_bits < 14)
        return bv_error_setf(errp, EINVAL, "qcow2: extended L2 entries need a cluster size "
                             "of at least 16 KiB");
    if ((s->autoclear & 2) && !(s->incompat & QCOW2_INCOMPAT_DATA_FILE))
        s->autoclear &= ~2ULL;
    if (n->read_only)
        return 0;
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT)
        return bv_error_setf(errp, EACCES, "qcow2: Image is corrupt; cannot be opened "
                             "read/write");
    if (s->incompat & QCOW2_INCOMPAT_DIRTY)
        return bv_error_setf(errp, EINVAL, "qcow2: image is dirty, run check -r");
    if (s->nb_snapshots)
        return bv_error_setf(errp, ENOTSUP, "qcow2: images with internal snapshots can "
                             "only be opened read-only");
    return 0;
}

static void load_fields(bv_node *n, const struct qcow2_header *h)
{
    struct qcow2_state *s = q_state(n);
    s->version = (int)be32toh(h->version);
    s->cluster_bits = be32toh(h->cluster_bits);
    s->cluster_size = 1u << s->cluster_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->l2e_shift = 3;
    s->sc_bits = s->cluster_bits;
    n->size = be64toh(h->size);
    s->l1_size = be32toh(h->l1_size);
    s->l1_offset = be64toh(h->l1_table_offset);
    s->reftable_offset = be64toh(h->refcount_table_offset);
    s->reftable_clusters = be32toh(h->refcount_table_clusters);
    s->nb_snapshots = be32toh(h->nb_snapshots);
    s->snapshots_offset = be64toh(h->snapshots_offset);
    s->header_length = QCOW2_V2_HEADER_LEN;
    s->refcount_order = 4;
    if (s->version >= 3) {
        s->incompat = be64toh(h->incompatible_features);
        s->compat = be64toh(h->compatible_features);
        s->autoclear = be64toh(h->autoclear_features);
        s->refcount_order = be32toh(h->refcount_order);
        s->header_length = be32toh(h->header_length);
        s->extl2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    }
    if (s->extl2) {
        s->l2_bits = s->cluster_bits - 4;
        s->l2e_shift = 4;
        s->sc_bits = s->cluster_bits - 5;
    }
}

static int validate_geometry(bv_node *n, const struct qcow2_header *h, uint64_t flen,
                             bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t cs = s->cluster_size;
    if (be32toh(h->crypt_method))
        return bv_error_setf(errp, ENOTSUP, "qcow2: encrypted images are not supported");
    if (n->size > BV_MAX_IMAGE_SIZE)
        return bv_error_setf(errp, EINVAL, "qcow2: image size %" PRIu64 " is too large",
                             n->size);
    if (s->refcount_order > 6)
        return bv_error_setf(errp, EINVAL, "qcow2: refcount width must be a power of two "
                             "and may not exceed 64 bits");
    s->compression_type = s->header_length > 104 ? h->compression_type : QCOW2_COMPRESS_ZLIB;
    if (s->compression_type > QCOW2_COMPRESS_ZSTD)
        return bv_error_setf(errp, ENOTSUP, "qcow2: unknown compression type %u",
                             h->compression_type);
    if ((s->compression_type != QCOW2_COMPRESS_ZLIB) != !!(s->incompat & QCOW2_INCOMPAT_COMPRESS))
        return bv_error_setf(errp, EINVAL, "qcow2: compression type %u does not match the "
                             "compression type incompatible feature bit",
                             s->compression_type);
    if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return bv_error_setf(errp, EFBIG, "qcow2: Active L1 table too large");
    if (s->l1_size < qcow2_l1_entries_for(n->size, s->cluster_bits, s->l2_bits))
        return bv_error_setf(errp, EINVAL, "qcow2: L1 table is too small");
    if (s->l1_size && ((s->l1_offset & (cs - 1)) || s->l1_offset == 0 || s->l1_offset > flen))
        return bv_error_setf(errp, EINVAL, "qcow2: invalid L1 table offset 0x%" PRIx64,
                             s->l1_offset);
    if (!s->reftable_clusters || (uint64_t)s->reftable_clusters * cs > QCOW2_MAX_REFTABLE_BYTES)
        return bv_error_setf(errp, EINVAL, "qcow2: Reference count table too large or empty");
    if ((s->reftable_offset & (cs - 1)) || !s->reftable_offset || s->reftable_offset >= flen)
        return bv_error_setf(errp, EINVAL, "qcow2: invalid reference count table offset "
                             "0x%" PRIx64, s->reftable_offset);
    if (s->nb_snapshots && (s->snapshots_offset & (cs - 1)))
        return bv_error_setf(errp, EINVAL, "qcow2: invalid snapshot table offset");
    return 0;
}

static int keep_ext(struct qcow2_state *s, const uint8_t *raw, uint32_t total, bv_error **errp)
{
    uint8_t *p = realloc(s->exts, s->exts_len + total);
    if (!p)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    memcpy(p + s->exts_len, raw, total);
    s->exts = p;
    s->exts_len += total;
    return 0;
}

static int parse_extensions(bv_node *n, const uint8_t *c0, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint32_t pos = s->header_length, cs = s->cluster_size;
    int r = 0;
    while (r == 0 && pos + 8 <= cs) {
        uint32_t type = ld_be32(c0 + pos), len = ld_be32(c0 + pos + 4);
        if (type == QCOW2_EXT_END)
            break;
        uint32_t padded = (len + 7) & ~7u;
        if (len > cs || pos + 8 + padded > cs)
            return bv_error_setf(errp, EINVAL, "qcow2: header extension 0x%x is too long", type);
        if (type == QCOW2_EXT_CRYPTO || type == QCOW2_EXT_DATA_FILE)
            return bv_error_setf(errp, ENOTSUP, "qcow2: %s not supported",
                                 type == QCOW2_EXT_CRYPTO ? "encryption" : "external data files");
        if (type == QCOW2_EXT_BACKING_FORMAT) {
            char name[32] = "";
            memcpy(name, c0 + pos + 8, len < sizeof(name) - 1 ? len : sizeof(name) - 1);
            n->backing_format = bv_format_parse(name);
        } else {
            r = keep_ext(s, c0 + pos, 8 + padded, errp);
        }
        pos += 8 + padded;
    }
    return r;
}

static int parse_backing_name(bv_node *n, const struct qcow2_header *h, const uint8_t *c0,
                              bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint64_t off = be64toh(h->backing_file_offset);
    uint32_t len = be32toh(h->backing_file_size);
    if (!off)
        return 0;
    if (len == 0 || len > 1023 || off > s->cluster_size || off + len > s->cluster_size)
        return bv_error_setf(errp, EINVAL, "qcow2: invalid backing file name (offset %" PRIu64
                             ", length %u)", off, len);
    n->backing_name = strndup((const char *)c0 + off, len);
    if (!n->backing_name)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    if (strlen(n->backing_name) != len)
        return bv_error_setf(errp, EINVAL, "qcow2: backing file name contains a NUL byte");
    return 0;
}

static int read_table(bv_node *n, uint64_t off, uint64_t entries, uint64_t **out,
                      bv_error **errp)
{
    uint64_t *t = malloc(entries ? entries * 8 : 8);
    if (!t)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int r = bv_child_pread(n->file, t, entries * 8, off, errp);
    for (uint64_t i = 0; r == 0 && i < entries; i++)
        t[i] = be64toh(t[i]);
    if (r < 0)
        free(t);
    else
        *out = t;
    return r;
}

static int init_tables(bv_node *n, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    uint32_t cs = s->cluster_size;
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;
    s->refcount_max = s->refcount_order == 6 ? UINT64_MAX : (1ULL << (1u << s->refcount_order)) - 1;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ULL << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ULL << s->csize_shift) - 1;
    s->reftable_entries = (uint64_t)s->reftable_clusters * cs / 8;
    int r = read_table(n, s->l1_offset, s->l1_size, &s->l1, errp);
    if (r == 0)
        r = read_table(n, s->reftable_offset, s->reftable_entries, &s->reftable, errp);
    unsigned l2cap = (16u << 20) / cs, rbcap = (4u << 20) / cs;
    if (r == 0)
        r = qcow2_cache_init(&s->l2, true, l2cap < 16 ? 16 : l2cap, errp);
    if (r == 0)
        r = qcow2_cache_init(&s->rb, false, rbcap < 8 ? 8 : rbcap, errp);
    return r;
}

static int qcow2_open(bv_node *n, int fd, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    struct qcow2_header h;
    uint8_t *c0 = NULL;
    uint64_t flen;
    bv_mutex_init(&s->lock);
    pthread_cond_init(&s->cond, NULL);
    int r = bv_child_length(n->file, &flen, errp);
    if (r == 0)
        r = bv_child_pread(n->file, &h, sizeof(h), 0, errp);
    if (r == 0)
        r = validate_basic(&h, flen, errp);
    if (r < 0)
        return r;
    load_fields(n, &h);
    if (s->header_length < sizeof(h))
        memset((uint8_t *)&h + s->header_length, 0, sizeof(h) - s->header_length);
    r = check_features(n, errp);
    if (r == 0)
        r = validate_geometry(n, &h, flen, errp);
    if (r == 0 && !(c0 = malloc(s->cluster_size)))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r == 0)
        r = bv_child_pread(n->file, c0, s->cluster_size, 0, errp);
    if (r == 0)
        r = parse_extensions(n, c0, errp);
    if (r == 0)
        r = parse_backing_name(n, &h, c0, errp);
    if (r == 0)
        r = init_tables(n, errp);
    free(c0);
    return r;
}

static void qcow2_close(bv_node *n)
{
    struct qcow2_state *s = q_state(n);
    qcow2_cache_destroy(&s->l2);
    qcow2_cache_destroy(&s->rb);
    free(s->l1);
    free(s->reftable);
    free(s->exts);
    free(s->frees);
    pthread_cond_destroy(&s->cond);
    bv_mutex_destroy(&s->lock);
}

static int qcow2_flush_to_os(bv_node *n, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    bv_mutex_lock(&s->lock);
    int r = qcow2_flush_metadata_locked(n, errp);
    bv_mutex_unlock(&s->lock);
    return r;
}

static uint32_t qcow2_cluster_size(const bv_node *n)
{
    return ((const struct qcow2_state *)n->opaque)->cluster_size;
}

static int qcow2_info(bv_node *n, struct bv_image_info *info, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    bv_mutex_lock(&s->lock);
    info->cluster_size = s->cluster_size;
    info->qcow2_version = s->version;
    info->dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
    info->corrupt = s->incompat & QCOW2_INCOMPAT_CORRUPT;
    info->incompatible_features = s->incompat;
    info->compatible_features = s->compat;
    info->autoclear_features = s->autoclear;
    info->refcount_bits = 1 << s->refcount_order;
    info->compression_zstd = s->compression_type == QCOW2_COMPRESS_ZSTD;
    info->extended_l2 = s->extl2;
    bv_mutex_unlock(&s->lock);
    return 0;
}

/* ---------------- create and rebase -u ---------------- */

/* Cluster counts of a fresh image: header, reftable T, refblocks B, L1 L. */
static void create_layout(uint32_t cb, uint64_t l1_entries, uint64_t *T, uint64_t *B,
                          uint64_t *L)
{
    uint64_t cs = 1ULL << cb, rbe = cs * 8 / 16;
    *L = (l1_entries * 8 + cs - 1) / cs;
    *T = 1;
    *B = 1;
    for (int i = 0; i < 16; i++) {
        uint64_t total = 1 + *T + *B + *L;
        uint64_t b = (total + rbe - 1) / rbe, t = (b * 8 + cs - 1) / cs;
        if (b == *B && t == *T)
            break;
        *B = b;
        *T = t;
    }
}

static int write_fd(int fd, const void *buf, size_t len, uint64_t off, bv_error **errp)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return bv_error_setf(errp, w < 0 ? errno : EIO, "write failed: %s",
                                 strerror(w < 0 ? errno : EIO));
        p += w;
        off += (uint64_t)w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reftable then refblocks (every cluster of the layout counted once). */
static int write_refcounts(int fd, uint32_t cb, uint64_t T, uint64_t B, uint64_t total,
                           bv_error **errp)
{
    uint64_t cs = 1ULL << cb;
    uint8_t *t = calloc(T, cs), *b = calloc(B, cs);
    int r = t && b ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
    for (uint64_t i = 0; r == 0 && i < B; i++)
        st_be64(t + 8 * i, (1 + T + i) * cs);
    for (uint64_t i = 0; r == 0 && i < total; i++)
        st_be16(b + 2 * i, 1);
    if (r == 0)
        r = write_fd(fd, t, T * cs, cs, errp);
    if (r == 0)
        r = write_fd(fd, b, B * cs, (1 + T) * cs, errp);
    free(t);
    free(b);
    return r;
}

/* The v3-only features, refused where qemu-img refuses them (same words). */
static int check_create_features(const struct bv_create_opts *o, uint32_t cs, bv_error **errp)
{
    if (o->compat_v2 && o->extended_l2)
        return bv_error_setf(errp, EINVAL, "Extended L2 entries are only supported with "
                             "compatibility level 1.1 and above (use version=v3 or greater)");
    if (o->compat_v2 && o->compression_zstd)
        return bv_error_setf(errp, EINVAL, "Non-zlib compression type is only supported with "
                             "compatibility level 1.1 and above (use version=v3 or greater)");
    if (o->extended_l2 && cs < QCOW2_EXTL2_MIN_CLUSTER)
        return bv_error_setf(errp, EINVAL, "Extended L2 entries are only supported with "
                             "cluster sizes of at least %u bytes", QCOW2_EXTL2_MIN_CLUSTER);
    return 0;
}

int bv_qcow2_create(int fd, const struct bv_create_opts *o, uint64_t size, bv_error **errp)
{
    uint32_t cs = o->cluster_size ? o->cluster_size : BV_DEFAULT_CLUSTER;
    uint32_t cb = (uint32_t)__builtin_ctz(cs);
    uint64_t l1 = qcow2_l1_entries_for(size, cb, cb - (o->extended_l2 ? 4 : 3)), T, B, L;
    int r = check_create_features(o, cs, errp);
    if (r < 0)
        return r;
    if (l1 * 8 > QCOW2_MAX_L1_BYTES)
        return bv_error_setf(errp, EFBIG, "qcow2: image too large for cluster size %u", cs);
    create_layout(cb, l1, &T, &B, &L);
    struct qcow2_hdr_params p = {
        .version = o->compat_v2 ? 2 : 3, .cluster_bits = cb, .l1_size = (uint32_t)l1,
        .reftable_clusters = (uint32_t)T, .refcount_order = 4, .size = size,
        .l1_offset = (1 + T + B) * cs, .reftable_offset = cs,
        .backing = o->backing, .backing_format = o->backing_format,
        .incompat = (o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0) |
                    (o->compression_zstd ? QCOW2_INCOMPAT_COMPRESS : 0),
        .compression_type = o->compression_zstd ? QCOW2_COMPRESS_ZSTD : QCOW2_COMPRESS_ZLIB,
    };
    uint8_t *c0 = malloc(cs);
    uint32_t used = 0;
    r = c0 ? build_header(&p, c0, &used, errp) : bv_error_setf(errp, ENOMEM, "out of memory");
    if (r == 0)
        r = write_fd(fd, c0, cs, 0, errp);
    if (r == 0)
        r = write_refcounts(fd, cb, T, B, 1 + T + B + L, errp);
    if (r == 0 && ftruncate(fd, (off_t)(p.l1_offset + (l1 ? l1 * 8 : 0))) < 0)
        r = bv_error_setf(errp, errno, "truncate failed: %s", strerror(errno));
    free(c0);
    return r;
}

int bv_qcow2_set_backing(bv_node *n, const char *backing, enum bv_format fmt, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    struct qcow2_hdr_params p;
    uint8_t *c0 = malloc(s->cluster_size);
    uint32_t used = 0;
    if (!c0)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    bv_mutex_lock(&s->lock);
    int r = qcow2_prepare_write_locked(n, errp);
    if (r == 0) {
        params_from_state(n, &p);
        p.backing = backing;
        p.backing_format = fmt;
        r = build_header(&p, c0, &used, errp);
    }
    if (r == 0)
        r = bv_child_pwrite(n->file, c0, used, 0, errp);
    if (r == 0)
        r = bv_child_flush(n->file, errp);
    if (r == 0) {
        free(n->backing_name);
        n->backing_name = backing ? strdup(backing) : NULL;
        n->backing_format = fmt;
    }
    bv_mutex_unlock(&s->lock);
    free(c0);
    return r;
}

const struct bv_driver bv_drv_qcow2 = {
    .name = "qcow2",
    .kind = BV_DRV_FORMAT,
    .format = BV_FMT_QCOW2,
    .instance_size = sizeof(struct qcow2_state),
    .open = qcow2_open,
    .close = qcow2_close,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .write_zeroes = qcow2_write_zeroes,
    .discard = qcow2_discard,
    .flush_to_os = qcow2_flush_to_os,
    .truncate = qcow2_truncate,
    .block_status = qcow2_block_status,
    .info = qcow2_info,
    .snapshots = qcow2_snapshot_list,
    .check = qcow2_check,
    .cluster_size = qcow2_cluster_size,
};
