/*
 * qcow2 driver internals, shared by qcow2.c (open/create/header),
 * qcow2-cluster.c (guest-to-host mapping, data path), qcow2-subcluster.c
 * (extended L2 bitmaps), qcow2-refcount.c
 * (allocation, frees, check) and qcow2-cache.c (L2/refblock caches).
 *
 * On-disk layout facts are in /work/shared/reference/qemu-semantics.md §2.
 *
 * Locking.  struct qcow2_state.lock (one per node) guards everything in the
 * state below that can change after open: the L1 table and its dirty span,
 * the reftable, both caches, the allocation hints (free_hint, free_byte),
 * the reserve list, the pending-free list, header fields (size, autoclear,
 * l1/reftable offsets), `failed`, and the concurrency state (inflight,
 * io_unlocked, drainers; `cond` is waited on with it).  Functions named
 * *_locked expect it held and assert so (BV_ASSERT_HELD, bv/lock.h, debug
 * builds).  Cache entry pointers are valid only while it is held without a
 * break: whoever drops it looks tables up again.
 *
 * What runs without the lock (qcow2-cluster.c):
 *   - reads of data and compressed clusters, after mapping them under it;
 *   - writes to clusters we own (L2 entry COPIED, refcount 1), in place;
 *   - writes to freshly allocated clusters, including the COW read of the
 *     old content (backing, zero, compressed) for partial head/tail clusters;
 *   - deflate, and the write of the compressed bytes.
 * Allocation (refcounts raised in the cache) happens under the lock before
 * the unlocked data write, and the L2 entries are set under it again after,
 * so a mapping never points at unwritten data (the crash-safe order in
 * qcow2-refcount.c is unchanged: an interrupted step leaks at worst).
 *
 * Two guards make the unlocked parts safe:
 *   1. In-flight allocations.  A writer that allocates links a struct
 *      qcow2_inflight (guest cluster range, on its stack) into `inflight`
 *      for as long as it works unlocked.  Any writer, compressed writer,
 *      zero or discard touching one of those clusters waits on `cond` until
 *      the range is gone (a writer whose range merely runs into one stops
 *      its step short of it), so one guest cluster is never allocated twice
 *      and its old host space cannot be freed under a COW read.  A reader of
 *      such a cluster still sees the old mapping, hence the old data (backing
 *      or zeros), until the new data is written and mapped.
 *   2. Unlocked I/O count.  Reads and in-place writes that touch host
 *      clusters an overwrite or discard elsewhere could free are counted in
 *      `io_unlocked`.  Applying queued frees (the only way a cluster can be
 *      reused) first drains that count (qcow2_drain_io_locked); while a drain
 *      waits (`drainers` > 0) no new counted I/O starts, so it cannot starve.
 * Waiting on `cond` drops the lock: only wait_clear/zero/drain points do it,
 * always before a mapping is looked at, never with a cache pointer held.
 * qcow2_flush_metadata_locked also drops it around its refblock sync, so
 * writers are not stalled for the length of an fdatasync.
 *
 * Lock order: a node's lock, then its backing node's (reads from the backing
 * during COW run unlocked anyway); never the other way round.
 */
#ifndef BV_QCOW2_INT_H
#define BV_QCOW2_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/driver.h"
#include "bv/lock.h"
#include "util/endian.h"

#define QCOW2_MAGIC 0x514649fbu

/* The fixed part of the v3 header (v2 uses the first 72 bytes). */
struct qcow2_header {
    uint32_t magic;
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    uint8_t padding[7];
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_header) == 112, "qcow2 header is 112 bytes");

#define QCOW2_V2_HEADER_LEN   72
#define QCOW2_V3_HEADER_LEN   112

/* Header field byte offsets used for in-place updates. */
#define QH_SIZE_OFF           24
#define QH_L1_SIZE_OFF        36
#define QH_L1_OFFSET_OFF      40
#define QH_REFTABLE_OFF       48
#define QH_INCOMPAT_OFF       72
#define QH_AUTOCLEAR_OFF      88

#define QCOW2_INCOMPAT_DIRTY      (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT    (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE  (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESS   (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2      (1ULL << 4)

/* Header byte 104: how compressed clusters are encoded (incompat bit 3 when not zlib). */
#define QCOW2_COMPRESS_ZLIB       0
#define QCOW2_COMPRESS_ZSTD       1

/*
 * Extended L2 entries (incompat bit 4): each L2 entry is 128 bits, the
 * standard 64-bit descriptor followed by a subcluster bitmap.  A cluster has
 * 32 subclusters; bit x of the bitmap's low half says subcluster x is
 * allocated (read from host + x * subcluster size), bit 32 + x that it reads
 * as zeros, neither that it reads from the backing file.  Both set is
 * corruption.  The standard entry's ZERO bit is reserved (0); a compressed
 * cluster has a zero bitmap.
 */
#define QCOW2_SUBCLUSTERS         32u
#define QCOW2_SC_ALL_ALLOC        0x00000000ffffffffULL
#define QCOW2_SC_ALL_ZERO         0xffffffff00000000ULL
#define QCOW2_EXTL2_MIN_CLUSTER   (16u << 10)

#define QCOW2_EXT_END             0x00000000u
#define QCOW2_EXT_BACKING_FORMAT  0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE   0x6803f857u
#define QCOW2_EXT_BITMAPS         0x23852875u
#define QCOW2_EXT_CRYPTO          0x0537be77u
#define QCOW2_EXT_DATA_FILE       0x44415441u

#define L1E_OFFSET_MASK   0x00fffffffffffe00ULL
#define L1E_RESERVED_MASK 0x7f000000000001ffULL
#define L2E_OFFSET_MASK   0x00fffffffffffe00ULL
#define REFT_OFFSET_MASK  0xfffffffffffffe00ULL
#define QCOW_OFLAG_COPIED     (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW_OFLAG_ZERO       (1ULL << 0)

#define QCOW2_MAX_L1_BYTES        (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES  (8u << 20)
#define QCOW2_MAX_OFFSET          (1ULL << 56)

/* One cached metadata table (an L2 table or a refcount block). */
struct qcow2_cache_entry {
    uint64_t offset;          /* host offset of the table; 0 = slot empty */
    uint8_t *data;            /* cluster_size bytes, on-disk (big-endian) format */
    uint64_t lru;
    bool dirty;
    int next;                 /* hash chain, -1 = end */
};

struct qcow2_cache {
    bool is_l2;               /* L2 tables must not reach disk before refblocks */
    bool unsynced;            /* a table of this kind was written since the last sync
                                 (a sync outside qcow2_sync_locked leaves it set: one
                                 more sync than needed, never one less) */
    unsigned cap;             /* entries, fixed at open */
    unsigned nbuckets;
    struct qcow2_cache_entry *e;
    int *buckets;
    uint64_t clock;
};

/* A host byte range whose clusters each lose one reference at the next
 * metadata flush, after the mappings that dropped them are on disk. */
struct qcow2_free {
    uint64_t off, len;
};

/* A guest cluster range [start, end) being allocated by a writer working
 * unlocked; lives on the writer's stack while linked in qcow2_state.inflight. */
struct qcow2_inflight {
    uint64_t start, end;
    struct qcow2_inflight *next;
};

#define QCOW2_MAX_RESERVE 16
#define QCOW2_MAX_PENDING_FREES 4096

struct qcow2_state {
    bv_mutex lock;                     /* see Locking above; *_locked assert it */
    pthread_cond_t cond;               /* an in-flight range ended, or a drain changed */
    struct qcow2_inflight *inflight;   /* allocations whose data is being written */
    unsigned io_unlocked;              /* counted reads/in-place writes running unlocked */
    unsigned drainers;                 /* threads waiting for io_unlocked == 0 */
    int version;
    uint32_t cluster_bits, cluster_size;
    uint32_t l2_bits;                  /* log2(entries per L2 table) */
    uint32_t refcount_order, rb_bits;  /* rb_bits: log2(entries per refblock) */
    uint64_t refcount_max;
    uint64_t incompat, compat, autoclear;
    uint32_t header_length;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint32_t csize_shift;              /* compressed descriptor layout */
    uint64_t csize_mask, coffset_mask;
    uint8_t compression_type;          /* QCOW2_COMPRESS_* */
    bool extl2;                        /* 128-bit L2 entries with subcluster bitmaps */
    uint32_t l2e_shift;                /* log2(bytes per L2 entry): 3, or 4 with extl2 */
    uint32_t sc_bits;                  /* log2(bytes per allocation unit): subcluster or cluster */

    uint64_t *l1;                      /* host order */
    uint32_t l1_size;
    uint64_t l1_offset;
    uint32_t l1_dirty_lo, l1_dirty_hi; /* dirty span [lo, hi) */

    uint64_t *reftable;                /* host order */
    uint64_t reftable_entries;
    uint64_t reftable_offset;
    uint32_t reftable_clusters;

    uint8_t *exts;                     /* extensions kept verbatim on rewrite */
    uint32_t exts_len;

    struct qcow2_cache l2, rb;
    uint64_t free_hint;                /* no free cluster below this index */
    uint64_t free_byte;                /* compressed packing cursor, 0 = none */
    struct { uint64_t start, end; } reserve[QCOW2_MAX_RESERVE];
    unsigned nreserve;
    struct qcow2_free *frees;
    size_t nfrees;
    bool header_writable;              /* autoclear cleared on disk */
    bool failed;                       /* a metadata write failed: refuse until reopen */
};

static inline struct qcow2_state *q_state(bv_node *n) { return n->opaque; }

/* Entry i of an L2 table in on-disk form t: the standard descriptor, and
 * (extended L2 only, else 0) its subcluster bitmap. */
static inline uint64_t qcow2_l2e(const struct qcow2_state *s, const uint8_t *t, uint64_t i)
{
    return ld_be64(t + (i << s->l2e_shift));
}

static inline uint64_t qcow2_l2bm(const struct qcow2_state *s, const uint8_t *t, uint64_t i)
{
    return s->extl2 ? ld_be64(t + (i << s->l2e_shift) + 8) : 0;
}

/* Bits of a subcluster bitmap for subclusters [a, b) (b <= 32), allocated half. */
static inline uint64_t qcow2_sc_mask(uint32_t a, uint32_t b)
{
    return b > a ? (((1ULL << (b - a)) - 1) << a) : 0;
}

/* ---- qcow2-cache.c ---- */
int qcow2_cache_init(struct qcow2_cache *c, bool is_l2, unsigned cap, bv_error **errp);
void qcow2_cache_destroy(struct qcow2_cache *c);
/* Table at host offset off, loaded (or zero-filled if fresh) into the cache.
 * The pointer stays valid until the next qcow2_cache_get on the same cache. */
int qcow2_cache_get_locked(bv_node *n, struct qcow2_cache *c, uint64_t off, bool fresh,
                           struct qcow2_cache_entry **out, bv_error **errp);
void qcow2_cache_drop_locked(bv_node *n, struct qcow2_cache *c, uint64_t off);
int qcow2_cache_flush_locked(bv_node *n, struct qcow2_cache *c, bool *wrote, bv_error **errp);
bool qcow2_cache_has_dirty(const struct qcow2_cache *c);
/* Write dirty refblocks and sync if any refcount write is not yet durable:
 * what must precede the write of an L2 table, an L1 entry or a reftable entry. */
int qcow2_cache_sync_refcounts_locked(bv_node *n, bv_error **errp);
/* Sync the image file; clears both caches' unsynced flags. */
int qcow2_sync_locked(bv_node *n, bv_error **errp);
bool qcow2_cache_contains(const struct qcow2_cache *c, uint64_t off);

/* ---- qcow2-refcount.c ---- */
int qcow2_rc_get_locked(bv_node *n, uint64_t idx, uint64_t *rc, bv_error **errp);
int qcow2_rc_update_locked(bv_node *n, uint64_t idx, int64_t delta, bv_error **errp);
/* Allocate up to `want` contiguous clusters (exactly `want` if exact);
 * *first is the host offset, *got the number (>= 1). */
int qcow2_alloc_clusters_locked(bv_node *n, uint64_t want, bool exact, uint64_t *first,
                                uint64_t *got, bv_error **errp);
/* Allocate `len` bytes (< cluster size) for compressed data. */
int qcow2_alloc_bytes_locked(bv_node *n, uint64_t len, uint64_t *off, bv_error **errp);
int qcow2_queue_free_locked(bv_node *n, uint64_t off, uint64_t len, bv_error **errp);
/* Write caches and the L1 back in crash-safe order, then apply queued frees.
 * May drop the lock for a while (syncs, drains): callers hold no cache pointer. */
int qcow2_flush_metadata_locked(bv_node *n, bv_error **errp);
int qcow2_check(bv_node *n, bool repair, struct bv_check_result *res, bv_error **errp);

/* ---- qcow2-cluster.c ---- */
/* The one decoder of a compressed cluster descriptor: host bytes [*off,
 * *off + *len) that hold the compressed data (sector-rounded, as qcow2
 * stores it; the stream may end before).  And its encoder, for data of len
 * bytes at off. */
void qcow2_compressed_range(const struct qcow2_state *s, uint64_t l2e, uint64_t *off,
                            uint64_t *len);
uint64_t qcow2_compressed_entry(const struct qcow2_state *s, uint64_t off, uint64_t len);
int qcow2_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp);
int qcow2_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                 bv_error **errp);
int qcow2_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp);
int qcow2_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp);
int qcow2_block_status(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                       bv_error **errp);
int qcow2_truncate(bv_node *n, uint64_t size, bool allow_shrink, bv_error **errp);
/* Wait (dropping the lock meanwhile) until no counted unlocked I/O runs. */
void qcow2_drain_io_locked(bv_node *n);
/* L2 table for l1 index (allocating one if alloc); *e NULL if unallocated. */
int qcow2_get_l2_locked(bv_node *n, uint64_t l1i, bool alloc, struct qcow2_cache_entry **e,
                        bv_error **errp);

/* ---- shared by qcow2-cluster.c and qcow2-subcluster.c ---- */
/* What a cluster (or, with extended L2, a subcluster) reads from. */
enum q_type { Q_UNALLOC, Q_ZERO, Q_NORMAL, Q_COMPRESSED };

/* Type of a standard L2 descriptor (with extended L2 the bitmap decides
 * between data, zeros and unallocated: qcow2_sc_unit_status). */
static inline enum q_type qcow2_entry_type(const struct qcow2_state *s, uint64_t e)
{
    if (e & QCOW_OFLAG_COMPRESSED)
        return Q_COMPRESSED;
    if ((e & QCOW_OFLAG_ZERO) && s->version >= 3 && !s->extl2)
        return Q_ZERO;
    return (e & L2E_OFFSET_MASK) ? Q_NORMAL : Q_UNALLOC;
}

/* Entry i of a cached L2 table, and its bitmap (extended L2; else 0). */
static inline uint64_t qcow2_l2_get(const struct qcow2_state *s, const struct qcow2_cache_entry *e,
                                    uint64_t i)
{
    return qcow2_l2e(s, e->data, i);
}

static inline uint64_t qcow2_l2_get_bm(const struct qcow2_state *s,
                                       const struct qcow2_cache_entry *e, uint64_t i)
{
    return qcow2_l2bm(s, e->data, i);
}

/* Entry i := v (and, with extended L2, its bitmap := bm). */
static inline void qcow2_l2_set(const struct qcow2_state *s, struct qcow2_cache_entry *e,
                                uint64_t i, uint64_t v, uint64_t bm)
{
    st_be64(e->data + (i << s->l2e_shift), v);
    if (s->extl2)
        st_be64(e->data + (i << s->l2e_shift) + 8, bm);
    e->dirty = true;
}

/*
 * One step of a write: a run of clusters inside one L2 table that are either
 * all owned (COPIED, contiguous on the host: written in place) or all to be
 * replaced by `k` freshly allocated contiguous clusters.  Planned and
 * finished under the lock; the data moves without it.
 */
struct qcow2_wstep {
    uint64_t ci, l1i, l2i;       /* first guest cluster; its L1/L2 indices */
    uint64_t k;                  /* clusters in the step */
    uint64_t head;               /* offset of the first byte in cluster ci */
    uint64_t bytes;              /* guest bytes the step writes */
    uint64_t host;               /* host offset of cluster ci (owned or new) */
    bool owned;
    bool cow;                    /* owned, extended L2: fills a partly written unallocated
                                  * subcluster; one cluster, held in flight */
    uint64_t old_head, old_tail; /* fresh: old entries of the first/last cluster (COW);
                                  * cow: old_head is cluster ci's entry */
    uint64_t old_head_bm, old_tail_bm;   /* their subcluster bitmaps */
    uint64_t new_head_bm, new_tail_bm;   /* fresh: bitmaps of the first/last new cluster */
    struct qcow2_inflight rec;   /* fresh or cow: the in-flight range, linked while unlocked */
};

/* Is any of guest clusters [ci, ci + cnt) being allocated (unlocked)? */
bool qcow2_inflight_overlaps(const struct qcow2_state *s, uint64_t ci, uint64_t cnt);

/* ---- qcow2-subcluster.c ---- */
/* What allocation unit sc (a subcluster; 0 without extended L2) of the
 * cluster mapped by (ent, bm) reads from, and its host offset if data. */
int qcow2_sc_unit_status(const struct qcow2_state *s, uint64_t ent, uint64_t bm, uint32_t sc,
                         enum q_type *t, uint64_t *host, bv_error **errp);
/* Whether a fresh cluster replacing old is written only where touched. */
bool qcow2_sc_fresh_sub(const struct qcow2_state *s, uint64_t old);
/* Whether the subcluster holding byte pos of (old, bm) already holds data there. */
bool qcow2_sc_unit_allocated(const struct qcow2_state *s, uint64_t old, uint64_t bm,
                             uint64_t pos);
/* Allocated-half bitmap bits of the subclusters bytes [from, from + cnt) touch. */
uint64_t qcow2_sc_touched_mask(const struct qcow2_state *s, uint64_t from, uint64_t cnt);
/* Bitmap of a fresh cluster replacing (old, oldbm) with bytes [from, from + cnt) written. */
uint64_t qcow2_sc_fresh_bitmap(const struct qcow2_state *s, uint64_t old, uint64_t oldbm,
                               uint64_t from, uint64_t cnt);
/* Owned step: shorten it, or make it a one-cluster cow step, for partly
 * written unallocated subclusters at its ends. */
void qcow2_sc_plan_owned(const struct qcow2_state *s, struct qcow2_wstep *st,
                         const struct qcow2_cache_entry *e, uint64_t len);
/* Bitmap of the step's new cluster i. */
uint64_t qcow2_sc_fresh_bm_of(const struct qcow2_state *s, const struct qcow2_wstep *st,
                              uint64_t i);
/* Owned step written: its touched subclusters become allocated. */
int qcow2_sc_mark_owned_locked(bv_node *n, const struct qcow2_wstep *st, bv_error **errp);
/* New (entry, bitmap) for a whole cluster being zeroed or discarded. */
void qcow2_sc_zeroed_entry(const struct qcow2_state *s, uint64_t old, uint64_t bm, bool unmap,
                           bool discard, bool backing, uint64_t *nv, uint64_t *nbm);
/* Zero bits for whole subclusters [off, off + len) of one cluster where
 * possible; *done false: the caller writes zeros. */
int qcow2_sc_zero_locked(bv_node *n, uint64_t off, uint64_t len, bool *done, bv_error **errp);

/* ---- qcow2.c ---- */
int qcow2_write_header_fields_locked(bv_node *n, bv_error **errp);
int qcow2_prepare_write_locked(bv_node *n, bv_error **errp);
int qcow2_mark_corrupt_locked(bv_node *n, uint64_t off, const char *what, bv_error **errp);
int qcow2_corrupt(bv_error **errp, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* L1 entries needed for size bytes; l2_bits = log2(entries per L2 table). */
uint64_t qcow2_l1_entries_for(uint64_t size, uint32_t cluster_bits, uint32_t l2_bits);

/* ---- qcow2-snapshot.c (internal snapshots, read side) ---- */
struct qcow2_snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id, *name;                   /* NUL-terminated copies */
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t icount;                   /* UINT64_MAX when not recorded */
};
/* The snapshot table: *count entries (caller frees with qcow2_snapshots_free),
 * *table_bytes the bytes the table occupies.  Corruption if it does not fit. */
int qcow2_snapshots_read_locked(bv_node *n, struct qcow2_snapshot **out, uint32_t *count,
                                uint64_t *table_bytes, bv_error **errp);
void qcow2_snapshots_free(struct qcow2_snapshot *sn, uint32_t count);
/* The driver's snapshots op: the table as public entries (takes the lock). */
int qcow2_snapshot_list(bv_node *n, struct bv_snapshot_list *out, bv_error **errp);

#endif
