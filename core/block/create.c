/*
 * Image operations that work on files rather than open nodes: create,
 * rebase -u and format probing.  They sit next to node.c because they apply
 * the same confinement rules: with a root, the image and its backing file
 * are resolved beneath it, and a new image is created exclusively (O_EXCL in
 * its parent directory's descriptor), so two creators of one name cannot
 * both succeed.  If filling a new confined image fails, it is unlinked again
 * (beneath the root) so the name can be retried.
 */
#include "block/driver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bv/path.h"
#include "util/checked.h"

/* texts used twice here; the service and bvimg show them as they are */
static const char no_backing_format[] = "Backing file specified without backing format";
static const char bad_backing_name[] = "Backing file name must be 1..1023 bytes";
static const char too_large[] = "Image size is too large";

int bv_probe_format(bv_node *file, enum bv_format *fmt, bv_error **errp)
{
    uint8_t magic[4];
    int r = bv_child_pread(file, magic, sizeof(magic), 0, errp);
    if (r < 0)
        return r;
    *fmt = memcmp(magic, "QFI\xfb", 4) == 0 ? BV_FMT_QCOW2 : BV_FMT_RAW;
    return 0;
}

/* Size of the backing image (one layer), its name resolved next to path. */
static int backing_size(const struct bv_create_opts *o, uint64_t *size, bv_error **errp)
{
    char *self = NULL, *dir = NULL;
    bv_node *b = NULL;
    int r = bv_path_name(o->root, NULL, o->path, 0, &self, errp);
    if (r < 0)
        goto out;
    dir = bv_path_dirname(self);
    if (!dir) {
        r = bv_error_setf(errp, ENOMEM, "out of memory");
        goto out;
    }
    struct bv_open_opts bo = { .path = o->backing, .format = o->backing_format,
                               .root = o->root, .read_only = true, .no_backing = true };
    r = bv_node_open_recorded(&bo, dir, &b, errp);
    if (r < 0)
        goto out;
    *size = bv_node_size(b);
out:
    if (r < 0)
        bv_error_prepend(errp, "Could not open backing file '%s'", o->backing);
    bv_node_close(b, NULL);
    free(self);
    free(dir);
    return r;
}

static int validate_create(const struct bv_create_opts *o, bv_error **errp)
{
    if (!o || !o->path)
        return bv_error_setf(errp, EINVAL, "no image path given");
    if (o->format != BV_FMT_RAW && o->format != BV_FMT_QCOW2)
        return bv_error_setf(errp, EINVAL, "Unknown file format");
    if (o->backing && o->format != BV_FMT_QCOW2)
        return bv_error_setf(errp, ENOTSUP, "Backing file not supported for file format '%s'",
                             bv_format_name(o->format));
    if (o->backing && (!*o->backing || strlen(o->backing) > 1023))
        return bv_error_setf(errp, EINVAL, "%s", bad_backing_name);
    if (o->backing && o->backing_format == BV_FMT_NONE)
        return bv_error_setf(errp, EINVAL, "%s", no_backing_format);
    if (o->size > BV_MAX_IMAGE_SIZE)
        return bv_error_setf(errp, EINVAL, "%s", too_large);
    uint32_t cs = o->cluster_size;
    if (o->format == BV_FMT_QCOW2 && cs &&
        (!is_pow2_u64(cs) || cs < BV_MIN_CLUSTER_SIZE || cs > BV_MAX_CLUSTER_SIZE))
        return bv_error_setf(errp, EINVAL,
                             "Cluster size must be a power of two between 512 and 2048k");
    return 0;
}

/* Create (confined: exclusively) and open the new file. */
static int open_new(const struct bv_create_opts *o, int *fd, bv_error **errp)
{
    bv_error *e = NULL;
    int oflags = O_RDWR | O_CREAT | (o->root ? O_EXCL : O_TRUNC);
    int r = bv_path_open(o->root, NULL, o->path, 0, oflags, 0644, fd, NULL, &e);
    if (r == -EEXIST)
        r = bv_error_setf(errp, EEXIST, "Image '%s' already exists", o->path);
    else if (r < 0)
        bv_error_propagate(errp, &e);
    bv_error_free(e);
    return r;
}

static int fill_new(const struct bv_create_opts *o, int fd, uint64_t size, bv_error **errp)
{
    if (o->format != BV_FMT_RAW)
        return bv_qcow2_create(fd, o, size, errp);
    if (ftruncate(fd, (off_t)size) < 0)
        return bv_error_setf(errp, errno, "Could not resize '%s': %s", o->path, strerror(errno));
    return 0;
}

int bv_image_create(const struct bv_create_opts *o, bv_error **errp)
{
    int fd = -1;
    uint64_t size = 0;
    int r = validate_create(o, errp);
    if (r < 0)
        return r;
    size = o->size;
    if (o->backing && (size == 0 || o->root)) {
        uint64_t bsize = 0;
        r = backing_size(o, &bsize, errp);
        if (r < 0)
            return r;
        if (size == 0)
            size = bsize;
    }
    if (!ck_align_up(size, 512, &size) || size > BV_MAX_IMAGE_SIZE)
        return bv_error_setf(errp, EINVAL, "%s", too_large);
    r = open_new(o, &fd, errp);
    if (r < 0)
        return r;
    r = fill_new(o, fd, size, errp);
    if (close(fd) < 0 && r == 0)
        r = bv_error_setf(errp, errno, "close of '%s' failed: %s", o->path, strerror(errno));
    if (r < 0 && o->root)
        bv_path_unlink(o->root, o->path, NULL);    /* ours: O_EXCL made it */
    return r;
}

int bv_image_rebase_unsafe(const char *path, const struct bv_root *root, const char *backing,
                           enum bv_format backing_format, bv_error **errp)
{
    bv_node *n = NULL;
    if (backing && !*backing)
        backing = NULL;
    if (backing && backing_format == BV_FMT_NONE)
        return bv_error_setf(errp, EINVAL, "%s", no_backing_format);
    if (backing && strlen(backing) > 1023)
        return bv_error_setf(errp, EINVAL, "%s", bad_backing_name);
    struct bv_open_opts oo = { .path = path, .root = root, .no_backing = true };
    int r = bv_node_open(&oo, &n, errp);
    if (r < 0)
        return r;
    if (bv_node_format(n) != BV_FMT_QCOW2)
        r = bv_error_setf(errp, ENOTSUP, "rebase needs a qcow2 image");
    else
        r = bv_qcow2_set_backing(n, backing, backing ? backing_format : BV_FMT_NONE, errp);
    int rc = bv_node_close(n, r < 0 ? NULL : errp);
    return r < 0 ? r : rc;
}
