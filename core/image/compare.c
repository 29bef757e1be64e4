/*
 * compare: do two images (each with its backing chain) read the same, and
 * where do they differ?
 *
 * The calling thread (the comparer) walks [0, end) in runs where both chains'
 * block status (chain_status) is constant.  A run both sides read as zero is
 * settled without reading.  A side that is zero in a run is not read: the
 * other side is tested against zeros.  The rest is cut into items of at most
 * CMP_CHUNK bytes, planned up to CMP_SLOTS ahead into a ring of slots.
 *
 * Work: an item is done whole by one thread: read side A, read side B, one
 * memcmp (or zero test) over the item, and only for a mismatching item a scan
 * sector by sector, whose findings (differing sectors as a bitmap, byte count,
 * first difference and samples) stay in the item's slot.  The comparer and one
 * helper thread claim planned items with a compare-and-swap on the slot's
 * state, so each item is read once; the comparer then folds the items'
 * findings into the report in offset order.  When the item it needs next is
 * in the helper's hands it does a later one meanwhile, and only when there is
 * none (the helper was preempted: the machine is busy) it does that item again
 * itself rather than wait.
 *
 * Why each thread reads into its own two buffers, reused for every item: the
 * cost of a compare is the copy out of the page cache (perf: ~75 % in
 * _copy_to_iter), and that copy is cheapest when its destination is already
 * in the CPU's L2; the memcmp that follows then reads the item from L2 too.
 * Buffers shared between threads (side B read ahead by a helper into a ring
 * of 8 x 256 KiB per side, before) cycled through 4 MiB and moved each item
 * from one core's cache to the other: ~15 % more CPU time on the 2-core build
 * machine (bench/README.md, compare).  Memory: 2 * CMP_CHUNK per thread.
 *
 * Direct reads: where a side's data lies uncompressed in one of its layers
 * (chain_status gives the layer and host offset), the item is read straight
 * from that layer's file (bv_node_pread_host): no format driver work per
 * request.  Compressed clusters read through the side's node, and so does
 * data in a writable layer (a live drive: its clusters may be freed and
 * reused under a direct read; bv_node_pread_host answers -ENOTSUP).  A filter
 * in the way (blkdebug) or a node whose file is not its data (blkverify)
 * answers -ENOTSUP too; what that layer holds is read through the side's node
 * from then on.
 *
 * Results: items are folded in offset order, so the first difference found
 * is the first one.  It is reported as the first differing 512-byte sector
 * counted from the start of its item; items start where block status runs
 * start and advance by multiples of 512, which is qemu-img compare's rounding.
 * A full scan (o->full) also merges differing sectors into extents (the first
 * max_extents kept, all counted) and counts differing bytes; a stopping scan
 * records only the first differing sector of an item.
 *
 * Sizes: strict mode wants equal sizes (a stopping scan reads nothing then; a
 * full scan compares the common part and counts the larger tail as different).
 * Otherwise the tail of the larger image must read as zeros, as qemu-img
 * compare demands: past its end a side reads as zeros.
 *
 * Threads: the helper lives for the call and starts at the first item (two
 * all-zero images start none).  Only ring.lock; a slot's item and findings
 * are handed over by its atomic state (release on store, acquire on load/CAS).
 */
#include "image/image-int.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CMP_CHUNK      (128u << 10)     /* item size (bytes per read) */
#define CMP_SLOTS      16u              /* items planned ahead of the comparer */
#define CMP_MAX_SLOTS  64u
#define CMP_MAX_CHUNK  (8u << 20)
#define CMP_PROGRESS   (64u << 20)      /* report progress at least this often */
#define SECTOR         BV_COMPARE_SECTOR

enum { SIDE_A, SIDE_B, SIDES };
enum { WORKER_COMPARER, WORKER_HELPER, WORKERS };

/* Slot state, tagged with the item index (state | index << 2) so a late
 * helper cannot claim a slot that was reused for a later item. */
enum { S_QUEUED, S_BUSY, S_DONE };
#define S_STATE(item, st) ((uint64_t)(item) << 2 | (st))

/* What one thread found in one item. */
struct cmp_result {
    int ret;                     /* a read failed: -errno, with err */
    bv_error *err;
    bool differs;
    uint64_t first_sector;       /* differs: the first differing sector's start, in the item */
    uint64_t first_byte;         /* differs: the first differing byte, in the item */
    uint32_t sample_len;
    uint8_t sample[SIDES][BV_COMPARE_SAMPLE];
    uint64_t mismatched;         /* differing bytes counted */
    uint64_t direct;             /* bytes read straight from a layer's file */
    uint64_t *bits;              /* differing sectors of the item (bufsize / 512 bits) */
};

/* One item: [off, off+len) of both sides.  The comparer writes the item before
 * storing S_QUEUED; res belongs to whoever moved the state to S_BUSY, until
 * S_DONE. */
struct cmp_slot {
    uint64_t off, len;
    bool read[SIDES];            /* side k is read; else it reads as zeros here */
    bv_node *layer[SIDES];       /* read: the layer holding the data (chain_status) */
    uint64_t host[SIDES];        /* read: its host offset for a direct read, or UINT64_MAX */
    uint64_t layer_bit[SIDES];   /* read: the layer's bit in cmp_state.no_direct */
    struct cmp_result res;
    _Atomic uint64_t state;
};

/* A thread's own read buffers (bufsize bytes each), reused for every item. */
struct cmp_worker {
    uint8_t *buf[SIDES];
};

struct cmp_ring {
    pthread_mutex_t lock;
    pthread_cond_t work;         /* the helper waits for items past what it has seen */
    pthread_cond_t done;         /* the comparer waits for an item the helper is doing */
    uint64_t queued;             /* items published to the helper (guarded by lock) */
    bool quit;                   /* guarded by lock */
    bool helper_idle;            /* the helper waits on work (guarded by lock) */
    bool comparer_waits;         /* the comparer waits on done (guarded by lock) */
    struct cmp_slot slot[CMP_MAX_SLOTS];
};

/* The status of one side from an offset on: zero or not up to end. */
struct side_run {
    uint64_t start, end;
    bool zero;
    bv_node *layer;              /* !zero: the deciding layer */
    int depth;                   /* !zero: its depth in the chain */
    uint64_t host;               /* its host offset at start (uncompressed data), or UINT64_MAX */
};

struct cmp_state {
    bv_node *node[SIDES];
    const struct bv_compare_opts *o;
    struct bv_compare_report *rep;
    struct cmp_ring ring;
    struct cmp_worker worker[WORKERS];
    struct cmp_result spare;     /* an item done again by the comparer */
    pthread_t helper;
    bool ring_ready, helper_started;
    size_t bufsize;              /* item size, a multiple of 512 */
    size_t bitwords;             /* uint64_t words of a cmp_result's bits */
    unsigned slots;              /* items planned ahead (≤ CMP_MAX_SLOTS) */
    _Atomic uint64_t no_direct[SIDES];  /* side k's layers (bit min(depth, 63)) that refused
                                           a direct read: read through the side's node */
    uint64_t end;                /* scan [0, end) */
    uint64_t total;              /* progress total: the larger size */
    uint64_t planned;            /* items planned (comparer only; ≥ ring.queued) */
    uint64_t consumed;           /* items folded into the report (comparer only) */
    uint64_t reported;           /* last progress reported */
    size_t ext_cap;              /* allocated entries of rep->extents */
    bool ext_open;               /* an extent has been counted; it ends at ext_end */
    uint64_t ext_end;
};

static const uint8_t zero_sector[SECTOR];

/* ---- doing one item (either thread) ---- */

static int read_side(struct cmp_state *s, const struct cmp_slot *sl, int k, uint8_t *buf,
                     struct cmp_result *res)
{
    bv_error **errp = &res->err;
    if (sl->host[k] != UINT64_MAX &&
        !(atomic_load_explicit(&s->no_direct[k], memory_order_relaxed) & sl->layer_bit[k])) {
        bv_error *e = NULL;
        int r = bv_node_pread_host(sl->layer[k], buf, sl->len, sl->host[k], &e);
        if (r != -ENOTSUP) {
            bv_error_propagate(errp, &e);
            res->direct += r < 0 ? 0 : sl->len;
            return r;
        }
        /* a filter (or blkverify, or a writable layer): from now on read what
         * this layer holds through the side's node */
        bv_error_free(e);
        atomic_fetch_or_explicit(&s->no_direct[k], sl->layer_bit[k], memory_order_relaxed);
    }
    return bv_node_pread(s->node[k], buf, sl->len, sl->off, errp);
}

static uint64_t count_differing(const uint8_t *x, const uint8_t *y, size_t n)
{
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += x[i] != y[i];
    return c;
}

static size_t first_differing_byte(const uint8_t *x, const uint8_t *y, size_t n)
{
    size_t i = 0;
    while (i < n && x[i] == y[i])
        i++;
    return i;
}

/* Side bytes at pos of an item, NULL for a side that reads as zeros there. */
static void sample(uint8_t *dst, const uint8_t *side, uint64_t pos, uint32_t n)
{
    if (side)
        memcpy(dst, side + pos, n);
    else
        memset(dst, 0, n);
}

/* The item of len bytes differs somewhere: find the differing sectors.  x/y
 * are the two sides, NULL for a side that reads as zeros.  A stopping scan
 * stops at the first differing sector. */
static void scan_sectors(const struct cmp_state *s, uint64_t len, const uint8_t *x,
                         const uint8_t *y, struct cmp_result *res)
{
    memset(res->bits, 0, s->bitwords * sizeof(*res->bits));
    for (uint64_t i = 0; i < len; i += SECTOR) {
        size_t n = len - i < SECTOR ? (size_t)(len - i) : SECTOR;
        const uint8_t *px = x ? x + i : zero_sector, *py = y ? y + i : zero_sector;
        if (!memcmp(px, py, n))
            continue;
        size_t b = first_differing_byte(px, py, n);
        if (!res->differs) {
            res->differs = true;
            res->first_sector = i;
            res->first_byte = i + b;
            res->sample_len = len - (i + b) < BV_COMPARE_SAMPLE ? (uint32_t)(len - (i + b))
                                                                : BV_COMPARE_SAMPLE;
            sample(res->sample[SIDE_A], x, i + b, res->sample_len);
            sample(res->sample[SIDE_B], y, i + b, res->sample_len);
        }
        res->mismatched += count_differing(px + b, py + b, n - b);
        res->bits[i / SECTOR / 64] |= 1ULL << (i / SECTOR % 64);
        if (!s->o->full)
            return;
    }
}

/* Read both sides of item sl into w's buffers and compare them into *res. */
static void do_item(struct cmp_state *s, struct cmp_worker *w, const struct cmp_slot *sl,
                    struct cmp_result *res)
{
    bv_error_free(res->err);
    res->err = NULL;
    res->ret = 0;
    res->differs = false;
    res->mismatched = 0;
    res->direct = 0;
    const uint8_t *side[SIDES] = { NULL, NULL };
    for (int k = 0; k < SIDES; k++) {
        if (!sl->read[k])
            continue;
        res->ret = read_side(s, sl, k, w->buf[k], res);
        if (res->ret < 0)
            return;
        side[k] = w->buf[k];
    }
    const uint8_t *x = side[SIDE_A], *y = side[SIDE_B];
    bool same = x && y ? !memcmp(x, y, sl->len) : buf_is_zero(x ? x : y, sl->len);
    if (!same)
        scan_sectors(s, sl->len, x, y, res);
}

/* ---- the helper ---- */

/* Helper: claim and do every item it sees that the comparer has not taken. */
static void *helper_main(void *arg)
{
    struct cmp_state *s = arg;
    struct cmp_ring *ring = &s->ring;
    uint64_t next = 0;
    pthread_mutex_lock(&ring->lock);
    for (;;) {
        while (!ring->quit && next == ring->queued) {
            ring->helper_idle = true;
            pthread_cond_wait(&ring->work, &ring->lock);
            ring->helper_idle = false;
        }
        if (ring->quit)
            break;
        uint64_t queued = ring->queued;
        pthread_mutex_unlock(&ring->lock);
        for (; next < queued; next++) {
            struct cmp_slot *sl = &ring->slot[next % s->slots];
            uint64_t want = S_STATE(next, S_QUEUED);
            if (!atomic_compare_exchange_strong(&sl->state, &want, S_STATE(next, S_BUSY)))
                continue;                /* the comparer took it (or it was dropped) */
            do_item(s, &s->worker[WORKER_HELPER], sl, &sl->res);
            atomic_store(&sl->state, S_STATE(next, S_DONE));
            pthread_mutex_lock(&ring->lock);
            if (ring->comparer_waits)
                pthread_cond_signal(&ring->done);
            pthread_mutex_unlock(&ring->lock);
        }
        pthread_mutex_lock(&ring->lock);
    }
    pthread_mutex_unlock(&ring->lock);
    return NULL;
}

/* Wait until the helper has finished item i if it is in the middle of it. */
static void wait_helper(struct cmp_state *s, struct cmp_slot *sl, uint64_t i)
{
    struct cmp_ring *ring = &s->ring;
    if (atomic_load(&sl->state) != S_STATE(i, S_BUSY))
        return;
    pthread_mutex_lock(&ring->lock);
    while (atomic_load(&sl->state) == S_STATE(i, S_BUSY)) {
        ring->comparer_waits = true;
        pthread_cond_wait(&ring->done, &ring->lock);
        ring->comparer_waits = false;
    }
    pthread_mutex_unlock(&ring->lock);
}

static int result_init(struct cmp_state *s, struct cmp_result *res)
{
    res->bits = calloc(s->bitwords, sizeof(*res->bits));
    return res->bits ? 0 : -ENOMEM;
}

static void result_free(struct cmp_result *res)
{
    free(res->bits);
    bv_error_free(res->err);
}

static int ring_init(struct cmp_state *s, bv_error **errp)
{
    struct cmp_ring *ring = &s->ring;
    pthread_mutex_init(&ring->lock, NULL);
    pthread_cond_init(&ring->work, NULL);
    pthread_cond_init(&ring->done, NULL);
    s->ring_ready = true;
    int workers = s->o->no_helper ? 1 : WORKERS;
    int r = result_init(s, &s->spare);
    for (unsigned i = 0; i < s->slots && r == 0; i++)
        r = result_init(s, &ring->slot[i].res);
    for (int w = 0; w < workers && r == 0; w++)
        for (int k = 0; k < SIDES && r == 0; k++)
            if (posix_memalign((void **)&s->worker[w].buf[k], 4096, s->bufsize))
                r = -ENOMEM;
    if (r < 0)
        return bv_error_setf(errp, ENOMEM, "out of memory for compare buffers");
    if (workers == 1)
        return 0;
    r = pthread_create(&s->helper, NULL, helper_main, s);
    if (r)
        return bv_error_setf(errp, r, "cannot start a compare reader: %s", strerror(r));
    s->helper_started = true;
    return 0;
}

static void ring_destroy(struct cmp_state *s)
{
    struct cmp_ring *ring = &s->ring;
    if (!s->ring_ready)
        return;
    if (s->helper_started) {
        /* the helper skips what is left: it must not read on after we stop */
        for (uint64_t i = s->consumed; i < s->planned; i++) {
            uint64_t want = S_STATE(i, S_QUEUED);
            atomic_compare_exchange_strong(&ring->slot[i % s->slots].state, &want,
                                           S_STATE(i, S_DONE));
        }
        pthread_mutex_lock(&ring->lock);
        ring->quit = true;
        pthread_cond_broadcast(&ring->work);
        pthread_mutex_unlock(&ring->lock);
        pthread_join(s->helper, NULL);
    }
    for (unsigned i = 0; i < s->slots; i++)
        result_free(&ring->slot[i].res);
    result_free(&s->spare);
    for (int w = 0; w < WORKERS; w++)
        for (int k = 0; k < SIDES; k++)
            free(s->worker[w].buf[k]);
    pthread_mutex_destroy(&ring->lock);
    pthread_cond_destroy(&ring->work);
    pthread_cond_destroy(&ring->done);
}

/* ---- recording differences (the comparer, in offset order) ---- */

static int extent_add(struct cmp_state *s, uint64_t off, uint64_t len)
{
    struct bv_compare_report *rep = s->rep;
    if (s->ext_open && s->ext_end == off) {
        s->ext_end += len;
        if (rep->n_extents && rep->n_extents == rep->total_extents)
            rep->extents[rep->n_extents - 1].length += len;
        return 0;
    }
    s->ext_open = true;
    s->ext_end = off + len;
    rep->total_extents++;
    size_t cap = s->o->max_extents < BV_COMPARE_MAX_EXTENTS ? s->o->max_extents
                                                            : BV_COMPARE_MAX_EXTENTS;
    if (rep->n_extents >= cap)
        return 0;
    if (rep->n_extents == s->ext_cap) {
        size_t n = s->ext_cap ? s->ext_cap * 2 : 16;
        n = n < cap ? n : cap;
        void *p = realloc(rep->extents, n * sizeof(*rep->extents));
        if (!p)
            return -ENOMEM;
        rep->extents = p;
        s->ext_cap = n;
    }
    rep->extents[rep->n_extents++] = (struct bv_compare_extent){ off, len };
    return 0;
}

/* Fold what was found in item sl (res) into the report. */
static int fold_item(struct cmp_state *s, const struct cmp_slot *sl, struct cmp_result *res)
{
    struct bv_compare_report *rep = s->rep;
    rep->bytes_direct += res->direct;
    if (!res->differs)
        return 0;
    if (rep->first_diff == UINT64_MAX) {
        rep->identical = false;
        rep->first_diff = sl->off + res->first_sector;
        rep->first_diff_byte = sl->off + res->first_byte;
        rep->sample_len = res->sample_len;
        memcpy(rep->sample_a, res->sample[SIDE_A], res->sample_len);
        memcpy(rep->sample_b, res->sample[SIDE_B], res->sample_len);
    }
    rep->mismatched_bytes += res->mismatched;
    for (size_t w = 0; w < s->bitwords; w++) {
        for (uint64_t bits = res->bits[w]; bits; bits &= bits - 1) {
            uint64_t i = ((uint64_t)w * 64 + (uint64_t)__builtin_ctzll(bits)) * SECTOR;
            int r = extent_add(s, sl->off + i, sl->len - i < SECTOR ? sl->len - i : SECTOR);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* ---- planning ---- */

static int side_status(bv_node *n, uint64_t off, uint64_t end, struct side_run *run,
                       bv_error **errp)
{
    uint64_t size = bv_node_size(n);
    if (off >= size) {                   /* past its end a side reads as zeros */
        *run = (struct side_run){ .start = off, .end = end, .zero = true, .host = UINT64_MAX };
        return 0;
    }
    struct chain_status cs;
    int r = chain_status(n, off, size - off, &cs, errp);
    if (r < 0)
        return r;
    bool direct = cs.data && !cs.compressed && cs.offset != UINT64_MAX;
    *run = (struct side_run){ .start = off, .end = off + cs.pnum, .zero = cs.zero,
                              .layer = cs.layer, .depth = cs.depth,
                              .host = direct ? cs.offset : UINT64_MAX };
    return 0;
}

static void progress(struct cmp_state *s, uint64_t done, bool last)
{
    if (done > s->rep->scanned)
        s->rep->scanned = done;
    if (s->o->progress && (last || s->rep->scanned - s->reported >= CMP_PROGRESS)) {
        s->reported = s->rep->scanned;
        s->o->progress(s->o->opaque, s->reported, s->total);
    }
}

static bool finished(const struct cmp_state *s)
{
    return !s->o->full && s->rep->first_diff != UINT64_MAX;
}

/* Queue the item at *off (or skip a run both sides read as zeros); advances *off. */
static int plan_one(struct cmp_state *s, uint64_t *off, struct side_run run[SIDES],
                    bv_error **errp)
{
    for (int k = 0; k < SIDES; k++) {
        if (*off >= run[k].end) {
            int r = side_status(s->node[k], *off, s->end, &run[k], errp);
            if (r < 0)
                return r;
        }
    }
    uint64_t stop = run[SIDE_A].end < run[SIDE_B].end ? run[SIDE_A].end : run[SIDE_B].end;
    stop = stop < s->end ? stop : s->end;
    if (run[SIDE_A].zero && run[SIDE_B].zero) {
        s->rep->bytes_skipped += stop - *off;
        *off = stop;
        if (s->planned == s->consumed)          /* nothing before it is pending */
            progress(s, stop, false);
        return 0;
    }
    uint64_t len = stop - *off < s->bufsize ? stop - *off : s->bufsize;
    if (!s->ring_ready) {
        int r = ring_init(s, errp);
        if (r < 0)
            return r;
    }
    struct cmp_slot *sl = &s->ring.slot[s->planned % s->slots];
    if (s->planned >= s->slots)          /* the helper may still be on an item done again */
        wait_helper(s, sl, s->planned - s->slots);
    sl->off = *off;
    sl->len = len;
    for (int k = 0; k < SIDES; k++) {
        sl->read[k] = !run[k].zero;
        sl->layer[k] = run[k].layer;
        sl->layer_bit[k] = 1ULL << (run[k].depth < 63 ? run[k].depth : 63);
        sl->host[k] = run[k].host == UINT64_MAX ? UINT64_MAX : run[k].host + (*off - run[k].start);
        s->rep->bytes_read += sl->read[k] ? len : 0;
    }
    atomic_store(&sl->state, S_STATE(s->planned, S_QUEUED));
    s->planned++;
    *off += len;
    return 0;
}

/* ---- comparing ---- */

/* Claim and do one queued item after item i, if there is one. */
static bool do_later_item(struct cmp_state *s, uint64_t i)
{
    for (uint64_t j = i + 1; j < s->planned; j++) {
        struct cmp_slot *sl = &s->ring.slot[j % s->slots];
        uint64_t want = S_STATE(j, S_QUEUED);
        if (atomic_compare_exchange_strong(&sl->state, &want, S_STATE(j, S_BUSY))) {
            do_item(s, &s->worker[WORKER_COMPARER], sl, &sl->res);
            atomic_store(&sl->state, S_STATE(j, S_DONE));
            return true;
        }
    }
    return false;
}

/* Do (or take from the helper) the oldest planned item and fold it in. */
static int consume_one(struct cmp_state *s, bv_error **errp)
{
    uint64_t i = s->consumed;
    struct cmp_slot *sl = &s->ring.slot[i % s->slots];
    struct cmp_result *res = &sl->res;
    for (;;) {
        uint64_t want = S_STATE(i, S_QUEUED);
        if (atomic_compare_exchange_strong(&sl->state, &want, S_STATE(i, S_BUSY))) {
            do_item(s, &s->worker[WORKER_COMPARER], sl, res);
            atomic_store(&sl->state, S_STATE(i, S_DONE));
            break;
        }
        if (want == S_STATE(i, S_DONE))
            break;
        if (do_later_item(s, i))        /* the helper is on item i: do a later one */
            continue;
        /* nothing else to do and the helper is still on it (preempted on a busy
         * machine): do it again rather than wait; the planner waits for the
         * helper before reusing the slot */
        res = &s->spare;
        do_item(s, &s->worker[WORKER_COMPARER], sl, res);
        break;
    }
    s->consumed++;
    if (res->ret < 0) {
        bv_error_propagate(errp, &res->err);
        return res->ret;
    }
    int r = fold_item(s, sl, res);
    if (r < 0)
        return bv_error_setf(errp, -r, "out of memory for compare extents");
    progress(s, sl->off + sl->len, false);
    return 0;
}

static void publish(struct cmp_state *s)
{
    struct cmp_ring *ring = &s->ring;
    if (!s->helper_started || ring->queued == s->planned)
        return;
    pthread_mutex_lock(&ring->lock);
    ring->queued = s->planned;
    if (ring->helper_idle)
        pthread_cond_signal(&ring->work);
    pthread_mutex_unlock(&ring->lock);
}

static int cancelled(struct cmp_state *s, bv_error **errp)
{
    if (s->o->should_stop && s->o->should_stop(s->o->opaque))
        return bv_error_setf(errp, ECANCELED, "compare cancelled");
    return 0;
}

static int compare_range(struct cmp_state *s, bv_error **errp)
{
    struct side_run run[SIDES] = { { 0 } };
    uint64_t off = 0;
    int r = 0;
    while (r == 0 && !finished(s) && (off < s->end || s->consumed < s->planned)) {
        /* refill when half the ring is free (or empty): the helper wakes once per batch */
        if (off < s->end && s->planned - s->consumed <= s->slots / 2) {
            while (r == 0 && off < s->end && s->planned - s->consumed < s->slots) {
                r = cancelled(s, errp);
                if (r == 0)
                    r = plan_one(s, &off, run, errp);
            }
            publish(s);
        }
        if (r == 0 && s->consumed < s->planned)
            r = consume_one(s, errp);
    }
    return r;
}

/* Strict full scan of unequal sizes: the larger image's tail is all different. */
static int count_strict_tail(struct cmp_state *s, uint64_t common, uint64_t larger)
{
    struct bv_compare_report *rep = s->rep;
    if (rep->first_diff == UINT64_MAX) {
        rep->identical = false;
        rep->first_diff = rep->first_diff_byte = common;
    }
    rep->mismatched_bytes += larger - common;
    return extent_add(s, common, larger - common);
}

static void report_init(struct bv_compare_report *rep, bv_node *a, bv_node *b)
{
    memset(rep, 0, sizeof(*rep));
    rep->identical = true;
    rep->size_a = bv_node_size(a);
    rep->size_b = bv_node_size(b);
    rep->size_mismatch = rep->size_a != rep->size_b;
    rep->first_diff = rep->first_diff_byte = UINT64_MAX;
}

int bv_image_compare_ex(bv_node *a, bv_node *b, const struct bv_compare_opts *o,
                        struct bv_compare_report *rep, bv_error **errp)
{
    report_init(rep, a, b);
    uint64_t common = rep->size_a < rep->size_b ? rep->size_a : rep->size_b;
    uint64_t larger = rep->size_a < rep->size_b ? rep->size_b : rep->size_a;
    struct cmp_state s = { .node = { a, b }, .o = o, .rep = rep, .total = larger,
                           .end = o->strict ? common : larger };
    size_t chunk = o->chunk / SECTOR * SECTOR;
    if (chunk == 0 || chunk > CMP_MAX_CHUNK)
        chunk = CMP_CHUNK;
    s.bufsize = s.end < chunk ? (size_t)((s.end + SECTOR - 1) / SECTOR * SECTOR) : chunk;
    s.bitwords = (s.bufsize / SECTOR + 63) / 64 + 1;
    s.slots = o->slots >= 2 && o->slots <= CMP_MAX_SLOTS ? o->slots : CMP_SLOTS;
    for (int k = 0; k < SIDES; k++)
        atomic_init(&s.no_direct[k], o->no_direct ? UINT64_MAX : 0);
    int r = 0;
    if (o->strict && rep->size_mismatch && !o->full) {
        rep->identical = false;              /* qemu-img -s: no need to read */
        rep->first_diff = rep->first_diff_byte = common;
        goto out;
    }
    r = compare_range(&s, errp);
    if (r == 0 && o->strict && rep->size_mismatch) {
        r = count_strict_tail(&s, common, larger);
        if (r < 0)
            r = bv_error_setf(errp, -r, "out of memory for compare extents");
    }
    if (r == 0)
        progress(&s, finished(&s) ? rep->scanned : larger, true);
out:
    ring_destroy(&s);
    return r;
}

void bv_compare_report_free(struct bv_compare_report *rep)
{
    if (!rep)
        return;
    free(rep->extents);
    rep->extents = NULL;
    rep->n_extents = 0;
}

int bv_image_compare(bv_node *a, bv_node *b, bool strict, bool *identical,
                     uint64_t *first_diff, bv_error **errp)
{
    struct bv_compare_opts o = { .strict = strict };
    struct bv_compare_report rep;
    int r = bv_image_compare_ex(a, b, &o, &rep, errp);
    if (r == 0) {
        *identical = rep.identical;
        *first_diff = rep.first_diff;
    }
    bv_compare_report_free(&rep);
    return r;
}
