/*
 * Private helpers shared by the image operations (compare, convert, map).
 *
 * chain_status() answers "what does the whole backing chain read as here?"
 * by asking each layer's bv_node_block_status in turn: the first layer that
 * has the range allocated decides; an unallocated range falls through to the
 * backing node (only as far as the layer above left undecided); a range past
 * the end of a shorter backing node, or below the bottom layer, reads zeros.
 * Each call costs at most one block-status query per layer.
 */
#ifndef BV_IMAGE_INT_H
#define BV_IMAGE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/image.h"

struct chain_status {
    uint64_t pnum;          /* length of the run that shares this answer (> 0) */
    int depth;              /* deciding layer, 0 = top; the bottom layer if none decides */
    bool present;           /* some layer has it allocated */
    bool data, zero, compressed;
    uint64_t offset;        /* host offset in that layer when data && !compressed, else UINT64_MAX */
    bv_node *layer;         /* the node at depth (borrowed) */
};

/* Status of [off, off+len) of top's chain; len > 0 and the range lies inside top. */
int chain_status(bv_node *top, uint64_t off, uint64_t len, struct chain_status *cs,
                 bv_error **errp);

/* True when all len bytes of buf are zero. */
bool buf_is_zero(const void *buf, size_t len);

#endif
