/*
 * Private contract between the node layer (node.c) and the block drivers.
 *
 * A node stack for one image looks like this:
 *
 *     format node (raw | qcow2)  --backing-->  format node (read-only) --> ...
 *          |  file
 *     [filter nodes]              bv_open_opts.filters (blkdebug, ...), f[n-1] on top;
 *          |  file                  each passes through what it leaves NULL
 *     protocol node (file)        POSIX fd, or (remote) an object read through a callback
 *                                 and a block cache (bv/remote.h, bv_open_opts.layers)
 *
 * Drivers are `const struct bv_driver` tables, listed once in node.c's
 * driver table, where a format or a filter kind finds its driver.  node.c is
 * the only caller of their ops: the public bv_node_* functions check the contract
 * (ranges inside the virtual size, read-only nodes) before calling down.
 * Drivers reach their children only through the bv_child_* helpers below,
 * which have no virtual-size check (metadata may lie past end of file, and
 * reads there return zeros) and which forward any op a filter leaves NULL to
 * the filter's own file child.
 *
 * Events: a format driver calls bv_node_event(n->file, ev) just before the
 * request the event concerns.  The event goes to the first node down the
 * file chain whose driver has an `event` op (a filter); without one it is
 * dropped.
 *
 * Ownership: node.c allocates `opaque` (instance_size bytes, zeroed) before
 * open and frees it after close.  A driver's open may set n->size,
 * n->backing_name (malloc'd, freed by node.c) and n->backing_format.
 */
#ifndef BV_BLOCK_DRIVER_H
#define BV_BLOCK_DRIVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bv/block-events.h"
#include "bv/error.h"
#include "bv/image.h"

enum bv_driver_kind {
    BV_DRV_PROTOCOL,     /* talks to the host (file.c) */
    BV_DRV_FORMAT,       /* interprets an image format over its file child */
    BV_DRV_FILTER,       /* sits between a format node and its file child */
};

struct bv_driver {
    const char *name;
    enum bv_driver_kind kind;
    enum bv_format format;           /* FORMAT drivers only */
    enum bv_filter_kind filter;      /* FILTER drivers only */
    size_t instance_size;            /* bytes of n->opaque, zeroed by node.c */

    /* PROTOCOL: adopt fd (owned from then on, even on failure).
     * FORMAT: n->file, n->read_only and n->filename are set; parse, set n->size.
     * FILTER: see filter_open. */
    int (*open)(bv_node *n, int fd, bv_error **errp);
    /* FILTER: n->file (owned by n), n->size, n->read_only and n->filename are
     * set, spec->kind is this driver's; configure from spec.  On failure
     * node.c calls close and frees n with its file. */
    int (*filter_open)(bv_node *n, const struct bv_filter_spec *spec, bv_error **errp);
    /* Release instance state.  Called once; must not fail (write-back is done
     * by the flush node.c issues before close on writable nodes). */
    void (*close)(bv_node *n);

    int (*pread)(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp);
    int (*pwrite)(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                  bv_error **errp);
    int (*write_zeroes)(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp);
    int (*discard)(bv_node *n, uint64_t len, uint64_t off, bv_error **errp);
    /* FORMAT: write cached metadata back to the file child (no sync). */
    int (*flush_to_os)(bv_node *n, bv_error **errp);
    /* PROTOCOL: make everything written durable. */
    int (*flush)(bv_node *n, bv_error **errp);
    /* FORMAT: sets n->size on success.  PROTOCOL: file length. */
    int (*truncate)(bv_node *n, uint64_t size, bool allow_shrink, bv_error **errp);
    /* PROTOCOL: current length and allocated bytes of the host file. */
    int (*get_length)(bv_node *n, uint64_t *len, bv_error **errp);
    int (*get_allocated)(bv_node *n, uint64_t *bytes, bv_error **errp);
    int (*block_status)(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                        bv_error **errp);
    int (*info)(bv_node *n, struct bv_image_info *info, bv_error **errp);
    /* FORMAT: fill *out (zeroed by node.c; left empty on failure). */
    int (*snapshots)(bv_node *n, struct bv_snapshot_list *out, bv_error **errp);
    int (*check)(bv_node *n, bool repair, struct bv_check_result *res, bv_error **errp);
    uint32_t (*cluster_size)(const bv_node *n);
    /* FILTER: an event signalled by the format node above. */
    void (*event)(bv_node *n, enum bv_block_event ev);
    /* FILTER: free instance state (optional; before the file child is closed). */
};

struct bv_node {
    const struct bv_driver *drv;
    void *opaque;                    /* driver instance state, instance_size bytes */
    bv_node *file;                   /* FORMAT/FILTER: child (owned) */
    bv_node *backing;                /* FORMAT: backing node (owned, read-only) or NULL */
    char *filename;                  /* the image file: root-relative name when confined,
                                        canonical host path otherwise */
    uint64_t file_dev, file_ino;     /* PROTOCOL: identity of the open file (fstat) */
    char *backing_name;              /* FORMAT: as recorded in the image, or NULL */
    bool backing_hidden;             /* FORMAT: backing_name set but not opened
                                        (bv_open_opts.hidden_backing): writes behave as over it */
    enum bv_format backing_format;   /* FORMAT: recorded backing format, or NONE */
    uint64_t size;                   /* FORMAT: virtual size; PROTOCOL: length at open */
    bool read_only;
    bool no_sync;                    /* PROTOCOL: flush is a no-op (bv_open_opts.no_sync) */
    /* Writes since open / at the last flush: a flush with nothing written is a
     * no-op and signals no event (blkdebug state machines depend on it). */
    _Atomic uint64_t write_gen;
    _Atomic uint64_t flushed_gen;
};

/* ---- for drivers: I/O on a child (no virtual-size checks) ---- */
int bv_child_pread(bv_node *c, void *buf, uint64_t len, uint64_t off, bv_error **errp);
int bv_child_pwrite(bv_node *c, const void *buf, uint64_t len, uint64_t off, bv_error **errp);
int bv_child_write_zeroes(bv_node *c, uint64_t len, uint64_t off, int flags, bv_error **errp);
int bv_child_discard(bv_node *c, uint64_t len, uint64_t off, bv_error **errp);
int bv_child_flush(bv_node *c, bv_error **errp);
int bv_child_truncate(bv_node *c, uint64_t size, bv_error **errp);
int bv_child_length(bv_node *c, uint64_t *len, bv_error **errp);
int bv_child_block_status(bv_node *c, uint64_t off, uint64_t len, struct bv_block_status *bs,
                          bv_error **errp);
/* Signal ev to the first node down the file chain that listens. */
void bv_node_event(bv_node *file, enum bv_block_event ev);

/* ---- for nodes built around a child (filters; blkverify's constructor) ---- */
/* Wrap `file` (ownership passes to the new node, also on failure) in a node
 * of driver drv with zeroed instance state; *out is the new node.  No op is
 * called: a filter from bv_open_opts.filters is then configured by node.c
 * (filter_open). */
int bv_node_new_filter(const struct bv_driver *drv, bv_node *file, bv_node **out,
                       bv_error **errp);

/* The built-in drivers, each listed once in node.c's driver table. */
extern const struct bv_driver bv_drv_file;       /* file.c */
extern const struct bv_driver bv_drv_raw;        /* raw.c */
extern const struct bv_driver bv_drv_qcow2;      /* qcow2/qcow2.c */
extern const struct bv_driver bv_drv_blkdebug;   /* blkdebug.c */
extern const struct bv_driver bv_drv_blkverify;  /* blkverify.c (bv_blkverify_open) */
extern const struct bv_driver bv_drv_remote;     /* remote.c (a layer's object, bv/remote.h) */

/* Set up a new node of bv_drv_remote (n->filename set) over obj, which it owns from now on
 * (released by close, also after a failure here), with a reference to cache (remote.c). */
struct bv_remote_object;
struct bv_remote_cache;
int bv_remote_attach(bv_node *n, const struct bv_remote_object *obj,
                     struct bv_remote_cache *cache, bv_error **errp);

/* Probe the format of an opened protocol node by magic (raw if nothing matches). */
int bv_probe_format(bv_node *file, enum bv_format *fmt, bv_error **errp);

/* Open one layer whose name was recorded in an image (o->path: absolute or with
 * ".." allowed, still beneath o->root), relative to base_dir (node.c). */
int bv_node_open_recorded(const struct bv_open_opts *o, const char *base_dir, bv_node **out,
                          bv_error **errp);

/* qcow2 helpers behind the image operations (qcow2.c). */
int bv_qcow2_create(int fd, const struct bv_create_opts *o, uint64_t size, bv_error **errp);
int bv_qcow2_set_backing(bv_node *n, const char *backing, enum bv_format fmt, bv_error **errp);

#endif
