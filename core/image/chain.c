/*
 * chain: block status of a whole backing chain, and a fast zero test.
 * See image-int.h for the rules.  A chain deeper than BV_MAX_CHAIN_DEPTH is
 * refused here too, so a node graph built by mistake cannot loop us forever.
 */
#include "image/image-int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

static void set_zero_below(struct chain_status *cs, bv_node *bottom, int depth, uint64_t len)
{
    cs->pnum = len;
    cs->depth = depth;
    cs->present = false;
    cs->data = false;
    cs->zero = true;
    cs->compressed = false;
    cs->offset = UINT64_MAX;
    cs->layer = bottom;
}

static void set_decided(struct chain_status *cs, bv_node *n, int depth,
                        const struct bv_block_status *bs)
{
    cs->pnum = bs->pnum;
    cs->depth = depth;
    cs->present = true;
    cs->zero = (bs->flags & BV_BS_ZERO) != 0;
    cs->data = !cs->zero && (bs->flags & BV_BS_DATA) != 0;
    cs->compressed = cs->data && (bs->flags & BV_BS_COMPRESSED) != 0;
    cs->offset = cs->data && !cs->compressed ? bs->host_offset : UINT64_MAX;
    cs->layer = n;
    if (!cs->data && !cs->zero)      /* allocated but neither: treat as data without offset */
        cs->data = true;
}

int chain_status(bv_node *top, uint64_t off, uint64_t len, struct chain_status *cs,
                 bv_error **errp)
{
    bv_node *n = top;
    for (int depth = 0; depth < BV_MAX_CHAIN_DEPTH; depth++) {
        uint64_t size = bv_node_size(n);
        if (off >= size) {           /* past a shorter backing node: zeros */
            set_zero_below(cs, n, depth, len);
            return 0;
        }
        if (len > size - off)
            len = size - off;
        struct bv_block_status bs = { 0 };
        int r = bv_node_block_status(n, off, len, &bs, errp);
        if (r < 0)
            return r;
        if (bs.pnum == 0 || bs.pnum > len)
            return bv_error_setf(errp, EIO, "block status of '%s' at %" PRIu64
                                 " returned an invalid length", bv_node_filename(n), off);
        if (bs.flags & BV_BS_ALLOCATED) {
            set_decided(cs, n, depth, &bs);
            return 0;
        }
        len = bs.pnum;
        bv_node *backing = bv_node_backing(n);
        if (!backing) {
            set_zero_below(cs, n, depth, len);
            return 0;
        }
        n = backing;
    }
    return bv_error_setf(errp, ELOOP, "backing chain of '%s' is deeper than %d",
                         bv_node_filename(top), BV_MAX_CHAIN_DEPTH);
}

bool buf_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++)
        if (p[i])
            return false;
    /* the first 16 bytes are zero; the rest is zero iff each byte equals the one 16 before */
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}
