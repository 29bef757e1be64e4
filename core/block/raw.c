/*
 * Format driver "raw": the virtual disk is the file, byte for byte.  Its
 * only work is to signal the blkdebug events a guest request implies
 * (read_aio on every read, write_aio on every write) and to keep the virtual
 * size, fixed at open and changed only by truncate.
 */
#include "block/driver.h"

#include <errno.h>

static int raw_open(bv_node *n, int fd, bv_error **errp)
{
    return bv_child_length(n->file, &n->size, errp);
}

static int raw_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    bv_node_event(n->file, BV_EV_READ_AIO);
    return bv_child_pread(n->file, buf, len, off, errp);
}

static int raw_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                      bv_error **errp)
{
    bv_node_event(n->file, BV_EV_WRITE_AIO);
    return bv_child_pwrite(n->file, buf, len, off, errp);
}

static int raw_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    bv_node_event(n->file, BV_EV_PWRITEV_ZERO);
    return bv_child_write_zeroes(n->file, len, off, flags, errp);
}

/* Discard must read back as zeros (the contract): zero, letting the file punch. */
static int raw_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_child_write_zeroes(n->file, len, off, BV_ZERO_MAY_UNMAP, errp);
}

static int raw_truncate(bv_node *n, uint64_t size, bool allow_shrink, bv_error **errp)
{
    int r = bv_child_truncate(n->file, size, errp);
    if (r >= 0)
        n->size = size;
    return r;
}

static int raw_block_status(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                            bv_error **errp)
{
    int r = bv_child_block_status(n->file, off, len, bs, errp);
    if (r < 0)
        return r;
    bs->flags |= BV_BS_ALLOCATED;
    bs->host_offset = (bs->flags & BV_BS_DATA) ? off : 0;
    return 0;
}

const struct bv_driver bv_drv_raw = {
    .name = "raw",
    .kind = BV_DRV_FORMAT,
    .format = BV_FMT_RAW,
    .open = raw_open,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .write_zeroes = raw_write_zeroes,
    .discard = raw_discard,
    .truncate = raw_truncate,
    .block_status = raw_block_status,
};
