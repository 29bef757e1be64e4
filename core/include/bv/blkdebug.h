/*
 * blkdebug: error injection below a format node, for tests and for drives
 * created with a "blkdebug" object (QEMU's blkdebug semantics, see
 * reference/qemu-semantics.md §7).  The configuration is typed C: the
 * service turns the REST body's strings into these structs once, at its
 * edge, and calls bv_blkdebug_config_validate before opening.
 *
 * The model: a state machine whose state starts at 1.  When the format node
 * above signals an event (bv/block-events.h), the rules for that event whose
 * `state` is 0 (any) or the current state are walked:
 *   - inject-error rules become active (the active set is emptied at the
 *     first such rule of each event, so only this event's rules stay active);
 *   - set-state rules pick the next state, applied after the walk (if several
 *     match, the first in configuration order wins).
 * While an active rule remains, every request of a type in its `iotypes`
 * whose byte range contains `offset` (any request if offset is
 * BV_BLKDEBUG_ANY_OFFSET) fails with -errno and the message strerror(errno).
 * A `once` rule is removed at its first failure; others stay armed.
 *
 * `offset` is a byte offset in the image FILE (the blkdebug layer sits
 * between the format driver and the file): for qcow2 that is a host offset,
 * not a guest offset.  It is QEMU's `sector` times 512.
 *
 * Limits: at most BV_BLKDEBUG_MAX_RULES rules of each kind.
 */
#ifndef BV_BLKDEBUG_H
#define BV_BLKDEBUG_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/block-events.h"
#include "bv/error.h"
#include "bv/image.h"

#define BV_BLKDEBUG_MAX_RULES   64
#define BV_BLKDEBUG_ANY_OFFSET  UINT64_MAX   /* also what -1 converts to */
#define BV_BLKDEBUG_ANY_STATE   0u
#define BV_BLKDEBUG_MAX_ERRNO   4095         /* errno values are 1..4095 */

/* Request types an inject-error rule can fail (bit mask). */
enum {
    BV_BLKDEBUG_IO_READ         = 1u << 0,
    BV_BLKDEBUG_IO_WRITE        = 1u << 1,
    BV_BLKDEBUG_IO_WRITE_ZEROES = 1u << 2,
    BV_BLKDEBUG_IO_DISCARD      = 1u << 3,
    BV_BLKDEBUG_IO_FLUSH        = 1u << 4,
    BV_BLKDEBUG_IO_BLOCK_STATUS = 1u << 5,
    /* QEMU's default: everything but block-status.  0 in a rule means this. */
    BV_BLKDEBUG_IO_DEFAULT = BV_BLKDEBUG_IO_READ | BV_BLKDEBUG_IO_WRITE |
                             BV_BLKDEBUG_IO_WRITE_ZEROES | BV_BLKDEBUG_IO_DISCARD |
                             BV_BLKDEBUG_IO_FLUSH,
    BV_BLKDEBUG_IO_ALL = BV_BLKDEBUG_IO_DEFAULT | BV_BLKDEBUG_IO_BLOCK_STATUS,
};

struct bv_blkdebug_set_state {
    enum bv_block_event event;
    uint32_t state;          /* BV_BLKDEBUG_ANY_STATE (0) = any */
    uint32_t new_state;      /* >= 1 */
};

struct bv_blkdebug_inject_error {
    enum bv_block_event event;
    int error;               /* positive errno; 0 means EIO (5) */
    uint32_t state;          /* BV_BLKDEBUG_ANY_STATE (0) = any */
    uint64_t offset;         /* file offset, or BV_BLKDEBUG_ANY_OFFSET.  Zero-initialised
                                means offset 0: use bv_blkdebug_add_inject_error for defaults */
    bool once;               /* remove the rule at its first failure */
    bool immediately;        /* accepted for QEMU compatibility; requests here are synchronous,
                                so the failure is the same either way */
    unsigned iotypes;        /* BV_BLKDEBUG_IO_* mask; 0 means BV_BLKDEBUG_IO_DEFAULT */
};

/* A plain value: copy it, zero it, keep it on the stack (about 3 KiB). */
struct bv_blkdebug_config {
    unsigned n_set_state;
    struct bv_blkdebug_set_state set_state[BV_BLKDEBUG_MAX_RULES];
    unsigned n_inject_error;
    struct bv_blkdebug_inject_error inject_error[BV_BLKDEBUG_MAX_RULES];
};

/* 0, or -EINVAL with a message naming the rule and field ("inject_error[2]: errno 0x…"). */
int bv_blkdebug_config_validate(const struct bv_blkdebug_config *cfg, bv_error **errp);

/* Append a rule with QEMU's defaults (errno EIO, any state, any offset, default iotypes,
 * not once) and return it for the caller to adjust, or NULL when the table is full. */
struct bv_blkdebug_inject_error *bv_blkdebug_add_inject_error(struct bv_blkdebug_config *cfg,
                                                              enum bv_block_event event);
/* Append a set-state rule; -ENOSPC (with message) when the table is full. */
int bv_blkdebug_add_set_state(struct bv_blkdebug_config *cfg, enum bv_block_event event,
                              uint32_t state, uint32_t new_state, bv_error **errp);

struct bv_blkdebug_status {
    uint32_t state;          /* current state (starts at 1) */
    unsigned inject_rules;   /* inject-error rules still configured (once-rules go away) */
    unsigned active_rules;   /* of those, how many are active */
    uint64_t failures;       /* requests failed so far */
};

/* The status of the blkdebug layer under n (n may be the image node opened with
 * a BV_FILTER_BLKDEBUG entry in bv_open_opts.filters, or the filter node
 * itself).  -ENOENT if n has none. */
int bv_blkdebug_query(bv_node *n, struct bv_blkdebug_status *st, bv_error **errp);

#endif
