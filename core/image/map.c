/*
 * map: the whole chain's mapping as coalesced extents, as `qemu-img map`
 * shows it.  Adjacent runs merge when they come from the same layer with the
 * same data/zero/compressed/present state and, for data, contiguous host
 * offsets.  Runs not allocated anywhere keep apart from allocated zero runs
 * (qemu's "present": false) even though bv_map_entry has no field for it:
 * the entries split there, and a caller that needs to tell them apart asks
 * the layer at `depth` for its block status at `start`.
 *
 * Cost: one chain_status per run; memory: one pending entry.
 */
#include "image/image-int.h"

#include <string.h>

struct map_state {
    struct bv_map_entry pending;
    bool have_pending, pending_present;
    int (*cb)(const struct bv_map_entry *e, void *opaque);
    void *opaque;
};

static void entry_from_status(const struct chain_status *cs, uint64_t off,
                              struct bv_map_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->start = off;
    e->length = cs->pnum;
    e->depth = cs->depth;
    e->data = cs->data;
    e->zero = cs->zero;
    e->compressed = cs->compressed;
    e->offset = cs->offset;
}

static bool can_merge(const struct map_state *m, const struct bv_map_entry *e, bool present)
{
    const struct bv_map_entry *p = &m->pending;
    if (!m->have_pending || p->depth != e->depth || p->data != e->data ||
        p->zero != e->zero || p->compressed != e->compressed || m->pending_present != present)
        return false;
    if (p->offset == UINT64_MAX || e->offset == UINT64_MAX)
        return p->offset == e->offset;
    return p->offset + p->length == e->offset;
}

/* Queue e; emits the previous entry when e does not extend it.  Returns cb's value. */
static int map_push(struct map_state *m, const struct bv_map_entry *e, bool present)
{
    if (can_merge(m, e, present)) {
        m->pending.length += e->length;
        return 0;
    }
    int r = m->have_pending ? m->cb(&m->pending, m->opaque) : 0;
    m->pending = *e;
    m->pending_present = present;
    m->have_pending = true;
    return r;
}

int bv_image_map(bv_node *n, int (*cb)(const struct bv_map_entry *e, void *opaque),
                 void *opaque, bv_error **errp)
{
    struct map_state m = { .cb = cb, .opaque = opaque };
    uint64_t size = bv_node_size(n);
    int r = 0;
    for (uint64_t off = 0; off < size && r == 0;) {
        struct chain_status cs;
        r = chain_status(n, off, size - off, &cs, errp);
        if (r < 0)
            return r;
        struct bv_map_entry e;
        entry_from_status(&cs, off, &e);
        r = map_push(&m, &e, cs.present);
        off += cs.pnum;
    }
    if (r == 0 && m.have_pending)
        r = cb(&m.pending, opaque);
    return r;
}
