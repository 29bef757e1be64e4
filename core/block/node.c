/*
 * The node layer: builds node stacks (protocol, the filters of the open
 * options, format, backing chain) from its one driver table, and is the only
 * caller of driver ops.  Every public data
 * call is checked here (range inside the virtual size, writable node) so the
 * drivers can trust their arguments.
 *
 * Opening a chain: the top image may be probed by magic; a backing image is
 * opened with the format recorded in its overlay (never probed, so a raw
 * file cannot pretend to be qcow2), relative to the overlay's directory,
 * read-only, at most BV_MAX_CHAIN_DEPTH deep, and a file already in the
 * chain (same st_dev/st_ino) is a loop.  With a root, every file is opened
 * beneath it (bv/path.h) and node file names are root-relative; a backing
 * name is resolved relative to its overlay's name, so ".." walks physically
 * from there and may not climb out of the root.
 */
#include "block/driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "bv/path.h"
#include "bv/remote.h"
#include "util/checked.h"

const char *const bv_format_names[] = { BV_FORMAT_NAMES, NULL };
#define N_FORMATS (sizeof(bv_format_names) / sizeof(bv_format_names[0]) - 1)
_Static_assert(N_FORMATS == BV_FMT_QCOW2, "one name per enum bv_format after BV_FMT_NONE");

const char *bv_format_name(enum bv_format f)
{
    if (f == BV_FMT_NONE || (unsigned)f > N_FORMATS)
        return NULL;
    return bv_format_names[f - 1];
}

enum bv_format bv_format_parse(const char *name)
{
    for (unsigned i = 0; name && i < N_FORMATS; i++)
        if (strcmp(bv_format_names[i], name) == 0)
            return bv_format_from_index((int)i);
    return BV_FMT_NONE;
}

/* ---------------- the driver table ---------------- */

/* Every block driver, once.  A format or a filter kind finds its driver here
 * (adding a filter is adding its driver to this list); blkverify is built by
 * bv_blkverify_open and found by no lookup (its format is BV_FMT_NONE). */
static const struct bv_driver *const drivers[] = {
    &bv_drv_file,
    &bv_drv_raw,
    &bv_drv_qcow2,
    &bv_drv_blkdebug,
    &bv_drv_blkverify,
    &bv_drv_remote,
};
#define N_DRIVERS (sizeof(drivers) / sizeof(drivers[0]))

static const struct bv_driver *format_driver(enum bv_format f)
{
    for (unsigned i = 0; f != BV_FMT_NONE && i < N_DRIVERS; i++)
        if (drivers[i]->kind == BV_DRV_FORMAT && drivers[i]->format == f)
            return drivers[i];
    return NULL;
}

static const struct bv_driver *filter_driver(enum bv_filter_kind kind)
{
    for (unsigned i = 0; kind != BV_FILTER_NONE && i < N_DRIVERS; i++)
        if (drivers[i]->kind == BV_DRV_FILTER && drivers[i]->filter == kind)
            return drivers[i];
    return NULL;
}

const char *bv_filter_name(enum bv_filter_kind kind)
{
    const struct bv_driver *drv = filter_driver(kind);
    return drv ? drv->name : NULL;
}

/* ---------------- node lifetime ---------------- */

static int node_alloc(const struct bv_driver *drv, bv_node **out, bv_error **errp)
{
    bv_node *n = calloc(1, sizeof(*n));
    if (n && drv->instance_size) {
        n->opaque = calloc(1, drv->instance_size);
        if (!n->opaque) {
            free(n);
            n = NULL;
        }
    }
    if (!n)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    n->drv = drv;
    *out = n;
    return 0;
}

/* Free n and everything below it; no flush. */
static void node_free(bv_node *n)
{
    if (!n)
        return;
    if (n->drv->close)
        n->drv->close(n);
    node_free(n->file);
    node_free(n->backing);
    free(n->opaque);
    free(n->filename);
    free(n->backing_name);
    free(n);
}

int bv_node_new_filter(const struct bv_driver *drv, bv_node *file, bv_node **out, bv_error **errp)
{
    bv_node *n = NULL;
    int r = node_alloc(drv, &n, errp);
    if (r < 0) {
        node_free(file);
        return r;
    }
    n->file = file;
    n->size = file->size;
    n->read_only = file->read_only;
    n->filename = file->filename ? strdup(file->filename) : NULL;
    *out = n;
    return 0;
}

/* ---------------- child I/O: filters pass through what they leave NULL ---------------- */

#define PASS(c, op)                                                        \
    while ((c) && (c)->drv->kind == BV_DRV_FILTER && !(c)->drv->op)        \
        (c) = (c)->file;                                                   \
    if (!(c) || !(c)->drv->op)                                             \
        return bv_error_setf(errp, ENOTSUP, "operation not supported");

int bv_child_pread(bv_node *c, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    PASS(c, pread);
    return len ? c->drv->pread(c, buf, len, off, errp) : 0;
}

int bv_child_pwrite(bv_node *c, const void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    PASS(c, pwrite);
    return len ? c->drv->pwrite(c, buf, len, off, 0, errp) : 0;
}

int bv_child_write_zeroes(bv_node *c, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    PASS(c, write_zeroes);
    return len ? c->drv->write_zeroes(c, len, off, flags, errp) : 0;
}

int bv_child_discard(bv_node *c, uint64_t len, uint64_t off, bv_error **errp)
{
    PASS(c, discard);
    return len ? c->drv->discard(c, len, off, errp) : 0;
}

int bv_child_flush(bv_node *c, bv_error **errp)
{
    PASS(c, flush);
    return c->no_sync ? 0 : c->drv->flush(c, errp);
}

int bv_child_truncate(bv_node *c, uint64_t size, bv_error **errp)
{
    PASS(c, truncate);
    return c->drv->truncate(c, size, true, errp);
}

int bv_child_length(bv_node *c, uint64_t *len, bv_error **errp)
{
    PASS(c, get_length);
    return c->drv->get_length(c, len, errp);
}

int bv_child_block_status(bv_node *c, uint64_t off, uint64_t len, struct bv_block_status *bs,
                          bv_error **errp)
{
    PASS(c, block_status);
    return c->drv->block_status(c, off, len, bs, errp);
}

void bv_node_event(bv_node *file, enum bv_block_event ev)
{
    while (file && !file->drv->event)
        file = file->file;
    if (file)
        file->drv->event(file, ev);
}

/* ---------------- open ---------------- */

struct chain_ctx {
    const struct bv_root *root;
    bool no_backing;
    bool hidden_backing;
    bool no_sync;
    const struct bv_layer_resolver *layers;   /* may place layers on remote objects */
    int depth;
    struct bv_file_id ids[BV_MAX_CHAIN_DEPTH + 1];   /* the files above this layer */
};

/* Identify the file behind fd; a directory or a file already in the chain
 * above is refused. */
static int check_file(const struct chain_ctx *c, int fd, const char *path,
                      struct bv_file_id *id, bv_error **errp)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return bv_error_setf(errp, errno, "Could not open '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return bv_error_setf(errp, EISDIR, "'%s' is a directory", path);
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    for (int i = 0; i < c->depth; i++)          /* (0, 0): a remote layer, no file */
        if ((c->ids[i].dev || c->ids[i].ino) && c->ids[i].dev == id->dev &&
            c->ids[i].ino == id->ino)
            return bv_error_setf(errp, ELOOP, "Backing file loop: '%s' is already in the chain",
                                 path);
    return 0;
}

/* The layer named name (resolved) reads from obj: a remote protocol node. */
static int open_remote(const struct chain_ctx *c, char *name, const struct bv_remote_object *obj,
                       bv_node **out, bv_error **errp)
{
    bv_node *n = NULL;
    int r = node_alloc(&bv_drv_remote, &n, errp);
    if (r < 0) {
        if (obj->release)
            obj->release(obj->opaque);
        free(name);
        return r;
    }
    n->filename = name;
    n->read_only = true;
    r = bv_remote_attach(n, obj, c->layers->cache, errp);   /* owns obj from here */
    if (r < 0) {
        node_free(n);
        return r;
    }
    *out = n;
    return 0;
}

/* Ask the resolver where the layer lives: 1 a local file, 0 *out is its remote node. */
static int resolve_layer(const struct chain_ctx *c, const char *base_dir, const char *path,
                         unsigned pflags, bool read_only, bv_node **out, bv_error **errp)
{
    char *name = NULL;
    struct bv_remote_object obj = {0};
    int r = bv_path_name(c->root, base_dir, path, pflags, &name, errp);
    if (r == 0)
        r = c->layers->resolve(c->layers->opaque, name, &obj, errp);
    if (r == 0 && !read_only) {
        if (obj.release)
            obj.release(obj.opaque);
        r = bv_error_setf(errp, EROFS, "'%s' is a remote object: it opens read-only", name);
    }
    if (r != 0) {
        free(name);
        return r;
    }
    return open_remote(c, name, &obj, out, errp);
}

static int open_protocol(const struct chain_ctx *c, const char *base_dir, const char *path,
                         unsigned pflags, bool read_only, bv_node **out, bv_error **errp)
{
    if (c->layers) {
        int lr = resolve_layer(c, base_dir, path, pflags, read_only, out, errp);
        if (lr <= 0)
            return lr;
    }
    int fd = -1;
    char *name = NULL;
    bv_node *n = NULL;
    struct bv_file_id id;
    int r = bv_path_open(c->root, base_dir, path, pflags, read_only ? O_RDONLY : O_RDWR, 0,
                         &fd, &name, errp);
    if (r < 0)
        return r;
    r = check_file(c, fd, path, &id, errp);
    if (r < 0)
        goto fail;
    r = node_alloc(&bv_drv_file, &n, errp);
    if (r < 0)
        goto fail;
    n->filename = name;
    n->read_only = read_only;
    n->no_sync = c->no_sync;
    n->file_dev = id.dev;
    n->file_ino = id.ino;
    name = NULL;
    r = n->drv->open(n, fd, errp);
    fd = -1;
    if (r < 0)
        goto fail;
    *out = n;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    free(name);
    node_free(n);
    return r;
}

static int open_layer(struct chain_ctx *c, const char *base_dir, const char *path,
                      unsigned pflags, enum bv_format fmt, bool read_only,
                      const struct bv_filter_list *filters, bv_node **out, bv_error **errp);

static int open_backing(struct chain_ctx *c, bv_node *n, bv_error **errp)
{
    if (n->backing_name && c->no_backing && c->hidden_backing && c->depth == 0)
        n->backing_hidden = true;
    if (!n->backing_name || c->no_backing)
        return 0;
    if (c->depth + 1 >= BV_MAX_CHAIN_DEPTH)
        return bv_error_setf(errp, EINVAL, "backing chain of '%s' is deeper than %d",
                             n->filename, BV_MAX_CHAIN_DEPTH);
    if (n->backing_format == BV_FMT_NONE)
        return bv_error_setf(errp, EINVAL,
                             "Backing file '%s' of '%s' has no recorded format; set it with "
                             "rebase -u -F", n->backing_name, n->filename);
    char *dir = bv_path_dirname(n->filename);
    if (!dir)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    bv_node_file_id(n, &c->ids[c->depth++]);
    int r = open_layer(c, dir, n->backing_name, BV_PATH_RECORDED, n->backing_format, true, NULL,
                       &n->backing, errp);
    c->depth--;
    free(dir);
    if (r < 0)
        bv_error_prepend(errp, "Could not open backing file '%s'", n->backing_name);
    return r;
}

/* Wrap *file in a node of spec's filter.  *file is always the top of what
 * was built: the filter node, or NULL after a failure (which freed it). */
static int insert_filter(const struct bv_filter_spec *spec, bv_node **file, bv_error **errp)
{
    const struct bv_driver *drv = filter_driver(spec->kind);
    if (!drv)
        return bv_error_setf(errp, EINVAL, "unknown filter kind %d", (int)spec->kind);
    bv_node *n = NULL;
    int r = bv_node_new_filter(drv, *file, &n, errp);   /* owns *file, also on failure */
    *file = n;
    if (r == 0 && drv->filter_open)
        r = drv->filter_open(n, spec, errp);
    if (r < 0) {
        node_free(n);
        *file = NULL;
    }
    return r;
}

/* Stack the filters of list on *file, f[0] first (same contract for *file). */
static int insert_filters(const struct bv_filter_list *list, bv_node **file, bv_error **errp)
{
    unsigned n = list ? list->n : 0;
    if (n > BV_MAX_FILTERS)
        return bv_error_setf(errp, EINVAL, "too many filters (%u, at most %d)", n,
                             BV_MAX_FILTERS);
    int r = 0;
    for (unsigned i = 0; r == 0 && i < n; i++)
        r = insert_filter(&list->f[i], file, errp);
    return r;
}

static int open_layer(struct chain_ctx *c, const char *base_dir, const char *path,
                      unsigned pflags, enum bv_format fmt, bool read_only,
                      const struct bv_filter_list *filters, bv_node **out, bv_error **errp)
{
    bv_node *file = NULL, *n = NULL;
    int r = open_protocol(c, base_dir, path, pflags, read_only, &file, errp);
    if (r < 0)
        goto fail;
    if (fmt == BV_FMT_NONE) {
        r = bv_probe_format(file, &fmt, errp);
        if (r < 0)
            goto fail;
    }
    r = insert_filters(filters, &file, errp);
    if (r < 0)
        goto fail;
    const struct bv_driver *drv = format_driver(fmt);
    if (!drv) {
        r = bv_error_setf(errp, EINVAL, "Unknown file format");
        goto fail;
    }
    r = node_alloc(drv, &n, errp);
    if (r < 0)
        goto fail;
    n->file = file;
    file = NULL;
    n->read_only = read_only;
    n->filename = strdup(n->file->filename);
    if (!n->filename) {
        r = bv_error_setf(errp, ENOMEM, "out of memory");
        goto fail;
    }
    r = drv->open(n, -1, errp);
    if (r < 0)
        goto fail;
    r = open_backing(c, n, errp);
    if (r < 0)
        goto fail;
    *out = n;
    return 0;
fail:
    node_free(file);
    node_free(n);
    return r;
}

static int open_top(const struct bv_open_opts *o, const char *base_dir, unsigned pflags,
                    bv_node **out, bv_error **errp)
{
    *out = NULL;
    if (!o || !o->path)
        return bv_error_setf(errp, EINVAL, "no image path given");
    struct chain_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    c->root = o->root;
    c->no_backing = o->no_backing;
    c->hidden_backing = o->hidden_backing;
    c->no_sync = o->no_sync;
    c->layers = o->layers;
    if (c->layers && (!c->layers->resolve || !c->layers->cache)) {
        free(c);
        return bv_error_setf(errp, EINVAL, "a layer resolver needs a resolve function and a "
                             "cache");
    }
    int r = open_layer(c, base_dir, o->path, pflags, o->format, o->read_only, o->filters, out,
                       errp);
    free(c);
    return r;
}

int bv_node_open(const struct bv_open_opts *o, bv_node **out, bv_error **errp)
{
    return open_top(o, NULL, 0, out, errp);
}

int bv_node_open_recorded(const struct bv_open_opts *o, const char *base_dir, bv_node **out,
                          bv_error **errp)
{
    return open_top(o, base_dir, BV_PATH_RECORDED, out, errp);
}

void bv_node_file_id(const bv_node *n, struct bv_file_id *id)
{
    while (n && n->file)
        n = n->file;
    id->dev = n ? n->file_dev : 0;
    id->ino = n ? n->file_ino : 0;
}

int bv_node_close(bv_node *n, bv_error **errp)
{
    if (!n)
        return 0;
    int r = 0;
    if (!n->read_only)
        r = bv_node_flush(n, errp);
    node_free(n);
    return r;
}

/* ---------------- public data path ---------------- */

static int check_req(bv_node *n, uint64_t len, uint64_t off, bool write, bv_error **errp)
{
    if (!n || n->drv->kind != BV_DRV_FORMAT)
        return bv_error_setf(errp, EINVAL, "not an image node");
    if (write && n->read_only)
        return bv_error_setf(errp, EROFS, "Block node is read-only");
    if (!ck_range(off, len, n->size))
        return bv_error_setf(errp, EINVAL, "request [%llu, +%llu) lies outside the image "
                             "(size %llu)", (unsigned long long)off, (unsigned long long)len,
                             (unsigned long long)n->size);
    return 0;
}

/* A write was attempted: the next flush must write metadata back.  Also
 * after a failure, since a write that fails part way (a compressed write
 * reaching an allocated cluster, an I/O error in a later step) has already
 * updated cached tables and refcounts for its first part; skipping the
 * flush then dropped them at close and left leaked clusters (found by
 * fuzz_qcow2_write). */
static void wrote(bv_node *n)
{
    atomic_fetch_add(&n->write_gen, 1);
}

int bv_node_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    int r = check_req(n, len, off, false, errp);
    if (r < 0 || len == 0)
        return r;
    return n->drv->pread(n, buf, len, off, errp);
}

int bv_node_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                   bv_error **errp)
{
    int r = check_req(n, len, off, true, errp);
    if (r < 0 || len == 0)
        return r;
    r = n->drv->pwrite(n, buf, len, off, flags, errp);
    wrote(n);                    /* failed too: it may have changed metadata */
    if (r >= 0 && (flags & BV_WRITE_FUA))
        r = bv_node_flush(n, errp);
    return r;
}

int bv_node_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    int r = check_req(n, len, off, true, errp);
    if (r < 0 || len == 0)
        return r;
    r = n->drv->write_zeroes(n, len, off, flags, errp);
    wrote(n);                    /* failed too: it may have changed metadata */
    return r;
}

int bv_node_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    int r = check_req(n, len, off, true, errp);
    if (r < 0 || len == 0)
        return r;
    r = n->drv->discard(n, len, off, errp);
    wrote(n);                    /* failed too: it may have changed metadata */
    return r;
}

int bv_node_flush(bv_node *n, bv_error **errp)
{
    if (!n || n->read_only)
        return 0;
    uint64_t gen = atomic_load(&n->write_gen);
    if (gen == atomic_load(&n->flushed_gen))
        return 0;
    bv_node_event(n->file, BV_EV_FLUSH_TO_OS);
    int r = n->drv->flush_to_os ? n->drv->flush_to_os(n, errp) : 0;
    if (r < 0)
        return r;
    bv_node_event(n->file, BV_EV_FLUSH_TO_DISK);
    r = bv_child_flush(n->file, errp);
    if (r < 0)
        return r;
    atomic_store(&n->flushed_gen, gen);
    return 0;
}

/* A grown area reads as zeros, never as what a longer backing file holds
 * there (nor as bytes a COW or an earlier shrink left in the old last
 * cluster): QEMU's bdrv_co_truncate zero-fills it when the backing file is
 * longer than the old size.  Past the backing file's end (and its last
 * cluster) it reads as zeros anyway, so only the part the backing file
 * covers is zeroed: a huge grow does not allocate L2 tables for nothing. */
static int zero_grown_area(bv_node *n, uint64_t old, uint64_t size, bv_error **errp)
{
    uint64_t cs = bv_node_cluster_size(n) ? bv_node_cluster_size(n) : 1;
    uint64_t bsize = bv_node_size(n->backing);
    uint64_t end = bsize ? (bsize + cs - 1) / cs * cs : 0;   /* with the rest of its cluster */
    if (end > size)
        end = size;
    if (end <= old)
        return 0;
    return bv_node_write_zeroes(n, end - old, old, 0, errp);
}

int bv_node_truncate(bv_node *n, uint64_t size, bool allow_shrink, bv_error **errp)
{
    int r = check_req(n, 0, 0, true, errp);
    if (r < 0)
        return r;
    if (size > BV_MAX_IMAGE_SIZE)
        return bv_error_setf(errp, EINVAL, "size %llu is too large", (unsigned long long)size);
    if (size < n->size && !allow_shrink)
        return bv_error_setf(errp, EINVAL, "Use the --shrink option to perform a shrink "
                             "operation.");
    if (!n->drv->truncate)
        return bv_error_setf(errp, ENOTSUP, "Image format driver does not support resize");
    uint64_t old = n->size;
    r = n->drv->truncate(n, size, allow_shrink, errp);
    wrote(n);                    /* failed too: it may have changed metadata */
    if (r >= 0 && size > old)
        r = zero_grown_area(n, old, size, errp);
    return r;
}

uint64_t bv_node_size(const bv_node *n)
{
    return n ? n->size : 0;
}

enum bv_format bv_node_format(const bv_node *n)
{
    return n && n->drv->kind == BV_DRV_FORMAT ? n->drv->format : BV_FMT_NONE;
}

uint32_t bv_node_cluster_size(const bv_node *n)
{
    return n && n->drv->cluster_size ? n->drv->cluster_size(n) : 0;
}

const char *bv_node_filename(const bv_node *n)
{
    return n ? n->filename : NULL;
}

bv_node *bv_node_backing(const bv_node *n)
{
    return n ? n->backing : NULL;
}

int bv_node_block_status(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                         bv_error **errp)
{
    int r = check_req(n, len, off, false, errp);
    if (r < 0)
        return r;
    if (len == 0)
        return bv_error_setf(errp, EINVAL, "block status of an empty range");
    memset(bs, 0, sizeof(*bs));
    r = n->drv->block_status(n, off, len, bs, errp);
    if (r >= 0 && (bs->pnum == 0 || bs->pnum > len))
        r = bv_error_setf(errp, EIO, "driver returned a bad block status length");
    return r;
}

int bv_node_pread_host(bv_node *n, void *buf, uint64_t len, uint64_t host_off,
                       bv_error **errp)
{
    int r = check_req(n, 0, 0, false, errp);
    if (r < 0)
        return r;
    bv_node *p = n->file;
    /* only drivers whose block status gives offsets in n->file: blkverify's
     * file child is the reference raw file, its block status the test image's */
    bool host_in_file = n->drv == &bv_drv_qcow2 || n->drv == &bv_drv_raw;
    /* and only on a read-only node: on a writable one a cluster may be freed
     * and reused between the caller's block status and this read (qcow2_pread
     * makes such overwrites wait for it; a read from outside cannot) */
    if (!host_in_file || !n->read_only || !p || p->drv->kind != BV_DRV_PROTOCOL)
        return bv_error_setf(errp, ENOTSUP, "no direct access to the image file of '%s'",
                             n->filename);
    if (host_off > UINT64_MAX - len)
        return bv_error_setf(errp, EINVAL, "host range out of bounds");
    return len ? p->drv->pread(p, buf, len, host_off, errp) : 0;
}

static int protocol_allocated(bv_node *n, uint64_t *bytes, bv_error **errp)
{
    bv_node *p = n->file;
    while (p && p->file)
        p = p->file;
    *bytes = 0;
    if (!p || !p->drv->get_allocated)
        return 0;
    return p->drv->get_allocated(p, bytes, errp);
}

int bv_node_info(bv_node *n, struct bv_image_info *info, bv_error **errp)
{
    int r = check_req(n, 0, 0, false, errp);
    if (r < 0)
        return r;
    memset(info, 0, sizeof(*info));
    info->format = n->drv->format;
    info->virtual_size = n->size;
    if (n->backing_name) {
        snprintf(info->backing, sizeof(info->backing), "%s", n->backing_name);
        info->backing_format = n->backing_format;
    }
    r = protocol_allocated(n, &info->actual_size, errp);
    if (r >= 0 && n->drv->info)
        r = n->drv->info(n, info, errp);
    return r;
}

int bv_node_snapshots(bv_node *n, struct bv_snapshot_list *out, bv_error **errp)
{
    memset(out, 0, sizeof(*out));
    int r = check_req(n, 0, 0, false, errp);
    if (r < 0 || !n->drv->snapshots)
        return r;
    return n->drv->snapshots(n, out, errp);
}

void bv_snapshot_list_free(struct bv_snapshot_list *l)
{
    if (!l)
        return;
    for (uint32_t i = 0; i < l->count; i++) {
        free(l->sn[i].id);
        free(l->sn[i].name);
    }
    free(l->sn);
    l->sn = NULL;
    l->count = 0;
}

int bv_image_check(bv_node *n, bool repair_leaks, struct bv_check_result *res, bv_error **errp)
{
    memset(res, 0, sizeof(*res));
    int r = check_req(n, 0, 0, repair_leaks, errp);
    if (r < 0)
        return r;
    if (!n->drv->check)
        return bv_error_setf(errp, ENOTSUP, "This image format does not support checks");
    return n->drv->check(n, repair_leaks, res, errp);
}

void bv_check_result_free(struct bv_check_result *res)
{
    if (!res)
        return;
    for (unsigned i = 0; i < res->nmessages && i < BV_CHECK_MAX_MESSAGES; i++) {
        free(res->messages[i]);
        res->messages[i] = NULL;
    }
    res->nmessages = 0;
}
