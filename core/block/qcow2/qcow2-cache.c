/*
 * Metadata caches for L2 tables and refcount blocks.  Each is a fixed number
 * of cluster-sized slots (set at open: the memory bound) indexed by a hash
 * of the table's host offset, evicting the least recently used slot.
 *
 * Write-back order: refcount blocks may reach the disk at any time (a higher
 * refcount than needed is only a leak, and decrements are applied only after
 * the mappings that dropped a cluster are on disk, see qcow2-refcount.c).
 * An L2 table, though, may reference clusters whose refcount is still only
 * in the refblock cache, or written but not yet durable, so before any dirty
 * L2 table is written:
 *   1. all dirty refblocks are written, and
 *   2. the file is synced if any refcount write happened since the last
 *      sync — a dirty refblock just written, but also one evicted earlier
 *      (its write is in the page cache only; a power loss may keep the later
 *      L2 write and lose it: a reference to a cluster with refcount 0), a
 *      new refblock and its reftable entry (qcow2-refcount.c sets
 *      rb.unsynced for those).
 * l2.unsynced does the same for the L1: written L2 tables are synced
 * before the L1 entries pointing to them (qcow2-refcount.c).
 * That is the dependency QEMU's cache expresses with set_dependency: the L2
 * cache depends on the refcount cache being flushed.  Flushes write dirty
 * tables in ascending offset order.  tests/unit/test_crash.c cuts the file
 * at every sync point of allocating workloads to check the order.
 *
 * Cost: a hit is one hash probe; a miss is one pread of a cluster.
 */
#include "block/qcow2/qcow2-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static unsigned bucket_of(const struct qcow2_cache *c, uint64_t off)
{
    return (unsigned)((off >> 9) * 0x9e3779b97f4a7c15ULL >> 40) % c->nbuckets;
}

int qcow2_cache_init(struct qcow2_cache *c, bool is_l2, unsigned cap, bv_error **errp)
{
    memset(c, 0, sizeof(*c));
    c->is_l2 = is_l2;
    c->cap = cap;
    c->nbuckets = cap * 2 + 1;
    c->e = calloc(cap, sizeof(*c->e));
    c->buckets = malloc(c->nbuckets * sizeof(int));
    if (!c->e || !c->buckets)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    for (unsigned i = 0; i < c->nbuckets; i++)
        c->buckets[i] = -1;
    for (unsigned i = 0; i < cap; i++)
        c->e[i].next = -1;
    return 0;
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
    for (unsigned i = 0; c->e && i < c->cap; i++)
        free(c->e[i].data);
    free(c->e);
    free(c->buckets);
    memset(c, 0, sizeof(*c));
}

static int find(const struct qcow2_cache *c, uint64_t off)
{
    for (int i = c->buckets[bucket_of(c, off)]; i >= 0; i = c->e[i].next)
        if (c->e[i].offset == off)
            return i;
    return -1;
}

static void unlink_slot(struct qcow2_cache *c, int idx)
{
    int *pp = &c->buckets[bucket_of(c, c->e[idx].offset)];
    while (*pp >= 0 && *pp != idx)
        pp = &c->e[*pp].next;
    if (*pp == idx)
        *pp = c->e[idx].next;
    c->e[idx].next = -1;
    c->e[idx].offset = 0;
    c->e[idx].dirty = false;
}

static int write_entry(bv_node *n, struct qcow2_cache *c, struct qcow2_cache_entry *e,
                       bv_error **errp)
{
    struct qcow2_state *s = q_state(n);
    int r = 0;
    if (c->is_l2)
        r = qcow2_cache_sync_refcounts_locked(n, errp);
    if (r == 0) {
        bv_node_event(n->file, c->is_l2 ? BV_EV_L2_UPDATE : BV_EV_REFBLOCK_UPDATE);
        r = bv_child_pwrite(n->file, e->data, s->cluster_size, e->offset, errp);
    }
    if (r < 0)
        s->failed = true;
    else
        e->dirty = false;
    c->unsynced = true;
    return r;
}

int qcow2_sync_locked(bv_node *n, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    int r = bv_child_flush(n->file, errp);
    if (r == 0)
        s->rb.unsynced = s->l2.unsynced = false;
    return r;
}

int qcow2_cache_sync_refcounts_locked(bv_node *n, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    int r = 0;
    if (qcow2_cache_has_dirty(&s->rb))
        r = qcow2_cache_flush_locked(n, &s->rb, NULL, errp);
    if (r == 0 && s->rb.unsynced)
        r = qcow2_sync_locked(n, errp);
    return r;
}

static int pick_victim(bv_node *n, struct qcow2_cache *c, int *out, bv_error **errp)
{
    int best = -1;
    for (unsigned i = 0; i < c->cap; i++) {
        if (c->e[i].offset == 0) {
            best = (int)i;
            break;
        }
        if (best < 0 || c->e[i].lru < c->e[best].lru)
            best = (int)i;
    }
    int r = 0;
    if (c->e[best].offset && c->e[best].dirty)
        r = write_entry(n, c, &c->e[best], errp);
    if (r == 0 && c->e[best].offset)
        unlink_slot(c, best);
    *out = best;
    return r;
}

int qcow2_cache_get_locked(bv_node *n, struct qcow2_cache *c, uint64_t off, bool fresh,
                           struct qcow2_cache_entry **out, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_state *s = q_state(n);
    int idx = find(c, off);
    int r = 0;
    if (idx >= 0) {
        if (fresh)
            memset(c->e[idx].data, 0, s->cluster_size);
        goto hit;
    }
    r = pick_victim(n, c, &idx, errp);
    if (r < 0)
        return r;
    struct qcow2_cache_entry *e = &c->e[idx];
    if (!e->data && !(e->data = malloc(s->cluster_size)))
        return bv_error_setf(errp, ENOMEM, "out of memory");
    if (fresh) {
        memset(e->data, 0, s->cluster_size);
    } else {
        bv_node_event(n->file, c->is_l2 ? BV_EV_L2_LOAD : BV_EV_REFBLOCK_LOAD);
        r = bv_child_pread(n->file, e->data, s->cluster_size, off, errp);
        if (r < 0)
            return r;
    }
    e->offset = off;
    e->dirty = false;
    unsigned b = bucket_of(c, off);
    e->next = c->buckets[b];
    c->buckets[b] = idx;
hit:
    c->e[idx].lru = ++c->clock;
    *out = &c->e[idx];
    return 0;
}

void qcow2_cache_drop_locked(bv_node *n, struct qcow2_cache *c, uint64_t off)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    int idx = find(c, off);
    if (idx >= 0)
        unlink_slot(c, idx);
}

bool qcow2_cache_has_dirty(const struct qcow2_cache *c)
{
    for (unsigned i = 0; i < c->cap; i++)
        if (c->e[i].offset && c->e[i].dirty)
            return true;
    return false;
}

static int cmp_entry_ptr(const void *a, const void *b)
{
    const struct qcow2_cache_entry *x = *(const struct qcow2_cache_entry *const *)a;
    const struct qcow2_cache_entry *y = *(const struct qcow2_cache_entry *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int qcow2_cache_flush_locked(bv_node *n, struct qcow2_cache *c, bool *wrote, bv_error **errp)
{
    BV_ASSERT_HELD(&q_state(n)->lock);
    struct qcow2_cache_entry **list = malloc(c->cap * sizeof(*list));
    unsigned cnt = 0;
    int r = 0;
    if (!list)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    for (unsigned i = 0; i < c->cap; i++)
        if (c->e[i].offset && c->e[i].dirty)
            list[cnt++] = &c->e[i];
    qsort(list, cnt, sizeof(*list), cmp_entry_ptr);
    for (unsigned i = 0; i < cnt && r == 0; i++)
        r = write_entry(n, c, list[i], errp);
    if (wrote)
        *wrote = cnt > 0;
    free(list);
    return r;
}

bool qcow2_cache_contains(const struct qcow2_cache *c, uint64_t off)
{
    return find(c, off) >= 0;
}
