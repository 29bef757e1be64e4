/*
 * qcow2 internal snapshots, read side: the snapshot table that check needs
 * to account for (each snapshot's L1 table shares L2 tables and data
 * clusters with the active one, hence refcounts > 1) and that info lists.
 * Images with snapshots open read-only, so nothing here writes.  The
 * driver's `snapshots` op (qcow2_snapshot_list) hands the table to info.
 *
 * On-disk entry (big-endian, qemu-semantics / the qcow2 spec), 8-aligned:
 *   0 l1_table_offset u64   8 l1_size u32      12 id_str_size u16
 *  14 name_size u16        16 date_sec u32    20 date_nsec u32
 *  24 vm_clock_nsec u64    32 vm_state_size u32  36 extra_data_size u32
 *  40 extra data: vm_state_size_large u64, disk_size u64, icount u64 (each
 *     present when extra_data_size covers it), then id_str, then name
 *     (neither NUL-terminated), padded to a multiple of 8.
 * Bounds, as QEMU's: at most 65536 snapshots, a table of at most 64 MiB,
 * extra data of at most 1 KiB per entry; the table is read in one piece.
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/endian.h"

#define SN_FIXED        40u
#define SN_MAX_COUNT    65536u
#define SN_MAX_TABLE    (64u << 20)
#define SN_MAX_EXTRA    1024u

void qcow2_snapshots_free(struct qcow2_snapshot *sn, uint32_t count)
{
    for (uint32_t i = 0; sn && i < count; i++) {
        free(sn[i].id);
        free(sn[i].name);
    }
    free(sn);
}

static char *dup_field(const uint8_t *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

/* Parse the entry at *pos of the table (len bytes); advances *pos. */
static int parse_entry(const uint8_t *t, uint64_t len, uint64_t *pos, uint64_t table_off,
                       struct qcow2_snapshot *sn, bv_error **errp)
{
    const uint8_t *p = t + *pos;
    if (len - *pos < SN_FIXED)
        return qcow2_corrupt(errp, table_off + *pos, "qcow2: snapshot table is truncated");
    uint32_t idlen = ld_be16(p + 12), nlen = ld_be16(p + 14), xlen = ld_be32(p + 36);
    if (xlen > SN_MAX_EXTRA)
        return qcow2_corrupt(errp, table_off + *pos, "Too much extra metadata in snapshot table "
                             "entry");
    /* QEMU's table size leaves out the last entry's padding: the file may end there */
    uint64_t size = SN_FIXED + (uint64_t)xlen + idlen + nlen;
    if (size > len - *pos)
        return qcow2_corrupt(errp, table_off + *pos, "snapshot table is truncated");
    size = (size + 7) & ~7ULL;
    sn->l1_offset = ld_be64(p);
    sn->l1_size = ld_be32(p + 8);
    sn->date_sec = ld_be32(p + 16);
    sn->date_nsec = ld_be32(p + 20);
    sn->vm_clock_nsec = ld_be64(p + 24);
    sn->vm_state_size = ld_be32(p + 32);
    sn->icount = UINT64_MAX;
    if (xlen >= 8)
        sn->vm_state_size = ld_be64(p + SN_FIXED);
    if (xlen >= 24)
        sn->icount = ld_be64(p + SN_FIXED + 16);
    sn->id = dup_field(p + SN_FIXED + xlen, idlen);
    sn->name = dup_field(p + SN_FIXED + xlen + idlen, nlen);
    if (!sn->id || !sn->name)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    *pos = size < len - *pos ? *pos + size : len;
    return 0;
}

static int parse_table(const uint8_t *t, uint64_t len, uint64_t table_off, uint32_t count,
                       struct qcow2_snapshot *sn, uint64_t *used, bv_error **errp)
{
    uint64_t pos = 0;
    int r = 0;
    for (uint32_t i = 0; i < count && r == 0; i++)
        r = parse_entry(t, len, &pos, table_off, &sn[i], errp);
    *used = pos;
    return r;
}

int qcow2_snapshots_read_locked(bv_node *n, struct qcow2_snapshot **out, uint32_t *count,
                                uint64_t *table_bytes, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    uint64_t flen, len;
    uint8_t *t = NULL;
    struct qcow2_snapshot *sn = NULL;
    *out = NULL;
    *count = 0;
    *table_bytes = 0;
    if (s->nb_snapshots == 0)
        return 0;
    int r = bv_child_length(n->file, &flen, errp);
    if (r < 0)
        return r;
    if (s->nb_snapshots > SN_MAX_COUNT)
        return qcow2_corrupt(errp, 60, "Too many snapshots");
    if (s->snapshots_offset & 7 || s->snapshots_offset >= flen)
        return qcow2_corrupt(errp, 64, "Snapshot table offset invalid");
    len = flen - s->snapshots_offset < SN_MAX_TABLE ? flen - s->snapshots_offset : SN_MAX_TABLE;
    t = malloc(len);
    sn = calloc(s->nb_snapshots, sizeof(*sn));
    if (!t || !sn)
        r = bv_error_setf(errp, ENOMEM, "out of memory for the snapshot table");
    if (r == 0)
        r = bv_child_pread(n->file, t, len, s->snapshots_offset, errp);
    if (r == 0)
        r = parse_table(t, len, s->snapshots_offset, s->nb_snapshots, sn, table_bytes, errp);
    free(t);
    if (r < 0) {
        qcow2_snapshots_free(sn, s->nb_snapshots);
        return r;
    }
    *out = sn;
    *count = s->nb_snapshots;
    return 0;
}

/* Move the table's entries into the public list (the strings change owner). */
static void to_list(struct qcow2_snapshot *sn, uint32_t count, struct bv_snapshot_info *out)
{
    for (uint32_t i = 0; i < count; i++) {
        out[i] = (struct bv_snapshot_info){
            .id = sn[i].id, .name = sn[i].name, .vm_state_size = sn[i].vm_state_size,
            .date_sec = sn[i].date_sec, .date_nsec = sn[i].date_nsec,
            .vm_clock_ns = sn[i].vm_clock_nsec, .icount = sn[i].icount,
        };
        sn[i].id = sn[i].name = NULL;
    }
}

int qcow2_snapshot_list(bv_node *n, struct bv_snapshot_list *out, bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    struct qcow2_snapshot *sn = NULL;
    uint32_t count = 0;
    uint64_t bytes;
    bv_mutex_lock(&s->lock);
    int r = qcow2_snapshots_read_locked(n, &sn, &count, &bytes, errp);
    bv_mutex_unlock(&s->lock);
    if (r < 0 || count == 0)
        return r;
    out->sn = calloc(count, sizeof(*out->sn));
    if (!out->sn) {
        r = bv_error_setf(errp, ENOMEM, "out of memory for the snapshot list");
    } else {
        to_list(sn, count, out->sn);
        out->count = count;
    }
    qcow2_snapshots_free(sn, count);
    return r;
}
