/* The one table of block event names (see include/bv/block-events.h). */
#include "bv/block-events.h"

#include <errno.h>
#include <string.h>

static const char *const event_names[BV_EV__MAX] = {
    [BV_EV_L1_UPDATE] = "l1_update",
    [BV_EV_L1_GROW_ALLOC_TABLE] = "l1_grow_alloc_table",
    [BV_EV_L1_GROW_WRITE_TABLE] = "l1_grow_write_table",
    [BV_EV_L1_GROW_ACTIVATE_TABLE] = "l1_grow_activate_table",
    [BV_EV_L2_LOAD] = "l2_load",
    [BV_EV_L2_UPDATE] = "l2_update",
    [BV_EV_L2_UPDATE_COMPRESSED] = "l2_update_compressed",
    [BV_EV_L2_ALLOC_COW_READ] = "l2_alloc_cow_read",
    [BV_EV_L2_ALLOC_WRITE] = "l2_alloc_write",
    [BV_EV_READ_AIO] = "read_aio",
    [BV_EV_READ_BACKING_AIO] = "read_backing_aio",
    [BV_EV_READ_COMPRESSED] = "read_compressed",
    [BV_EV_WRITE_AIO] = "write_aio",
    [BV_EV_WRITE_COMPRESSED] = "write_compressed",
    [BV_EV_VMSTATE_LOAD] = "vmstate_load",
    [BV_EV_VMSTATE_SAVE] = "vmstate_save",
    [BV_EV_COW_READ] = "cow_read",
    [BV_EV_COW_WRITE] = "cow_write",
    [BV_EV_REFTABLE_LOAD] = "reftable_load",
    [BV_EV_REFTABLE_GROW] = "reftable_grow",
    [BV_EV_REFTABLE_UPDATE] = "reftable_update",
    [BV_EV_REFBLOCK_LOAD] = "refblock_load",
    [BV_EV_REFBLOCK_UPDATE] = "refblock_update",
    [BV_EV_REFBLOCK_UPDATE_PART] = "refblock_update_part",
    [BV_EV_REFBLOCK_ALLOC] = "refblock_alloc",
    [BV_EV_REFBLOCK_ALLOC_HOOKUP] = "refblock_alloc_hookup",
    [BV_EV_REFBLOCK_ALLOC_WRITE] = "refblock_alloc_write",
    [BV_EV_REFBLOCK_ALLOC_WRITE_BLOCKS] = "refblock_alloc_write_blocks",
    [BV_EV_REFBLOCK_ALLOC_WRITE_TABLE] = "refblock_alloc_write_table",
    [BV_EV_REFBLOCK_ALLOC_SWITCH_TABLE] = "refblock_alloc_switch_table",
    [BV_EV_CLUSTER_ALLOC] = "cluster_alloc",
    [BV_EV_CLUSTER_ALLOC_BYTES] = "cluster_alloc_bytes",
    [BV_EV_CLUSTER_FREE] = "cluster_free",
    [BV_EV_FLUSH_TO_OS] = "flush_to_os",
    [BV_EV_FLUSH_TO_DISK] = "flush_to_disk",
    [BV_EV_PWRITEV_RMW_HEAD] = "pwritev_rmw_head",
    [BV_EV_PWRITEV_RMW_AFTER_HEAD] = "pwritev_rmw_after_head",
    [BV_EV_PWRITEV_RMW_TAIL] = "pwritev_rmw_tail",
    [BV_EV_PWRITEV_RMW_AFTER_TAIL] = "pwritev_rmw_after_tail",
    [BV_EV_PWRITEV] = "pwritev",
    [BV_EV_PWRITEV_ZERO] = "pwritev_zero",
    [BV_EV_PWRITEV_DONE] = "pwritev_done",
    [BV_EV_EMPTY_IMAGE_PREPARE] = "empty_image_prepare",
    [BV_EV_L1_SHRINK_WRITE_TABLE] = "l1_shrink_write_table",
    [BV_EV_L1_SHRINK_FREE_L2_CLUSTERS] = "l1_shrink_free_l2_clusters",
    [BV_EV_COR_WRITE] = "cor_write",
    [BV_EV_CLUSTER_ALLOC_SPACE] = "cluster_alloc_space",
    [BV_EV_NONE] = "none",
};

const char *bv_block_event_name(enum bv_block_event ev)
{
    if ((unsigned)ev >= BV_EV__MAX)
        return NULL;
    return event_names[ev];
}

int bv_block_event_parse(const char *name, enum bv_block_event *out)
{
    if (!name)
        return -EINVAL;
    for (unsigned i = 0; i < BV_EV__MAX; i++) {
        if (strcmp(event_names[i], name) == 0) {
            *out = (enum bv_block_event)i;
            return 0;
        }
    }
    return -EINVAL;
}
