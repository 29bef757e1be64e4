/*
 * hbitmap: sparse hierarchical bitmap (interface and costs in hbitmap.h).
 *
 * Layout.  A radix tree of fan-out 512 over 4 KiB leaves:
 *
 *   level L-1   hb_node  child[512] | used[8] | full[8] | count
 *      ...         |  each child: NULL (all clear), HB_FULL (all set),
 *   level 1     hb_node   or a real node one level down
 *   level 0     hb_leaf  w[512] (32768 bits) | nz[8] | count
 *
 * A node at level l covers 2^(15 + 9 l) bits.  used/full are the summary
 * levels: bit i of used says child i has a set bit, bit i of full says child
 * i is all set; nz says which leaf words are non-zero.  Searches skip whole
 * subtrees through these 64-bit words.
 *
 * Invariant (canonical form): a real node or leaf is never all clear or all
 * set; normalize() replaces such a subtree with NULL or HB_FULL after every
 * change.  So "count == span" and "count == 0" never describe a real node,
 * and an empty bitmap owns no memory besides its handle.  Bits at or past
 * nbits are always clear, so a subtree reaching past nbits is never HB_FULL.
 */
#include "util/hbitmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LEAF_SHIFT 15u
#define LEAF_BITS  (1u << LEAF_SHIFT)
#define LEAF_WORDS (LEAF_BITS / 64u)
#define FAN_SHIFT  9u
#define FAN        (1u << FAN_SHIFT)
#define SUM_WORDS  (FAN / 64u)              /* == LEAF_WORDS / 64 */
#define MAX_LEVELS 6u                       /* 15 + 9*5 = 60 bits */
#define NONE       UINT64_MAX

struct hb_leaf {
    uint64_t w[LEAF_WORDS];
    uint64_t nz[SUM_WORDS];                 /* bit i: w[i] != 0 */
    uint32_t count;                         /* popcount of w */
};

struct hb_node {
    void *child[FAN];
    uint64_t used[SUM_WORDS];               /* bit i: child[i] != NULL */
    uint64_t full[SUM_WORDS];               /* bit i: child[i] == HB_FULL */
    uint64_t count;                         /* set bits in the subtree */
};

struct hbitmap {
    uint64_t size;                          /* bytes covered */
    uint64_t nbits;                         /* ceil(size >> gran_shift) */
    unsigned gran_shift;
    unsigned levels;                        /* root is at level levels-1 */
    void *root;
    uint64_t mem;                           /* bytes in nodes and leaves */
};

static const char hb_full_marker;
#define HB_FULL ((void *)&hb_full_marker)

static unsigned span_shift(unsigned level)
{
    return LEAF_SHIFT + FAN_SHIFT * level;
}

static uint64_t span_of(unsigned level)
{
    return 1ULL << span_shift(level);
}

static unsigned levels_for(uint64_t nbits)
{
    unsigned l = 1;
    while (l < MAX_LEVELS && nbits > span_of(l - 1))
        l++;
    return l;
}

static uint64_t nbits_for(uint64_t size, unsigned gran_shift)
{
    uint64_t n = size >> gran_shift;
    if (size & ((1ULL << gran_shift) - 1))
        n++;
    return n;
}

static uint64_t sub_count(const void *n, unsigned level)
{
    if (!n)
        return 0;
    if (n == HB_FULL)
        return span_of(level);
    return level ? ((const struct hb_node *)n)->count
                 : ((const struct hb_leaf *)n)->count;
}

static void sum_assign(uint64_t *sum, unsigned i, bool on)
{
    uint64_t bit = 1ULL << (i & 63);
    if (on)
        sum[i >> 6] |= bit;
    else
        sum[i >> 6] &= ~bit;
}

/* First index >= from in a SUM_WORDS summary whose bit is set (or clear
 * when invert); FAN when none. */
static unsigned sum_find(const uint64_t *sum, unsigned from, bool invert)
{
    for (unsigned w = from >> 6; w < SUM_WORDS; w++) {
        uint64_t v = invert ? ~sum[w] : sum[w];
        if (w == from >> 6)
            v &= ~0ULL << (from & 63);
        if (v)
            return w * 64 + (unsigned)__builtin_ctzll(v);
    }
    return FAN;
}

static void free_sub(struct hbitmap *hb, void *n, unsigned level)
{
    if (!n || n == HB_FULL)
        return;
    if (level == 0) {
        hb->mem -= sizeof(struct hb_leaf);
        free(n);
        return;
    }
    struct hb_node *nd = n;
    for (unsigned i = sum_find(nd->used, 0, false); i < FAN;
         i = sum_find(nd->used, i + 1, false))
        free_sub(hb, nd->child[i], level - 1);
    hb->mem -= sizeof(struct hb_node);
    free(nd);
}

static void node_child_update(struct hb_node *nd, unsigned i)
{
    sum_assign(nd->used, i, nd->child[i] != NULL);
    sum_assign(nd->full, i, nd->child[i] == HB_FULL);
}

/* Turn NULL / HB_FULL at *slot into a real node with the same content. */
static int materialize(struct hbitmap *hb, void **slot, unsigned level)
{
    if (*slot && *slot != HB_FULL)
        return 0;
    bool full = *slot == HB_FULL;
    if (level == 0) {
        struct hb_leaf *l = calloc(1, sizeof(*l));
        if (!l)
            return -ENOMEM;
        if (full) {
            memset(l->w, 0xff, sizeof(l->w));
            memset(l->nz, 0xff, sizeof(l->nz));
            l->count = LEAF_BITS;
        }
        hb->mem += sizeof(*l);
        *slot = l;
        return 0;
    }
    struct hb_node *nd = calloc(1, sizeof(*nd));
    if (!nd)
        return -ENOMEM;
    if (full) {
        for (unsigned i = 0; i < FAN; i++)
            nd->child[i] = HB_FULL;
        memset(nd->used, 0xff, sizeof(nd->used));
        memset(nd->full, 0xff, sizeof(nd->full));
        nd->count = span_of(level);
    }
    hb->mem += sizeof(*nd);
    *slot = nd;
    return 0;
}

/* Restore canonical form at *slot (see the file comment). */
static void normalize(struct hbitmap *hb, void **slot, unsigned level)
{
    void *n = *slot;
    if (!n || n == HB_FULL)
        return;
    uint64_t c = sub_count(n, level);
    if (c != 0 && c != span_of(level))
        return;
    free_sub(hb, n, level);
    *slot = c ? HB_FULL : NULL;
}

static void leaf_apply(struct hb_leaf *l, uint64_t s, uint64_t e, bool set,
                       uint64_t *changed)
{
    uint64_t w0 = s >> 6, w1 = (e - 1) >> 6, n = 0;
    for (uint64_t w = w0; w <= w1; w++) {
        uint64_t mask = ~0ULL;
        if (w == w0)
            mask &= ~0ULL << (s & 63);
        if (w == w1)
            mask &= ~0ULL >> (63 - ((e - 1) & 63));
        uint64_t old = l->w[w];
        uint64_t nw = set ? (old | mask) : (old & ~mask);
        n += (uint64_t)__builtin_popcountll(old ^ nw);
        l->w[w] = nw;
        sum_assign(l->nz, (unsigned)w, nw != 0);
    }
    l->count = set ? l->count + (uint32_t)n : l->count - (uint32_t)n;
    *changed += n;
}

static int sub_apply(struct hbitmap *hb, void **slot, unsigned level,
                     uint64_t base, uint64_t s, uint64_t e, bool set,
                     uint64_t *changed);

static int node_apply(struct hbitmap *hb, struct hb_node *nd, unsigned level,
                      uint64_t base, uint64_t s, uint64_t e, bool set,
                      uint64_t *changed)
{
    unsigned cs = span_shift(level - 1);
    uint64_t i0 = (s - base) >> cs, i1 = (e - 1 - base) >> cs;
    int r = 0;
    for (uint64_t i = i0; i <= i1 && r == 0; i++) {
        uint64_t cb = base + (i << cs);
        uint64_t ce = cb + (1ULL << cs);
        uint64_t before = *changed;
        r = sub_apply(hb, &nd->child[i], level - 1, cb, s > cb ? s : cb,
                      e < ce ? e : ce, set, changed);
        uint64_t d = *changed - before;
        nd->count = set ? nd->count + d : nd->count - d;
        node_child_update(nd, (unsigned)i);
    }
    return r;
}

/* Set or clear bits [s, e) of the subtree at *slot, which covers
 * [base, base + span); adds the number of bits flipped to *changed. */
static int sub_apply(struct hbitmap *hb, void **slot, unsigned level,
                     uint64_t base, uint64_t s, uint64_t e, bool set,
                     uint64_t *changed)
{
    void *n = *slot;
    uint64_t span = span_of(level);
    if (n == (set ? HB_FULL : NULL))
        return 0;
    if (s == base && e - base == span) {
        uint64_t c = sub_count(n, level);
        *changed += set ? span - c : c;
        free_sub(hb, n, level);
        *slot = set ? HB_FULL : NULL;
        return 0;
    }
    int r = materialize(hb, slot, level);
    if (r < 0)
        return r;
    if (level == 0)
        leaf_apply(*slot, s - base, e - base, set, changed);
    else
        r = node_apply(hb, *slot, level, base, s, e, set, changed);
    normalize(hb, slot, level);
    return r;
}

static int bits_apply(struct hbitmap *hb, uint64_t b0, uint64_t b1, bool set)
{
    uint64_t changed = 0;
    if (b1 > hb->nbits)
        b1 = hb->nbits;
    if (b0 >= b1)
        return 0;
    return sub_apply(hb, &hb->root, hb->levels - 1, 0, b0, b1, set, &changed);
}

static bool bit_get(const struct hbitmap *hb, uint64_t b)
{
    const void *n = hb->root;
    for (unsigned level = hb->levels - 1;; level--) {
        if (!n || n == HB_FULL)
            return n == HB_FULL;
        if (level == 0) {
            const struct hb_leaf *l = n;
            uint64_t o = b & (LEAF_BITS - 1);
            return (l->w[o >> 6] >> (o & 63)) & 1;
        }
        const struct hb_node *nd = n;
        n = nd->child[(b >> span_shift(level - 1)) & (FAN - 1)];
    }
}

static uint64_t leaf_next(const struct hb_leaf *l, uint64_t base, uint64_t b,
                          bool want_set)
{
    uint64_t o = b - base;
    unsigned w = (unsigned)(o >> 6);
    uint64_t v = want_set ? l->w[w] : ~l->w[w];
    v &= ~0ULL << (o & 63);
    while (!v) {
        if (want_set)
            w = sum_find(l->nz, w + 1, false);
        else
            w++;
        if (w >= LEAF_WORDS)
            return NONE;
        v = want_set ? l->w[w] : ~l->w[w];
    }
    return base + (uint64_t)w * 64 + (uint64_t)__builtin_ctzll(v);
}

/* First bit >= b in the subtree (covering [base, base+span)) that is set
 * (want_set) or clear; NONE when there is none. */
static uint64_t sub_next(const void *n, unsigned level, uint64_t base,
                         uint64_t b, bool want_set)
{
    if (n == (want_set ? NULL : HB_FULL))
        return NONE;
    if (n == (want_set ? HB_FULL : NULL))
        return b;
    if (level == 0)
        return leaf_next(n, base, b, want_set);
    const struct hb_node *nd = n;
    unsigned cs = span_shift(level - 1);
    const uint64_t *sum = want_set ? nd->used : nd->full;
    unsigned i = (unsigned)((b - base) >> cs);
    for (i = sum_find(sum, i, !want_set); i < FAN;
         i = sum_find(sum, i + 1, !want_set)) {
        uint64_t cb = base + ((uint64_t)i << cs);
        uint64_t r = sub_next(nd->child[i], level - 1, cb, b > cb ? b : cb,
                              want_set);
        if (r != NONE)
            return r;
    }
    return NONE;
}

/* First set (or clear) bit >= b below nbits, NONE when there is none. */
static uint64_t bits_next(const struct hbitmap *hb, uint64_t b, bool want_set)
{
    if (b >= hb->nbits)
        return NONE;
    uint64_t r = sub_next(hb->root, hb->levels - 1, 0, b, want_set);
    return r < hb->nbits ? r : NONE;
}

int hbitmap_new(uint64_t size, unsigned gran_shift, struct hbitmap **out)
{
    if (gran_shift > HBITMAP_MAX_GRAN_SHIFT || size > HBITMAP_MAX_SIZE)
        return -EINVAL;
    uint64_t nbits = nbits_for(size, gran_shift);
    if (nbits > HBITMAP_MAX_BITS)
        return -EINVAL;
    struct hbitmap *hb = calloc(1, sizeof(*hb));
    if (!hb)
        return -ENOMEM;
    hb->size = size;
    hb->nbits = nbits;
    hb->gran_shift = gran_shift;
    hb->levels = levels_for(nbits);
    *out = hb;
    return 0;
}

void hbitmap_free(struct hbitmap *hb)
{
    if (!hb)
        return;
    free_sub(hb, hb->root, hb->levels - 1);
    free(hb);
}

static int clone_sub(struct hbitmap *dst, const void *n, unsigned level,
                     void **out)
{
    if (!n || n == HB_FULL) {
        *out = (void *)n;
        return 0;
    }
    size_t sz = level ? sizeof(struct hb_node) : sizeof(struct hb_leaf);
    void *c = malloc(sz);
    if (!c)
        return -ENOMEM;
    memcpy(c, n, sz);
    dst->mem += sz;
    *out = c;
    if (level == 0)
        return 0;
    struct hb_node *nd = c;
    int r = 0;
    for (unsigned i = 0; i < FAN; i++) {
        void *src_child = nd->child[i];
        nd->child[i] = NULL;                /* so a failure frees cleanly */
        if (r == 0)
            r = clone_sub(dst, src_child, level - 1, &nd->child[i]);
    }
    return r;
}

int hbitmap_copy(const struct hbitmap *src, struct hbitmap **out)
{
    struct hbitmap *hb = calloc(1, sizeof(*hb));
    if (!hb)
        return -ENOMEM;
    *hb = *src;
    hb->mem = 0;
    hb->root = NULL;
    int r = clone_sub(hb, src->root, src->levels - 1, &hb->root);
    if (r < 0) {
        hbitmap_free(hb);
        return r;
    }
    *out = hb;
    return 0;
}

uint64_t hbitmap_size(const struct hbitmap *hb) { return hb->size; }
unsigned hbitmap_gran_shift(const struct hbitmap *hb) { return hb->gran_shift; }
uint64_t hbitmap_nbits(const struct hbitmap *hb) { return hb->nbits; }

uint64_t hbitmap_count(const struct hbitmap *hb)
{
    return sub_count(hb->root, hb->levels - 1);
}

bool hbitmap_is_empty(const struct hbitmap *hb)
{
    return hb->root == NULL;
}

uint64_t hbitmap_mem_usage(const struct hbitmap *hb)
{
    return hb->mem + sizeof(*hb);
}

/* [off, off+len) clipped to the size; false when empty. */
static bool clip(const struct hbitmap *hb, uint64_t off, uint64_t len,
                 uint64_t *end)
{
    uint64_t e = len > UINT64_MAX - off ? UINT64_MAX : off + len;
    if (e > hb->size)
        e = hb->size;
    *end = e;
    return off < e;
}

int hbitmap_set(struct hbitmap *hb, uint64_t off, uint64_t len)
{
    uint64_t end;
    if (!clip(hb, off, len, &end))
        return 0;
    return bits_apply(hb, off >> hb->gran_shift,
                      ((end - 1) >> hb->gran_shift) + 1, true);
}

int hbitmap_reset(struct hbitmap *hb, uint64_t off, uint64_t len)
{
    uint64_t end;
    if (!clip(hb, off, len, &end))
        return 0;
    uint64_t b0 = nbits_for(off, hb->gran_shift);
    uint64_t b1 = end == hb->size ? hb->nbits : end >> hb->gran_shift;
    return bits_apply(hb, b0, b1, false);
}

void hbitmap_reset_all(struct hbitmap *hb)
{
    free_sub(hb, hb->root, hb->levels - 1);
    hb->root = NULL;
}

bool hbitmap_get(const struct hbitmap *hb, uint64_t off)
{
    return off < hb->size && bit_get(hb, off >> hb->gran_shift);
}

static int64_t next_common(const struct hbitmap *hb, uint64_t off,
                           uint64_t end, bool want_set)
{
    if (end > hb->size)
        end = hb->size;
    if (off >= end)
        return -1;
    uint64_t b = bits_next(hb, off >> hb->gran_shift, want_set);
    if (b == NONE)
        return -1;
    uint64_t r = b << hb->gran_shift;
    if (r < off)
        r = off;
    return r < end ? (int64_t)r : -1;
}

int64_t hbitmap_next_set(const struct hbitmap *hb, uint64_t off, uint64_t end)
{
    return next_common(hb, off, end, true);
}

int64_t hbitmap_next_clear(const struct hbitmap *hb, uint64_t off, uint64_t end)
{
    return next_common(hb, off, end, false);
}

bool hbitmap_next_run(const struct hbitmap *hb, uint64_t off, uint64_t end,
                      uint64_t *run_off, uint64_t *run_len)
{
    if (end > hb->size)
        end = hb->size;
    int64_t s = hbitmap_next_set(hb, off, end);
    if (s < 0)
        return false;
    int64_t c = hbitmap_next_clear(hb, (uint64_t)s, end);
    uint64_t e = c < 0 ? end : (uint64_t)c;
    *run_off = (uint64_t)s;
    *run_len = e - (uint64_t)s;
    return true;
}

int hbitmap_merge(struct hbitmap *dst, const struct hbitmap *src)
{
    uint64_t pos = 0, ro, rl;
    int r = 0;
    while (r == 0 && pos < dst->size &&
           hbitmap_next_run(src, pos, dst->size, &ro, &rl)) {
        r = hbitmap_set(dst, ro, rl);
        pos = ro + rl;
    }
    return r;
}

/* Add root levels until the tree covers nbits. */
static int grow_levels(struct hbitmap *hb, unsigned want)
{
    while (hb->levels < want) {
        if (hb->root) {
            void *child = hb->root;
            hb->root = NULL;
            int r = materialize(hb, &hb->root, hb->levels);
            if (r < 0) {
                hb->root = child;
                return r;
            }
            struct hb_node *nd = hb->root;
            nd->child[0] = child;
            nd->count = sub_count(child, hb->levels - 1);
            node_child_update(nd, 0);
        }
        hb->levels++;
    }
    return 0;
}

/* Drop root levels the (already cleared) tail no longer needs. */
static void shrink_levels(struct hbitmap *hb, unsigned want)
{
    while (hb->levels > want) {
        struct hb_node *nd = hb->root;
        if (nd) {
            /* canonical form: a root with bits only below a child's span is
             * a real node whose other children are NULL */
            hb->root = nd->child[0];
            hb->mem -= sizeof(*nd);
            free(nd);
        }
        hb->levels--;
    }
}

int hbitmap_truncate(struct hbitmap *hb, uint64_t new_size)
{
    if (new_size > HBITMAP_MAX_SIZE)
        return -EINVAL;
    uint64_t nbits = nbits_for(new_size, hb->gran_shift);
    if (nbits > HBITMAP_MAX_BITS)
        return -EINVAL;
    unsigned want = levels_for(nbits);
    if (nbits < hb->nbits) {
        int r = bits_apply(hb, nbits, hb->nbits, false);
        if (r < 0)
            return r;
        shrink_levels(hb, want);
    } else {
        int r = grow_levels(hb, want);
        if (r < 0)
            return r;
    }
    hb->nbits = nbits;
    hb->size = new_size;
    return 0;
}

uint64_t hbitmap_serialized_size(const struct hbitmap *hb)
{
    return (hb->nbits + 7) / 8;
}

/* Set bits [from, to) of buf (LSB first). */
static void buf_set_bits(uint8_t *buf, uint64_t from, uint64_t to)
{
    while (from < to && (from & 7)) {
        buf[from >> 3] |= (uint8_t)(1u << (from & 7));
        from++;
    }
    if (to - from >= 8) {
        memset(buf + (from >> 3), 0xff, (size_t)((to - from) >> 3));
        from += (to - from) & ~7ULL;
    }
    while (from < to) {
        buf[from >> 3] |= (uint8_t)(1u << (from & 7));
        from++;
    }
}

static bool window_ok(const struct hbitmap *hb, uint64_t byte_off, size_t len)
{
    return len <= hbitmap_serialized_size(hb) &&
           byte_off <= hbitmap_serialized_size(hb) - len;
}

int hbitmap_serialize(const struct hbitmap *hb, uint64_t byte_off,
                      uint8_t *buf, size_t len)
{
    if (!window_ok(hb, byte_off, len))
        return -EINVAL;
    memset(buf, 0, len);
    uint64_t b0 = byte_off * 8;
    uint64_t b1 = b0 + (uint64_t)len * 8;
    if (b1 > hb->nbits)
        b1 = hb->nbits;
    for (uint64_t b = bits_next(hb, b0, true); b < b1;
         b = bits_next(hb, b, true)) {
        uint64_t c = bits_next(hb, b, false);
        if (c > b1)
            c = b1;
        buf_set_bits(buf, b - b0, c - b0);
        b = c;
    }
    return 0;
}

/* First bit >= from and < n of buf equal to want; n when none. */
static uint64_t buf_next_bit(const uint8_t *buf, uint64_t from, uint64_t n,
                             bool want)
{
    uint8_t skip = want ? 0x00 : 0xff;
    while (from < n) {
        if (!(from & 7) && buf[from >> 3] == skip) {
            from += 8;
            continue;
        }
        if (((buf[from >> 3] >> (from & 7)) & 1) == want)
            return from;
        from++;
    }
    return n;
}

int hbitmap_deserialize(struct hbitmap *hb, uint64_t byte_off,
                        const uint8_t *buf, size_t len)
{
    if (!window_ok(hb, byte_off, len))
        return -EINVAL;
    uint64_t b0 = byte_off * 8;
    uint64_t n = (uint64_t)len * 8;
    if (b0 + n > hb->nbits) {
        n = hb->nbits - b0;
        if (buf_next_bit(buf, n, (uint64_t)len * 8, true) < (uint64_t)len * 8)
            return -EINVAL;                 /* set tail bits */
    }
    int r = bits_apply(hb, b0, b0 + n, false);
    for (uint64_t b = buf_next_bit(buf, 0, n, true); r == 0 && b < n;
         b = buf_next_bit(buf, b, n, true)) {
        uint64_t c = buf_next_bit(buf, b, n, false);
        r = bits_apply(hb, b0 + b, b0 + c, true);
        b = c;
    }
    return r;
}
