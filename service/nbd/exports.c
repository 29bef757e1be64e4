/*
 * What an NBD export is: a drive under its id (read-write, every request
 * through the drive's write path: bitmaps, copy-before-write, blkdebug), or
 * a complete backup point under "backup/<bid>" (its link opened read-only
 * with the chain below it, owned by the connection).  Meta contexts read
 * the same objects: base:allocation walks the node chain (a layer that does
 * not decide a range defers to its backing file; past the bottom it is a
 * hole that reads zeros), qemu:dirty-bitmap:<name> reads the drive's bitmap
 * by name at each request (a bitmap removed meanwhile is an error, never a
 * dangling pointer held across requests).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "bv/drive.h"
#include "nbd/nbd-int.h"
#include "nbd/proto.h"
#include "runtime/backups.h"
#include "runtime/registry.h"

#define BACKUP_PREFIX "backup/"
#define BITMAP_PREFIX "qemu:dirty-bitmap:"

static int open_backup(struct bv_app *app, const char *bid, struct nbd_export *x,
                       bv_error **errp)
{
    struct bv_backup_rec rec;
    bv_error *e = NULL;
    if (bv_backups_get(app, bid, &rec, &e) < 0 || strcmp(rec.status, "complete") != 0) {
        bv_error_free(e);
        return bv_error_setf(errp, ENOENT, "no complete backup '%s'", bid);
    }
    int r = bv_backups_open_point(app, bid, &x->node, errp);
    if (r < 0)
        return r;
    x->read_only = true;
    x->size = bv_node_size(x->node);
    return 0;
}

int nbd_export_open(struct bv_app *app, const char *name, struct nbd_export *x,
                    bv_error **errp)
{
    memset(x, 0, sizeof(*x));
    if (strlen(name) > NBD_NAME_MAX)
        return bv_error_setf(errp, ENOENT, "export name too long");
    strcpy(x->name, name);
    if (strncmp(name, BACKUP_PREFIX, strlen(BACKUP_PREFIX)) == 0)
        return open_backup(app, name + strlen(BACKUP_PREFIX), x, errp);
    x->entry = name[0] ? bv_registry_get(app, name) : NULL;
    if (!x->entry)
        return bv_error_setf(errp, ENOENT, "no export '%s'", name);
    x->size = bv_drive_size(x->entry->drive);
    return 0;
}

void nbd_export_close(struct bv_app *app, struct nbd_export *x)
{
    if (x->entry)
        bv_registry_put(app, x->entry);
    if (x->node)
        bv_node_close(x->node, NULL);
    x->entry = NULL;
    x->node = NULL;
}

int nbd_export_list(struct bv_app *app, void (*cb)(void *opaque, const char *name, bool ro),
                    void *opaque)
{
    struct bv_drive_entry **all = NULL;
    size_t n = bv_registry_all(app, &all);
    for (size_t i = 0; i < n; i++) {
        cb(opaque, all[i]->id, false);
        bv_registry_put(app, all[i]);
    }
    free(all);
    struct bv_backup_rec *b = NULL;
    int nb = bv_backups_list(app, NULL, &b);
    for (int i = 0; i < nb; i++) {
        if (strcmp(b[i].status, "complete") != 0)
            continue;
        char name[BV_BACKUP_ID_MAX + sizeof(BACKUP_PREFIX)];
        snprintf(name, sizeof(name), BACKUP_PREFIX "%s", b[i].id);
        cb(opaque, name, true);
    }
    free(b);
    return nb < 0 ? nb : 0;
}

/* ---- data path ---- */

int nbd_export_pread(struct nbd_export *x, void *buf, uint32_t len, uint64_t off)
{
    if (x->entry)
        return bv_drive_pread(x->entry->drive, buf, len, off, NULL);
    return bv_node_pread(x->node, buf, len, off, NULL);
}

int nbd_export_pwrite(struct nbd_export *x, const void *buf, uint32_t len, uint64_t off,
                      bool fua)
{
    if (x->read_only)
        return -EPERM;
    return bv_drive_pwrite(x->entry->drive, buf, len, off, fua ? BV_WRITE_FUA : 0, NULL);
}

int nbd_export_zero(struct nbd_export *x, uint32_t len, uint64_t off, bool may_trim, bool fua)
{
    if (x->read_only)
        return -EPERM;
    int r = bv_drive_write_zeroes(x->entry->drive, len, off, may_trim ? BV_ZERO_MAY_UNMAP : 0,
                                  NULL);
    return r == 0 && fua ? bv_drive_flush(x->entry->drive, NULL) : r;
}

int nbd_export_trim(struct nbd_export *x, uint32_t len, uint64_t off, bool fua)
{
    if (x->read_only)
        return -EPERM;
    int r = bv_drive_discard(x->entry->drive, len, off, NULL);
    return r == 0 && fua ? bv_drive_flush(x->entry->drive, NULL) : r;
}

int nbd_export_flush(struct nbd_export *x)
{
    if (x->read_only)
        return 0;
    return bv_drive_flush(x->entry->drive, NULL);
}

/* ---- meta contexts ---- */

bool nbd_ctx_resolve(struct nbd_export *x, const char *query, struct nbd_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    if (strcmp(query, "base:allocation") == 0) {
        ctx->kind = NBD_CTX_ALLOCATION;
        return true;
    }
    if (!x->entry || strncmp(query, BITMAP_PREFIX, strlen(BITMAP_PREFIX)) != 0)
        return false;
    const char *bm = query + strlen(BITMAP_PREFIX);
    if (!bm[0] || strlen(bm) >= sizeof(ctx->bitmap) ||
        !bv_bitmap_find(bv_drive_bitmaps(x->entry->drive), bm))
        return false;
    ctx->kind = NBD_CTX_BITMAP;
    strcpy(ctx->bitmap, bm);
    return true;
}

static bool selects(const char *query, const char *name)
{
    if (!query[0])
        return true;
    size_t q = strlen(query);
    if (query[q - 1] == ':')            /* a namespace (or qemu:dirty-bitmap:) */
        return strncmp(query, name, q) == 0;
    return strcmp(query, name) == 0;
}

void nbd_ctx_list(struct nbd_export *x, const char *query,
                  void (*cb)(void *opaque, const char *name), void *opaque)
{
    if (selects(query, "base:allocation"))
        cb(opaque, "base:allocation");
    if (!x->entry)
        return;
    struct bv_bitmap_set *set = bv_drive_bitmaps(x->entry->drive);
    size_t n = bv_bitmap_list(set, NULL, 0);
    struct bv_bitmap_info *info = n ? calloc(n, sizeof(*info)) : NULL;
    if (!info)
        return;
    n = bv_bitmap_list(set, info, n);
    for (size_t i = 0; i < n; i++) {
        char name[sizeof(BITMAP_PREFIX) + sizeof(info[i].name)];
        snprintf(name, sizeof(name), BITMAP_PREFIX "%s", info[i].name);
        if (selects(query, name))
            cb(opaque, name);
    }
    free(info);
}

/* One run of base:allocation at off (len > 0, off < size): the first layer
 * of the chain that decides it, or a hole past the bottom. */
static int alloc_run(bv_node *n, uint64_t off, uint64_t len, uint64_t *pnum, uint32_t *flags)
{
    for (unsigned depth = 0; depth < 1024; depth++) {
        if (!n || off >= bv_node_size(n)) {
            *pnum = len;
            *flags = NBD_STATE_HOLE | NBD_STATE_ZERO;
            return 0;
        }
        uint64_t l = len < bv_node_size(n) - off ? len : bv_node_size(n) - off;
        struct bv_block_status bs;
        int r = bv_node_block_status(n, off, l, &bs, NULL);
        if (r < 0)
            return r;
        if (bs.pnum == 0 || bs.pnum > l)
            return -EIO;
        bv_node *back = bv_node_backing(n);
        if ((bs.flags & BV_BS_ALLOCATED) || (bs.flags & (BV_BS_DATA | BV_BS_ZERO)) || !back) {
            *pnum = bs.pnum;
            *flags = (bs.flags & BV_BS_DATA) ? 0 : NBD_STATE_HOLE;
            if ((bs.flags & BV_BS_ZERO) || (!(bs.flags & BV_BS_DATA) && !back))
                *flags |= NBD_STATE_ZERO;
            return 0;
        }
        len = bs.pnum;
        n = back;
    }
    return -EIO;
}

static bv_node *export_node(struct nbd_export *x)
{
    return x->entry ? bv_drive_node(x->entry->drive) : x->node;
}

static int alloc_extents(struct nbd_export *x, uint64_t off, uint32_t len,
                         struct nbd_block_descriptor_h *out, uint32_t max)
{
    uint32_t n = 0;
    uint64_t end = off + len;
    while (off < end && n < max) {
        uint64_t pnum;
        uint32_t flags;
        int r = alloc_run(export_node(x), off, end - off, &pnum, &flags);
        if (r < 0)
            return n ? (int)n : r;
        if (n && out[n - 1].flags == flags) {
            out[n - 1].length += (uint32_t)pnum;
        } else {
            out[n].length = (uint32_t)pnum;
            out[n++].flags = flags;
        }
        off += pnum;
    }
    return (int)n;
}

static void add_run(struct nbd_block_descriptor_h *out, uint32_t *n, uint64_t len,
                    uint32_t flags)
{
    if (*n && out[*n - 1].flags == flags) {
        out[*n - 1].length += (uint32_t)len;
    } else {
        out[*n].length = (uint32_t)len;
        out[(*n)++].flags = flags;
    }
}

static int bitmap_extents(struct nbd_export *x, const char *name, uint64_t off, uint32_t len,
                          struct nbd_block_descriptor_h *out, uint32_t max)
{
    if (!x->entry)
        return -EINVAL;
    struct bv_bitmap_set *set = bv_drive_bitmaps(x->entry->drive);
    struct bv_dirty_bitmap *bm = bv_bitmap_find(set, name);
    if (!bm)
        return -EINVAL;
    uint32_t n = 0;
    uint64_t end = off + len;
    while (off < end && n + 1 < max) {
        uint64_t roff, rlen;
        if (!bv_bitmap_next_dirty(set, bm, off, end, &roff, &rlen) || roff >= end) {
            add_run(out, &n, end - off, 0);
            off = end;
            break;
        }
        if (roff > off)
            add_run(out, &n, roff - off, 0);
        if (rlen > end - roff)
            rlen = end - roff;
        add_run(out, &n, rlen, NBD_STATE_DIRTY);
        off = roff + rlen;
    }
    return (int)n;
}

int nbd_ctx_extents(struct nbd_export *x, const struct nbd_ctx *ctx, uint64_t off,
                    uint32_t len, struct nbd_block_descriptor_h *out, uint32_t max)
{
    if (ctx->kind == NBD_CTX_ALLOCATION)
        return alloc_extents(x, off, len, out, max);
    return bitmap_extents(x, ctx->bitmap, off, len, out, max);
}
