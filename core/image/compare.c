/*
 * compare: do two images (each with its backing chain) read the same, and
 * where do they differ?
 *
 * The calling thread (the comparer) walks [0, end) in runs where both chains'
 * block status (chain_status) is constant.  A run both sides read as zero is
 * settled without reading.  A side that is zero in a run is not read: the
 * other side is tested against zeros.  The rest is cut into items of at most
 * CMP_CHUNK bytes, planned CMP_SLOTS ahead into a ring of slots.  For each
 * item, in order, the comparer reads side A, takes side B, then runs one
 * memcmp (or zero test) over the item; only a mismatching item is rescanned
 * sector by sector.
 *
 * Overlap: one helper thread reads side B of the planned items ahead of the
 * comparer (nodes take concurrent reads).  Each slot's side-B state is claimed
 * with a compare-and-swap, so when the helper is behind (or not scheduled: the
 * machine is busy) the comparer reads B itself instead of waiting; it waits
 * only for a read the helper is in the middle of.  On an idle machine the two
 * sides are copied in parallel; on a loaded one the cost is one thread's.
 *
 * Why small chunks: the bytes a pread copies out of the page cache must still
 * be in the CPU cache when memcmp reads them.  With 8 MiB chunks (before) each
 * pread took ~9 ms where qemu-img's 2 MiB reads take 0.3 ms per MiB; the sizes
 * below were measured on the 2-core build machine (bench/README.md, compare).
 * Memory: 2 * CMP_SLOTS * CMP_CHUNK (or the image size if smaller).
 *
 * Results: items are compared in offset order, so the first difference found
 * is the first one.  It is reported as the first differing 512-byte sector
 * counted from the start of its item; items start where block status runs
 * start and advance by multiples of 512, which is qemu-img compare's rounding.
 * A full scan (o->full) also merges differing sectors into extents (the first
 * max_extents kept, all counted) and counts differing bytes.
 *
 * Sizes: strict mode wants equal sizes (a stopping scan reads nothing then; a
 * full scan compares the common part and counts the larger tail as different).
 * Otherwise the tail of the larger image must read as zeros, as qemu-img
 * compare demands: past its end a side reads as zeros.
 *
 * Threads: the helper lives for the call and starts at the first item (two
 * all-zero images start none).  Only ring.lock; slot contents are handed over
 * by the slot's atomic state (release on store, acquire on load/CAS).
 */
#include "image/image-int.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CMP_CHUNK      (256u << 10)     /* item size: two of them fit a core's L2 */
#define CMP_SLOTS      8u               /* items planned ahead of the comparer */
#define CMP_PROGRESS   (64u << 20)      /* report progress at least this often */
#define SECTOR         BV_COMPARE_SECTOR

enum { SIDE_A, SIDE_B, SIDES };

/* Side-B state of a slot, tagged with the item index (state | index << 2) so a
 * late helper cannot claim a slot that was reused for a later item. */
enum { B_QUEUED, B_READING, B_DONE };
#define B_STATE(item, st) ((uint64_t)(item) << 2 | (st))

/* One item: [off, off+len) of both sides.  The comparer writes off/len/read
 * before storing B_QUEUED (or B_DONE when B is not read); buf[B]/ret[B]/err[B]
 * belong to whoever moved the state out of B_QUEUED, until B_DONE. */
struct cmp_slot {
    uint64_t off, len;
    bool read[SIDES];            /* side k is read; else it reads as zeros here */
    uint8_t *buf[SIDES];         /* owned, bufsize bytes each */
    int ret[SIDES];
    bv_error *err[SIDES];
    _Atomic uint64_t b_state;
};

struct cmp_ring {
    pthread_mutex_t lock;
    pthread_cond_t work;         /* the helper waits for items past what it has seen */
    pthread_cond_t done;         /* the comparer waits for a side-B read in progress */
    uint64_t queued;             /* items published to the helper (guarded by lock) */
    bool quit;                   /* guarded by lock */
    bool helper_idle;            /* the helper waits on work (guarded by lock) */
    bool comparer_waits;         /* the comparer waits on done (guarded by lock) */
    struct cmp_slot slot[CMP_SLOTS];
};

/* The status of one side from an offset on: zero or not up to end. */
struct side_run {
    uint64_t end;
    bool zero;
};

struct cmp_state {
    bv_node *node[SIDES];
    const struct bv_compare_opts *o;
    struct bv_compare_report *rep;
    struct cmp_ring ring;
    struct cmp_slot spare;       /* side B read again by the comparer (buf[B] only) */
    pthread_t helper;
    bool ring_ready, helper_started;
    size_t bufsize;
    uint64_t end;                /* scan [0, end) */
    uint64_t total;              /* progress total: the larger size */
    uint64_t planned;            /* items planned (comparer only; ≥ ring.queued) */
    uint64_t consumed;           /* items compared (comparer only) */
    uint64_t reported;           /* last progress reported */
    size_t ext_cap;              /* allocated entries of rep->extents */
    bool ext_open;               /* an extent has been counted; it ends at ext_end */
    uint64_t ext_end;
};

static const uint8_t zero_sector[SECTOR];

/* ---- side B: the helper, and the comparer's share ---- */

static void read_side(struct cmp_state *s, struct cmp_slot *sl, int k)
{
    bv_error_free(sl->err[k]);
    sl->err[k] = NULL;
    sl->ret[k] = bv_node_pread(s->node[k], sl->buf[k], sl->len, sl->off, &sl->err[k]);
}

/* Helper: claim and read side B of every item it sees, in order. */
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
            struct cmp_slot *sl = &ring->slot[next % CMP_SLOTS];
            uint64_t want = B_STATE(next, B_QUEUED);
            if (!atomic_compare_exchange_strong(&sl->b_state, &want, B_STATE(next, B_READING)))
                continue;                /* not read, or the comparer took it */
            read_side(s, sl, SIDE_B);
            atomic_store(&sl->b_state, B_STATE(next, B_DONE));
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

/* Wait until the helper has finished a read of item i it is in the middle of. */
static void wait_helper(struct cmp_state *s, struct cmp_slot *sl, uint64_t i)
{
    struct cmp_ring *ring = &s->ring;
    if (atomic_load(&sl->b_state) != B_STATE(i, B_READING))
        return;
    pthread_mutex_lock(&ring->lock);
    while (atomic_load(&sl->b_state) == B_STATE(i, B_READING)) {
        ring->comparer_waits = true;
        pthread_cond_wait(&ring->done, &ring->lock);
        ring->comparer_waits = false;
    }
    pthread_mutex_unlock(&ring->lock);
}

/* Comparer: returns the slot holding side B of item i (sl, or the spare).
 * When the helper is behind, the comparer reads B itself; when the helper is in
 * the middle of that read, it reads B again into the spare instead of waiting:
 * on a busy machine the helper may be preempted mid-read for a whole time
 * slice.  The helper's copy is then dropped (the planner waits for it before
 * reusing the slot, CMP_SLOTS items later). */
static struct cmp_slot *take_side_b(struct cmp_state *s, struct cmp_slot *sl, uint64_t i)
{
    uint64_t want = B_STATE(i, B_QUEUED);
    if (atomic_compare_exchange_strong(&sl->b_state, &want, B_STATE(i, B_READING))) {
        read_side(s, sl, SIDE_B);        /* the helper is behind: do it here */
        atomic_store(&sl->b_state, B_STATE(i, B_DONE));
        return sl;
    }
    if (want == B_STATE(i, B_DONE))
        return sl;
    struct cmp_slot *sp = &s->spare;
    sp->off = sl->off;
    sp->len = sl->len;
    read_side(s, sp, SIDE_B);
    return sp;
}

static int ring_init(struct cmp_state *s, bv_error **errp)
{
    struct cmp_ring *ring = &s->ring;
    pthread_mutex_init(&ring->lock, NULL);
    pthread_cond_init(&ring->work, NULL);
    pthread_cond_init(&ring->done, NULL);
    s->ring_ready = true;
    for (unsigned i = 0; i < CMP_SLOTS; i++)
        for (int k = 0; k < SIDES; k++)
            if (posix_memalign((void **)&ring->slot[i].buf[k], 4096, s->bufsize))
                return bv_error_setf(errp, ENOMEM, "out of memory for compare buffers");
    if (posix_memalign((void **)&s->spare.buf[SIDE_B], 4096, s->bufsize))
        return bv_error_setf(errp, ENOMEM, "out of memory for compare buffers");
    int r = pthread_create(&s->helper, NULL, helper_main, s);
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
            uint64_t want = B_STATE(i, B_QUEUED);
            atomic_compare_exchange_strong(&ring->slot[i % CMP_SLOTS].b_state, &want,
                                           B_STATE(i, B_DONE));
        }
        pthread_mutex_lock(&ring->lock);
        ring->quit = true;
        pthread_cond_broadcast(&ring->work);
        pthread_mutex_unlock(&ring->lock);
        pthread_join(s->helper, NULL);
    }
    for (unsigned i = 0; i < CMP_SLOTS; i++)
        for (int k = 0; k < SIDES; k++) {
            free(ring->slot[i].buf[k]);
            bv_error_free(ring->slot[i].err[k]);
        }
    free(s->spare.buf[SIDE_B]);
    bv_error_free(s->spare.err[SIDE_B]);
    pthread_mutex_destroy(&ring->lock);
    pthread_cond_destroy(&ring->work);
    pthread_cond_destroy(&ring->done);
}

/* ---- recording differences ---- */

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

static void note_first(struct cmp_state *s, uint64_t off, uint64_t len, uint64_t sector,
                       uint64_t byte, const uint8_t *x, const uint8_t *y)
{
    struct bv_compare_report *rep = s->rep;
    if (rep->first_diff != UINT64_MAX)
        return;
    rep->identical = false;
    rep->first_diff = off + sector;
    rep->first_diff_byte = off + byte;
    rep->sample_len = len - byte < BV_COMPARE_SAMPLE ? (uint32_t)(len - byte) : BV_COMPARE_SAMPLE;
    sample(rep->sample_a, x, byte, rep->sample_len);
    sample(rep->sample_b, y, byte, rep->sample_len);
}

/* Item [off, off+len) differs somewhere: find the differing sectors.  x/y are
 * the two sides, NULL for a side that reads as zeros.  A stopping scan stops at
 * the first differing sector. */
static int scan_sectors(struct cmp_state *s, uint64_t off, uint64_t len,
                        const uint8_t *x, const uint8_t *y)
{
    for (uint64_t i = 0; i < len; i += SECTOR) {
        size_t n = len - i < SECTOR ? (size_t)(len - i) : SECTOR;
        const uint8_t *px = x ? x + i : zero_sector, *py = y ? y + i : zero_sector;
        if (!memcmp(px, py, n))
            continue;
        size_t b = first_differing_byte(px, py, n);
        note_first(s, off, len, i, i + b, x, y);
        s->rep->mismatched_bytes += count_differing(px + b, py + b, n - b);
        int r = extent_add(s, off + i, n);
        if (r < 0 || !s->o->full)
            return r;
    }
    return 0;
}

/* ---- planning ---- */

static int side_status(bv_node *n, uint64_t off, uint64_t end, struct side_run *run,
                       bv_error **errp)
{
    uint64_t size = bv_node_size(n);
    if (off >= size) {                   /* past its end a side reads as zeros */
        *run = (struct side_run){ .end = end, .zero = true };
        return 0;
    }
    struct chain_status cs;
    int r = chain_status(n, off, size - off, &cs, errp);
    if (r < 0)
        return r;
    *run = (struct side_run){ .end = off + cs.pnum, .zero = cs.zero };
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
    struct cmp_slot *sl = &s->ring.slot[s->planned % CMP_SLOTS];
    if (s->planned >= CMP_SLOTS)         /* a dropped helper read may still be going on */
        wait_helper(s, sl, s->planned - CMP_SLOTS);
    sl->off = *off;
    sl->len = len;
    for (int k = 0; k < SIDES; k++) {
        sl->read[k] = !run[k].zero;
        sl->ret[k] = 0;
        s->rep->bytes_read += sl->read[k] ? len : 0;
    }
    atomic_store(&sl->b_state, B_STATE(s->planned, sl->read[SIDE_B] ? B_QUEUED : B_DONE));
    s->planned++;
    *off += len;
    return 0;
}

/* ---- comparing ---- */

/* Compare item sl, side B taken from bsl (sl or the spare). */
static int compare_slot(struct cmp_state *s, struct cmp_slot *sl, struct cmp_slot *bsl,
                        bv_error **errp)
{
    struct cmp_slot *from[SIDES] = { sl, bsl };
    for (int k = 0; k < SIDES; k++) {
        if (from[k]->ret[k] < 0) {
            bv_error_propagate(errp, &from[k]->err[k]);
            return from[k]->ret[k];
        }
    }
    const uint8_t *x = sl->read[SIDE_A] ? sl->buf[SIDE_A] : NULL;
    const uint8_t *y = sl->read[SIDE_B] ? bsl->buf[SIDE_B] : NULL;
    bool same = x && y ? !memcmp(x, y, sl->len) : buf_is_zero(x ? x : y, sl->len);
    int r = same ? 0 : scan_sectors(s, sl->off, sl->len, x, y);
    if (r < 0)
        return bv_error_setf(errp, -r, "out of memory for compare extents");
    progress(s, sl->off + sl->len, false);
    return 0;
}

/* Read side A, take side B, compare: the oldest planned item. */
static int consume_one(struct cmp_state *s, bv_error **errp)
{
    uint64_t i = s->consumed;
    struct cmp_slot *sl = &s->ring.slot[i % CMP_SLOTS];
    if (sl->read[SIDE_A])
        read_side(s, sl, SIDE_A);
    struct cmp_slot *bsl = sl->read[SIDE_B] ? take_side_b(s, sl, i) : sl;
    int r = compare_slot(s, sl, bsl, errp);
    s->consumed++;
    return r;
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
        /* refill when half the ring is free (or empty): readers wake once per batch */
        if (off < s->end && s->planned - s->consumed <= CMP_SLOTS / 2) {
            while (r == 0 && off < s->end && s->planned - s->consumed < CMP_SLOTS) {
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
    s.bufsize = s.end < CMP_CHUNK ? (size_t)((s.end + SECTOR - 1) / SECTOR * SECTOR)
                                  : CMP_CHUNK;
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
