/*
 * Filter "blkdebug": makes failure paths testable by failing requests when
 * the format node above reaches a named point (an event).  The rule model
 * is QEMU's (reference/qemu-semantics.md §7.2) and is described in
 * include/bv/blkdebug.h; this file is the rule engine plus a pass-through
 * filter whose every data op first asks the engine whether to fail.
 *
 * Cost: an event or a request walks at most BV_BLKDEBUG_MAX_RULES rules
 * under the lock; nothing else is done.  Truncate, length and allocation
 * queries are not filtered (node.c passes them to the file child).
 *
 * Threads: one mutex per filter node, `lock`, guards the state, the rules
 * and the counters.  It is a leaf lock: it is never held while calling the
 * child or anything else, so events and requests may come from any thread.
 */
#include "block/driver.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "bv/blkdebug.h"
#include "bv/lock.h"

struct inject_rule {
    struct bv_blkdebug_inject_error r;   /* normalised: error and iotypes non-zero */
    bool active;                         /* armed by the last event that matched it */
    bool removed;                        /* a `once` rule that has fired */
};

struct blkdebug {
    bv_mutex lock;                       /* guards every field below */
    bool lock_ready;                     /* set once lock is initialised (for close) */
    uint32_t state;
    unsigned n_set;
    struct bv_blkdebug_set_state set[BV_BLKDEBUG_MAX_RULES];
    unsigned n_inject;
    struct inject_rule inject[BV_BLKDEBUG_MAX_RULES];
    uint64_t failures;
};

/* ---------------- configuration ---------------- */

static int validate_inject(unsigned i, const struct bv_blkdebug_inject_error *r, bv_error **errp)
{
    if ((unsigned)r->event >= BV_EV__MAX)
        return bv_error_setf(errp, EINVAL, "inject_error[%u]: unknown event %d", i,
                             (int)r->event);
    if (r->error < 0 || r->error > BV_BLKDEBUG_MAX_ERRNO)
        return bv_error_setf(errp, EINVAL, "inject_error[%u]: errno %d is outside 1..%d", i,
                             r->error, BV_BLKDEBUG_MAX_ERRNO);
    if (r->iotypes & ~(unsigned)BV_BLKDEBUG_IO_ALL)
        return bv_error_setf(errp, EINVAL, "inject_error[%u]: unknown iotype bits 0x%x", i,
                             r->iotypes & ~(unsigned)BV_BLKDEBUG_IO_ALL);
    return 0;
}

static int validate_set_state(unsigned i, const struct bv_blkdebug_set_state *r,
                              bv_error **errp)
{
    if ((unsigned)r->event >= BV_EV__MAX)
        return bv_error_setf(errp, EINVAL, "set_state[%u]: unknown event %d", i, (int)r->event);
    if (r->new_state == 0)
        return bv_error_setf(errp, EINVAL, "set_state[%u]: new_state must be at least 1", i);
    return 0;
}

int bv_blkdebug_config_validate(const struct bv_blkdebug_config *cfg, bv_error **errp)
{
    if (!cfg)
        return bv_error_setf(errp, EINVAL, "no blkdebug configuration given");
    if (cfg->n_set_state > BV_BLKDEBUG_MAX_RULES)
        return bv_error_setf(errp, EINVAL, "too many set_state rules (%u, at most %d)",
                             cfg->n_set_state, BV_BLKDEBUG_MAX_RULES);
    if (cfg->n_inject_error > BV_BLKDEBUG_MAX_RULES)
        return bv_error_setf(errp, EINVAL, "too many inject_error rules (%u, at most %d)",
                             cfg->n_inject_error, BV_BLKDEBUG_MAX_RULES);
    int r = 0;
    for (unsigned i = 0; r == 0 && i < cfg->n_set_state; i++)
        r = validate_set_state(i, &cfg->set_state[i], errp);
    for (unsigned i = 0; r == 0 && i < cfg->n_inject_error; i++)
        r = validate_inject(i, &cfg->inject_error[i], errp);
    return r;
}

struct bv_blkdebug_inject_error *bv_blkdebug_add_inject_error(struct bv_blkdebug_config *cfg,
                                                              enum bv_block_event event)
{
    if (!cfg || cfg->n_inject_error >= BV_BLKDEBUG_MAX_RULES)
        return NULL;
    struct bv_blkdebug_inject_error *r = &cfg->inject_error[cfg->n_inject_error++];
    *r = (struct bv_blkdebug_inject_error){
        .event = event, .error = EIO, .state = BV_BLKDEBUG_ANY_STATE,
        .offset = BV_BLKDEBUG_ANY_OFFSET, .iotypes = BV_BLKDEBUG_IO_DEFAULT,
    };
    return r;
}

int bv_blkdebug_add_set_state(struct bv_blkdebug_config *cfg, enum bv_block_event event,
                              uint32_t state, uint32_t new_state, bv_error **errp)
{
    if (!cfg || cfg->n_set_state >= BV_BLKDEBUG_MAX_RULES)
        return bv_error_setf(errp, ENOSPC, "too many set_state rules (at most %d)",
                             BV_BLKDEBUG_MAX_RULES);
    cfg->set_state[cfg->n_set_state++] = (struct bv_blkdebug_set_state){
        .event = event, .state = state, .new_state = new_state,
    };
    return 0;
}

/* Copy a validated configuration into the instance, filling the defaults. */
static void load_rules(struct blkdebug *s, const struct bv_blkdebug_config *cfg)
{
    s->state = 1;
    s->n_set = cfg->n_set_state;
    memcpy(s->set, cfg->set_state, s->n_set * sizeof(s->set[0]));
    s->n_inject = cfg->n_inject_error;
    for (unsigned i = 0; i < s->n_inject; i++) {
        struct inject_rule *ir = &s->inject[i];
        ir->r = cfg->inject_error[i];
        if (ir->r.error == 0)
            ir->r.error = EIO;
        if (ir->r.iotypes == 0)
            ir->r.iotypes = BV_BLKDEBUG_IO_DEFAULT;
    }
}

/* ---------------- the rule engine ---------------- */

static bool state_matches(uint32_t rule_state, uint32_t cur)
{
    return rule_state == BV_BLKDEBUG_ANY_STATE || rule_state == cur;
}

/* Arm this event's inject rules; the first one empties the active set. */
static void activate_locked(struct blkdebug *s, enum bv_block_event ev)
{
    BV_ASSERT_HELD(&s->lock);
    bool reset = false;
    for (unsigned i = 0; i < s->n_inject; i++) {
        struct inject_rule *ir = &s->inject[i];
        if (ir->removed || ir->r.event != ev || !state_matches(ir->r.state, s->state))
            continue;
        if (!reset) {
            for (unsigned j = 0; j < s->n_inject; j++)
                s->inject[j].active = false;
            reset = true;
        }
        ir->active = true;
    }
}

/* The state after ev: the first matching set-state rule's, else unchanged. */
static uint32_t next_state_locked(const struct blkdebug *s, enum bv_block_event ev)
{
    BV_ASSERT_HELD(&s->lock);
    for (unsigned i = 0; i < s->n_set; i++)
        if (s->set[i].event == ev && state_matches(s->set[i].state, s->state))
            return s->set[i].new_state;
    return s->state;
}

static void blkdebug_event(bv_node *n, enum bv_block_event ev)
{
    struct blkdebug *s = n->opaque;
    bv_mutex_lock(&s->lock);
    activate_locked(s, ev);
    s->state = next_state_locked(s, ev);
    bv_mutex_unlock(&s->lock);
}

static bool offset_hits(uint64_t rule_off, uint64_t off, uint64_t len)
{
    return rule_off == BV_BLKDEBUG_ANY_OFFSET || (rule_off >= off && rule_off - off < len);
}

/* The errno the request must fail with, or 0.  A `once` rule goes away here. */
static int check_locked(struct blkdebug *s, unsigned iotype, uint64_t off, uint64_t len)
{
    BV_ASSERT_HELD(&s->lock);
    for (unsigned i = 0; i < s->n_inject; i++) {
        struct inject_rule *ir = &s->inject[i];
        if (!ir->active || ir->removed || !(ir->r.iotypes & iotype) ||
            !offset_hits(ir->r.offset, off, len))
            continue;
        if (ir->r.once) {
            ir->removed = true;
            ir->active = false;
        }
        s->failures++;
        return ir->r.error;
    }
    return 0;
}

static int inject(bv_node *n, unsigned iotype, uint64_t off, uint64_t len, bv_error **errp)
{
    struct blkdebug *s = n->opaque;
    bv_mutex_lock(&s->lock);
    int err = check_locked(s, iotype, off, len);
    bv_mutex_unlock(&s->lock);
    return err ? bv_error_setf(errp, err, "%s", strerror(err)) : 0;
}

/* ---------------- the filter: check, then pass through ---------------- */

static int bd_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    int r = inject(n, BV_BLKDEBUG_IO_READ, off, len, errp);
    return r < 0 ? r : bv_child_pread(n->file, buf, len, off, errp);
}

static int bd_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                     bv_error **errp)
{
    (void)flags;
    int r = inject(n, BV_BLKDEBUG_IO_WRITE, off, len, errp);
    return r < 0 ? r : bv_child_pwrite(n->file, buf, len, off, errp);
}

static int bd_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    int r = inject(n, BV_BLKDEBUG_IO_WRITE_ZEROES, off, len, errp);
    return r < 0 ? r : bv_child_write_zeroes(n->file, len, off, flags, errp);
}

static int bd_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    int r = inject(n, BV_BLKDEBUG_IO_DISCARD, off, len, errp);
    return r < 0 ? r : bv_child_discard(n->file, len, off, errp);
}

static int bd_flush(bv_node *n, bv_error **errp)
{
    int r = inject(n, BV_BLKDEBUG_IO_FLUSH, 0, 0, errp);
    return r < 0 ? r : bv_child_flush(n->file, errp);
}

static int bd_block_status(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                           bv_error **errp)
{
    int r = inject(n, BV_BLKDEBUG_IO_BLOCK_STATUS, off, len, errp);
    return r < 0 ? r : bv_child_block_status(n->file, off, len, bs, errp);
}

static void bd_close(bv_node *n)
{
    struct blkdebug *s = n->opaque;
    if (s && s->lock_ready)
        bv_mutex_destroy(&s->lock);
}

/* node.c has built n over its file; take the rules from spec. */
static int bd_open(bv_node *n, const struct bv_filter_spec *spec, bv_error **errp)
{
    struct blkdebug *s = n->opaque;
    const struct bv_blkdebug_config *cfg = spec->blkdebug;
    int r = bv_blkdebug_config_validate(cfg, errp);
    if (r == 0 && (r = bv_mutex_init(&s->lock)) < 0)
        bv_error_setf(errp, -r, "blkdebug: cannot create its lock");
    if (r < 0)
        return r;
    s->lock_ready = true;
    load_rules(s, cfg);
    blkdebug_event(n, BV_EV_NONE);   /* QEMU signals "none" once at open */
    return 0;
}

const struct bv_driver bv_drv_blkdebug = {
    .name = "blkdebug",
    .kind = BV_DRV_FILTER,
    .filter = BV_FILTER_BLKDEBUG,
    .instance_size = sizeof(struct blkdebug),
    .filter_open = bd_open,
    .close = bd_close,
    .pread = bd_pread,
    .pwrite = bd_pwrite,
    .write_zeroes = bd_write_zeroes,
    .discard = bd_discard,
    .flush = bd_flush,
    .block_status = bd_block_status,
    .event = blkdebug_event,
};

/* ---------------- query ---------------- */

int bv_blkdebug_query(bv_node *n, struct bv_blkdebug_status *st, bv_error **errp)
{
    while (n && n->drv != &bv_drv_blkdebug)
        n = n->file;
    if (!n)
        return bv_error_setf(errp, ENOENT, "the node has no blkdebug layer");
    struct blkdebug *s = n->opaque;
    memset(st, 0, sizeof(*st));
    bv_mutex_lock(&s->lock);
    st->state = s->state;
    for (unsigned i = 0; i < s->n_inject; i++) {
        st->inject_rules += !s->inject[i].removed;
        st->active_rules += s->inject[i].active && !s->inject[i].removed;
    }
    st->failures = s->failures;
    bv_mutex_unlock(&s->lock);
    return 0;
}
