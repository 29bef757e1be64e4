/*
 * Block events: named points in a format driver's I/O path (QEMU's blkdebug
 * event names).  A format driver signals them on its file child just before
 * the request they concern; a filter such as blkdebug below it may react by
 * changing state or failing the next requests.  Nothing else listens.
 *
 * The names exist once, in the table in core/block/block-events.c; the
 * service turns strings into this enum at its edge with bv_block_event_parse.
 */
#ifndef BV_BLOCK_EVENTS_H
#define BV_BLOCK_EVENTS_H

enum bv_block_event {
    BV_EV_L1_UPDATE = 0,
    BV_EV_L1_GROW_ALLOC_TABLE,
    BV_EV_L1_GROW_WRITE_TABLE,
    BV_EV_L1_GROW_ACTIVATE_TABLE,
    BV_EV_L2_LOAD,
    BV_EV_L2_UPDATE,
    BV_EV_L2_UPDATE_COMPRESSED,
    BV_EV_L2_ALLOC_COW_READ,
    BV_EV_L2_ALLOC_WRITE,
    BV_EV_READ_AIO,
    BV_EV_READ_BACKING_AIO,
    BV_EV_READ_COMPRESSED,
    BV_EV_WRITE_AIO,
    BV_EV_WRITE_COMPRESSED,
    BV_EV_VMSTATE_LOAD,
    BV_EV_VMSTATE_SAVE,
    BV_EV_COW_READ,
    BV_EV_COW_WRITE,
    BV_EV_REFTABLE_LOAD,
    BV_EV_REFTABLE_GROW,
    BV_EV_REFTABLE_UPDATE,
    BV_EV_REFBLOCK_LOAD,
    BV_EV_REFBLOCK_UPDATE,
    BV_EV_REFBLOCK_UPDATE_PART,
    BV_EV_REFBLOCK_ALLOC,
    BV_EV_REFBLOCK_ALLOC_HOOKUP,
    BV_EV_REFBLOCK_ALLOC_WRITE,
    BV_EV_REFBLOCK_ALLOC_WRITE_BLOCKS,
    BV_EV_REFBLOCK_ALLOC_WRITE_TABLE,
    BV_EV_REFBLOCK_ALLOC_SWITCH_TABLE,
    BV_EV_CLUSTER_ALLOC,
    BV_EV_CLUSTER_ALLOC_BYTES,
    BV_EV_CLUSTER_FREE,
    BV_EV_FLUSH_TO_OS,
    BV_EV_FLUSH_TO_DISK,
    BV_EV_PWRITEV_RMW_HEAD,
    BV_EV_PWRITEV_RMW_AFTER_HEAD,
    BV_EV_PWRITEV_RMW_TAIL,
    BV_EV_PWRITEV_RMW_AFTER_TAIL,
    BV_EV_PWRITEV,
    BV_EV_PWRITEV_ZERO,
    BV_EV_PWRITEV_DONE,
    BV_EV_EMPTY_IMAGE_PREPARE,
    BV_EV_L1_SHRINK_WRITE_TABLE,
    BV_EV_L1_SHRINK_FREE_L2_CLUSTERS,
    BV_EV_COR_WRITE,
    BV_EV_CLUSTER_ALLOC_SPACE,
    BV_EV_NONE,
    BV_EV__MAX,
};

/* "read_aio" etc.; NULL for a value out of range. */
const char *bv_block_event_name(enum bv_block_event ev);
/* 0 and *out set, or -EINVAL for an unknown name. */
int bv_block_event_parse(const char *name, enum bv_block_event *out);

#endif
