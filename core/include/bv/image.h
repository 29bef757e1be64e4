/*
 * Images: open a raw or qcow2 file (with its backing chain) as a node and
 * read, write, zero, discard, flush, resize it; create, check, compare,
 * convert, rebase and map images.  This is the block engine's public face for
 * the rest of core (drives, jobs), the service and bvimg.
 *
 * A bv_node is one open layer stack: the format node (raw or qcow2) over its
 * protocol node (a POSIX file, possibly wrapped by filters such as blkdebug),
 * with an optional backing node (opened read-only, recursively).
 *
 * Threads: a node may be used from several threads at once.  Each format
 * driver guards its metadata (caches, allocation) with its own mutex; data
 * cluster reads and writes to distinct clusters run without it.  Open, close,
 * truncate and create are not concurrent with anything else on that node:
 * the caller (a drive) serialises them.
 *
 * Errors: every function returns 0 (or a count where stated) or a negative
 * errno, and fills *errp when errp is non-NULL.  Malformed images give
 * -EINVAL/-EIO with a message, never a crash; structural damage found while
 * reading gives kind BV_ERR_CORRUPT with the offset.
 */
#ifndef BV_IMAGE_H
#define BV_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/error.h"

typedef struct bv_node bv_node;
struct bv_blkdebug_config;               /* bv/blkdebug.h */
struct bv_root;                          /* bv/path.h */
struct bv_file_id;                       /* bv/path.h */
struct bv_layer_resolver;                /* bv/remote.h */

enum bv_format {
    BV_FMT_NONE = 0,                     /* "probe" when opening a top image */
    BV_FMT_RAW,
    BV_FMT_QCOW2,
};

/* The image formats' names, once: "raw", "qcow2", NULL-terminated, index i
 * naming enum bv_format i + 1 (the shape strict JSON enum tables take). */
#define BV_FORMAT_NAMES "raw", "qcow2"
extern const char *const bv_format_names[];
static inline enum bv_format bv_format_from_index(int i) { return (enum bv_format)(i + 1); }

/* "raw" / "qcow2"; NULL for BV_FMT_NONE. */
const char *bv_format_name(enum bv_format f);
/* Returns BV_FMT_NONE for an unknown name. */
enum bv_format bv_format_parse(const char *name);

/* Limits */
#define BV_MAX_CHAIN_DEPTH   256          /* backing chain depth; a loop is an error */
#define BV_MAX_IMAGE_SIZE    (1ULL << 56) /* 64 PiB, as qcow2's offset bits allow */
#define BV_MIN_CLUSTER_SIZE  512
#define BV_MAX_CLUSTER_SIZE  (2u << 20)
#define BV_DEFAULT_CLUSTER   65536

/*
 * Filters a node stack may hold between the top format node and its file,
 * typed by kind.  core/block/node.c finds each kind's driver in its one
 * driver table (a filter's name is its driver's name); adding a filter is a
 * kind here, a member of the spec's union and a table entry.
 */
enum bv_filter_kind {
    BV_FILTER_NONE = 0,                  /* a zeroed spec: refused */
    BV_FILTER_BLKDEBUG,
};

struct bv_filter_spec {
    enum bv_filter_kind kind;
    union {                              /* the member named by kind; borrowed for the open */
        const struct bv_blkdebug_config *blkdebug;   /* BV_FILTER_BLKDEBUG (required) */
    };
};

#define BV_MAX_FILTERS 4
struct bv_filter_list {
    unsigned n;                          /* at most BV_MAX_FILTERS */
    struct bv_filter_spec f[BV_MAX_FILTERS];   /* f[0] sits on the file, f[n-1] under the
                                                  format node */
};

/* A list holding one blkdebug filter with rules cfg, or no filter when cfg is
 * NULL (a compound literal: it lives until the end of the enclosing block). */
#define BV_FILTERS_BLKDEBUG(cfg)                                                  \
    (&(const struct bv_filter_list){ .n = (cfg) != NULL,                           \
        .f = { { .kind = BV_FILTER_BLKDEBUG, .blkdebug = (cfg) } } })

/* "blkdebug"; NULL for BV_FILTER_NONE or an unknown kind. */
const char *bv_filter_name(enum bv_filter_kind kind);

struct bv_open_opts {
    const char *path;            /* the file; relative paths are relative to root if set, else cwd */
    enum bv_format format;       /* BV_FMT_NONE: probe by magic (top image only) */
    const struct bv_root *root;  /* if set: this file and every backing file are resolved beneath
                                    it (bv/path.h: ".." and symlinks leading out are refused,
                                    file names are root-relative) */
    bool read_only;
    bool no_backing;             /* do not open the backing chain (rebase -u, info of one layer) */
    bool hidden_backing;         /* with no_backing: writes still behave as over the recorded
                                    backing file (zero writes are recorded as zero clusters,
                                    never left to fall through to it); reads of unallocated
                                    ranges return zeros, so only for writers of whole clusters
                                    (an incremental link whose older links are not at hand) */
    const struct bv_filter_list *filters;  /* if set: filters between the top format node and
                                              its file (backing files get none) */
    bool no_sync;                /* cache=unsafe: never fdatasync this image, not even for the
                                    qcow2 metadata ordering; flush and close only write cached
                                    metadata back to the OS.  A crash may leave the file
                                    inconsistent: only for outputs redone after a crash
                                    (qemu-img convert's default) */
    const struct bv_layer_resolver *layers;  /* if set: asked for each layer (top and backing
                                                files) whether it is a local file or a remote
                                                object read through a block cache (bv/remote.h;
                                                remote layers are read-only, a remote layer's
                                                file id is (0, 0)) */
};

/* Open an image.  On success *out owns the node (close with bv_node_close). */
int bv_node_open(const struct bv_open_opts *o, bv_node **out, bv_error **errp);
/* Flushes (if writable; no fdatasync with no_sync) and frees; the backing chain is
 * closed too.  NULL is fine.
 * Returns the flush result (the node is freed either way). */
int bv_node_close(bv_node *n, bv_error **errp);

/* Data path.  Ranges must lie inside the virtual size (-EINVAL otherwise).
 * Reads of unallocated parts fall through to the backing chain, then zeros. */
int bv_node_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp);

enum {
    BV_WRITE_COMPRESSED = 1 << 0,   /* qcow2: whole clusters to unallocated space, compressed
                                       if that saves space (as qemu-img convert -c) */
    BV_WRITE_FUA        = 1 << 1,   /* durable on return */
};
int bv_node_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                   bv_error **errp);

enum {
    BV_ZERO_MAY_UNMAP = 1 << 0,     /* may free host space (qcow2: zero cluster without offset) */
};
/* After this the range reads as zeros, whatever the backing chain holds. */
int bv_node_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp);
/* Hint: the range's data is no longer needed.  qcow2 v3: becomes zero
 * clusters (reads zero); raw: punched hole.  Partial clusters are zeroed. */
int bv_node_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp);
/* Make every completed write durable (metadata then fdatasync). */
int bv_node_flush(bv_node *n, bv_error **errp);

/* Change the virtual size; shrinking needs allow_shrink.  qcow2 needs a
 * multiple of 512 ("The new size must be a multiple of 512"). */
int bv_node_truncate(bv_node *n, uint64_t size, bool allow_shrink, bv_error **errp);

uint64_t bv_node_size(const bv_node *n);
enum bv_format bv_node_format(const bv_node *n);
/* 0 for raw (no cluster notion). */
uint32_t bv_node_cluster_size(const bv_node *n);
/* Root-relative name for a confined open, canonical host path otherwise. */
const char *bv_node_filename(const bv_node *n);
/* Identity (st_dev, st_ino) of the file under this node's filters. */
void bv_node_file_id(const bv_node *n, struct bv_file_id *id);
bv_node *bv_node_backing(const bv_node *n);   /* borrowed; NULL if none */

/* Block status of [off, off+len) in THIS layer: sets *pnum to the length of
 * the leading run (>0, ≤len) that shares one status.  Runs are coalesced
 * (a 1 GiB unallocated region is one answer, not 16384). */
enum {
    BV_BS_DATA      = 1 << 0,   /* reads from data stored in this layer */
    BV_BS_ZERO      = 1 << 1,   /* reads as zeros (known without reading) */
    BV_BS_ALLOCATED = 1 << 2,   /* decided by this layer (not the backing chain) */
    BV_BS_COMPRESSED= 1 << 3,
};
struct bv_block_status {
    uint64_t pnum;
    int flags;
    uint64_t host_offset;       /* for BV_BS_DATA, uncompressed: file offset; else 0 */
};
int bv_node_block_status(bv_node *n, uint64_t off, uint64_t len,
                         struct bv_block_status *bs, bv_error **errp);

/* Read [host_off, host_off+len) of n's own image file, beneath the format
 * layer: for a reader that took host offsets from bv_node_block_status
 * (BV_BS_DATA, not compressed) and wants the bytes without the format
 * driver's per-request work (the checksum verify).  Only where the protocol
 * node sits directly under the format node n: a filter must see every
 * request, so with one between this is -ENOTSUP and the caller reads through
 * n; also for a node that is not qcow2 or raw (blkverify: its file child is
 * the reference image, its block status the test image's) and for a writable
 * node (a cluster could be freed and reused between the block status and the
 * read; reads through the node wait for such overwrites).  Backing nodes are
 * read-only.  Past the end of the file it reads zeros, as a format driver
 * would. */
int bv_node_pread_host(bv_node *n, void *buf, uint64_t len, uint64_t host_off,
                       bv_error **errp);

/* ---- image operations (the engine behind bvimg and /api/v1/images) ---- */

struct bv_create_opts {
    const char *path;            /* created (or truncated); relative to root if set */
    const struct bv_root *root;  /* confinement as in bv_open_opts (backing must be inside too);
                                    with a root an existing file is -EEXIST (O_EXCL), without
                                    one it is overwritten as qemu-img create does */
    enum bv_format format;
    uint64_t size;               /* 0 with a backing file: take the backing image's size */
    uint32_t cluster_size;       /* 0 = 64 KiB; qcow2 only */
    const char *backing;         /* qcow2 only; stored as given */
    enum bv_format backing_format;  /* required with backing */
    bool compat_v2;              /* tests only: write a v2 (compat=0.10) header */
    bool compression_zstd;       /* qcow2 v3: compression_type=zstd (default zlib) */
    bool extended_l2;            /* qcow2 v3: subclusters (cluster size >= 16 KiB) */
};
/* Sizes are rounded up to a multiple of 512, as qemu-img create does. */
int bv_image_create(const struct bv_create_opts *o, bv_error **errp);

struct bv_image_info {
    enum bv_format format;
    uint64_t virtual_size;
    uint64_t actual_size;        /* bytes allocated on the host (st_blocks*512) */
    uint32_t cluster_size;       /* 0 for raw */
    int qcow2_version;           /* 0 for raw */
    char backing[1024];          /* as recorded in the image; "" if none */
    enum bv_format backing_format;
    bool dirty;                  /* qcow2 dirty bit set */
    bool corrupt;                /* qcow2 corrupt bit set */
    uint64_t incompatible_features, compatible_features, autoclear_features;
    int refcount_bits;
    bool compression_zstd;       /* qcow2: compression_type=zstd */
    bool extended_l2;            /* qcow2: extended L2 entries (subclusters) */
};
int bv_node_info(bv_node *n, struct bv_image_info *info, bv_error **errp);

/* An internal snapshot of a qcow2 image (made by qemu-img snapshot -c or a VM's
 * savevm), as qemu-img info lists it. */
struct bv_snapshot_info {
    char *id, *name;             /* NUL-terminated; owned by the list */
    uint64_t vm_state_size;      /* bytes of saved VM state (0 for disk-only snapshots) */
    uint32_t date_sec, date_nsec;   /* wall-clock time it was taken (Unix epoch) */
    uint64_t vm_clock_ns;        /* guest clock at that time */
    uint64_t icount;             /* instruction count, UINT64_MAX when not recorded */
};
struct bv_snapshot_list {
    uint32_t count;              /* at most 65536 (the qcow2 table's bound) */
    struct bv_snapshot_info *sn; /* count entries in table order; NULL when count is 0 */
};
/* The snapshots of n's own image (not its backing files): none for raw and
 * for qcow2 images without any.  A table that does not fit the file is
 * corruption.  *out is always initialised; on success it owns what it holds
 * (bv_snapshot_list_free, also fine on an empty list), on failure it is empty. */
int bv_node_snapshots(bv_node *n, struct bv_snapshot_list *out, bv_error **errp);
void bv_snapshot_list_free(struct bv_snapshot_list *l);

#define BV_CHECK_MAX_MESSAGES 64
struct bv_check_result {
    uint64_t corruptions;
    uint64_t leaks;
    uint64_t check_errors;       /* I/O errors while checking */
    uint64_t allocated_clusters;
    uint64_t total_clusters;
    uint64_t image_end_offset;
    uint64_t leaks_fixed;
    unsigned nmessages;          /* the first BV_CHECK_MAX_MESSAGES, qemu-img wording */
    char *messages[BV_CHECK_MAX_MESSAGES];
};
/* Check metadata consistency (qcow2: refcounts against real use).  With
 * repair_leaks, leaked clusters get their refcount lowered.  raw: -ENOTSUP. */
int bv_image_check(bv_node *n, bool repair_leaks, struct bv_check_result *res, bv_error **errp);
void bv_check_result_free(struct bv_check_result *res);

/* Compare what two images read as (chains followed).  Without strict, a size
 * difference counts only if the extra part is not all zeros.  *first_diff is
 * set to the first differing byte offset rounded down to 512, or UINT64_MAX.
 * A thin wrapper over bv_image_compare_ex (stop at the first difference). */
int bv_image_compare(bv_node *a, bv_node *b, bool strict, bool *identical,
                     uint64_t *first_diff, bv_error **errp);

/* Sector granularity of differences ("offset rounded down to 512" is relative to
 * the start of the run being compared, as qemu-img does; runs start on 512-byte
 * boundaries except where an image size is not a multiple of 512). */
#define BV_COMPARE_SECTOR       512u
#define BV_COMPARE_SAMPLE       16u       /* bytes of each side kept at the first difference */
#define BV_COMPARE_MAX_EXTENTS  65536u    /* ceiling for bv_compare_opts.max_extents */

struct bv_compare_opts {
    bool strict;                 /* sizes must be equal (else the larger tail must read zeros) */
    bool full;                   /* scan everything (extents, byte counts); else stop at the
                                    first difference, as qemu-img compare */
    size_t max_extents;          /* full: extents kept in the report (≤ BV_COMPARE_MAX_EXTENTS);
                                    the rest are still counted in total_extents */
    /* Both optional, called from the calling thread: progress every 64 MiB or so and
     * once at the end (done ≤ total = the larger size, non-decreasing); should_stop
     * before each piece is planned (≤ 128 KiB read per side, or a run both sides
     * leave zero), true makes the call fail with -ECANCELED. */
    void (*progress)(void *opaque, uint64_t done, uint64_t total);
    bool (*should_stop)(void *opaque);
    void *opaque;
    /* Tuning, for benches and tests (0/false: the defaults, bench/README.md). */
    size_t chunk;                /* bytes per item (rounded down to 512; ≤ 8 MiB) */
    unsigned slots;              /* items planned ahead (2..64) */
    bool no_helper;              /* no second thread: the caller does every item */
    bool no_direct;              /* always read through the nodes (no bv_node_pread_host) */
};

struct bv_compare_extent {
    uint64_t offset, length;
};

struct bv_compare_report {
    bool identical;
    bool size_mismatch;
    uint64_t size_a, size_b;
    uint64_t first_diff;         /* first difference rounded down to a sector, or UINT64_MAX */
    uint64_t first_diff_byte;    /* the exact first differing byte, or UINT64_MAX */
    uint32_t sample_len;         /* bytes in sample_a/b from first_diff_byte (0 if none) */
    uint8_t sample_a[BV_COMPARE_SAMPLE], sample_b[BV_COMPARE_SAMPLE];
    /* full scans only (a stopping scan counts what it saw up to the first difference) */
    uint64_t mismatched_bytes;   /* bytes that differ, byte by byte; in strict mode the
                                    larger image's tail counts whole */
    struct bv_compare_extent *extents;  /* owned: differing sectors, merged, ascending */
    size_t n_extents;            /* kept (≤ max_extents) */
    uint64_t total_extents;      /* all merged extents, kept or not */
    /* cost and coverage */
    uint64_t scanned;            /* [0, scanned) was compared (< total after an error) */
    uint64_t bytes_read;         /* read from both sides together */
    uint64_t bytes_skipped;      /* settled by block status alone (both sides zero) */
    uint64_t bytes_direct;       /* of bytes_read, read straight from a layer's file at the host
                                    offset block status gave (bv_node_pread_host) */
};

/* Compare a and b (each with its backing chain).  *rep is always initialised;
 * after a failure (-ECANCELED when should_stop said so) it holds what was found
 * in [0, rep->scanned).  Free it with bv_compare_report_free in every case.
 * Runs one reader thread per side for the duration of the call. */
int bv_image_compare_ex(bv_node *a, bv_node *b, const struct bv_compare_opts *o,
                        struct bv_compare_report *rep, bv_error **errp);
void bv_compare_report_free(struct bv_compare_report *rep);

struct bv_convert_opts {
    enum bv_format out_format;
    uint32_t cluster_size;       /* 0 = default */
    bool compress;               /* qcow2 output only */
    bool compression_zstd;       /* qcow2 output: compression_type=zstd */
    bool extended_l2;            /* qcow2 output: extended L2 entries */
    bool flush;                  /* fdatasync the output before returning (durable) */
    unsigned threads;            /* 0 = number of cores */
};
/* Copy what src reads as (its whole chain) into a new image at dst_path,
 * skipping zero and unallocated areas. */
int bv_image_convert(bv_node *src, const char *dst_path, const struct bv_convert_opts *o,
                     bv_error **errp);

/* qemu-img rebase -u: rewrite the backing file name and format only. */
int bv_image_rebase_unsafe(const char *path, const struct bv_root *root, const char *backing,
                           enum bv_format backing_format, bv_error **errp);

struct bv_map_entry {
    uint64_t start, length;
    int depth;                   /* layer that decides it: 0 = top */
    bool data, zero, compressed;
    uint64_t offset;             /* host offset when data && !compressed, else UINT64_MAX */
};
/* Walk the whole chain's mapping; cb returns non-zero to stop (that value is returned). */
int bv_image_map(bv_node *n, int (*cb)(const struct bv_map_entry *e, void *opaque),
                 void *opaque, bv_error **errp);

#endif
