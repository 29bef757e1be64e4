/*
 * Protocol driver "file": one POSIX file descriptor.  Reads loop over short
 * reads and EINTR and return zeros past end of file (qcow2 metadata of a
 * fresh image lies past EOF); writes loop until done.  Zeroing uses
 * fallocate (zero-range, else punch-hole) and falls back to writing zeros;
 * durability is fdatasync.  Block status comes from SEEK_DATA/SEEK_HOLE.
 *
 * Threads: the descriptor is only used with positional calls, so any number
 * of threads may do I/O at once.
 */
#include "block/driver.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_state {
    int fd;
};

#define ZERO_BUF_SIZE (1u << 20)

static int file_open(bv_node *n, int fd, bv_error **errp)
{
    struct file_state *s = n->opaque;
    struct stat st;
    s->fd = fd;
    if (fstat(fd, &st) < 0)
        return bv_error_setf(errp, errno, "Could not stat '%s': %s", n->filename,
                             strerror(errno));
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return bv_error_setf(errp, EINVAL, "'%s' is not a regular file", n->filename);
    n->size = (uint64_t)st.st_size;
    return 0;
}

static void file_close(bv_node *n)
{
    struct file_state *s = n->opaque;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static int file_pread(bv_node *n, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    struct file_state *s = n->opaque;
    uint8_t *p = buf;
    while (len) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t got = pread(s->fd, p, chunk, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return bv_error_setf(errp, errno, "read of '%s' at %llu failed: %s", n->filename,
                                 (unsigned long long)off, strerror(errno));
        if (got == 0) {          /* end of file: the rest reads as zeros */
            memset(p, 0, len);
            break;
        }
        p += got;
        off += (uint64_t)got;
        len -= (uint64_t)got;
    }
    return 0;
}

static int file_pwrite(bv_node *n, const void *buf, uint64_t len, uint64_t off, int flags,
                       bv_error **errp)
{
    struct file_state *s = n->opaque;
    const uint8_t *p = buf;
    while (len) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t put = pwrite(s->fd, p, chunk, (off_t)off);
        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0)
            return bv_error_setf(errp, put < 0 ? errno : EIO, "write to '%s' at %llu failed: %s",
                                 n->filename, (unsigned long long)off,
                                 strerror(put < 0 ? errno : EIO));
        p += put;
        off += (uint64_t)put;
        len -= (uint64_t)put;
    }
    return 0;
}

static int write_zero_buf(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    void *z = calloc(1, ZERO_BUF_SIZE);
    if (!z)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int r = 0;
    while (len && r == 0) {
        uint64_t chunk = len > ZERO_BUF_SIZE ? ZERO_BUF_SIZE : len;
        r = file_pwrite(n, z, chunk, off, 0, errp);
        off += chunk;
        len -= chunk;
    }
    free(z);
    return r;
}

static int file_write_zeroes(bv_node *n, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    struct file_state *s = n->opaque;
    struct stat st;
    if (fallocate(s->fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (fstat(s->fd, &st) == 0 && off + len <= (uint64_t)st.st_size &&
        fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (fstat(s->fd, &st) == 0 && off >= (uint64_t)st.st_size) {
        if (ftruncate(s->fd, (off_t)(off + len)) == 0)
            return 0;
    }
    return write_zero_buf(n, len, off, errp);
}

static int file_discard(bv_node *n, uint64_t len, uint64_t off, bv_error **errp)
{
    struct file_state *s = n->opaque;
    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0
        && errno != EOPNOTSUPP && errno != ENOSYS)
        return bv_error_setf(errp, errno, "discard on '%s' failed: %s", n->filename,
                             strerror(errno));
    return 0;
}

static int file_flush(bv_node *n, bv_error **errp)
{
    struct file_state *s = n->opaque;
    if (fdatasync(s->fd) < 0)
        return bv_error_setf(errp, errno, "fdatasync of '%s' failed: %s", n->filename,
                             strerror(errno));
    return 0;
}

static int file_truncate(bv_node *n, uint64_t size, bool allow_shrink, bv_error **errp)
{
    struct file_state *s = n->opaque;
    if (size > INT64_MAX)
        return bv_error_setf(errp, EFBIG, "size too large");
    if (ftruncate(s->fd, (off_t)size) < 0)
        return bv_error_setf(errp, errno, "truncate of '%s' failed: %s", n->filename,
                             strerror(errno));
    n->size = size;
    return 0;
}

static int file_stat(bv_node *n, struct stat *st, bv_error **errp)
{
    struct file_state *s = n->opaque;
    if (fstat(s->fd, st) < 0)
        return bv_error_setf(errp, errno, "stat of '%s' failed: %s", n->filename,
                             strerror(errno));
    return 0;
}

static int file_get_length(bv_node *n, uint64_t *len, bv_error **errp)
{
    struct stat st;
    int r = file_stat(n, &st, errp);
    if (r == 0)
        *len = (uint64_t)st.st_size;
    return r;
}

static int file_get_allocated(bv_node *n, uint64_t *bytes, bv_error **errp)
{
    struct stat st;
    int r = file_stat(n, &st, errp);
    if (r == 0)
        *bytes = (uint64_t)st.st_blocks * 512;
    return r;
}

/* Data or hole run at off (bounded by len); past EOF is a hole. */
static int file_block_status(bv_node *n, uint64_t off, uint64_t len, struct bv_block_status *bs,
                             bv_error **errp)
{
    struct file_state *s = n->opaque;
    off_t data = lseek(s->fd, (off_t)off, SEEK_DATA);
    bs->host_offset = 0;
    if (data < 0 && errno == ENXIO) {          /* hole up to EOF, or past EOF */
        bs->flags = BV_BS_ZERO;
        bs->pnum = len;
        return 0;
    }
    if (data < 0) {                            /* no SEEK_DATA: say data */
        bs->flags = BV_BS_DATA;
        bs->host_offset = off;
        bs->pnum = len;
        return 0;
    }
    if ((uint64_t)data > off) {
        bs->flags = BV_BS_ZERO;
        bs->pnum = (uint64_t)data - off < len ? (uint64_t)data - off : len;
        return 0;
    }
    off_t hole = lseek(s->fd, (off_t)off, SEEK_HOLE);
    uint64_t run = hole > (off_t)off ? (uint64_t)hole - off : len;
    bs->flags = BV_BS_DATA;
    bs->host_offset = off;
    bs->pnum = run < len ? run : len;
    return 0;
}

const struct bv_driver bv_drv_file = {
    .name = "file",
    .kind = BV_DRV_PROTOCOL,
    .instance_size = sizeof(struct file_state),
    .open = file_open,
    .close = file_close,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .write_zeroes = file_write_zeroes,
    .discard = file_discard,
    .flush = file_flush,
    .truncate = file_truncate,
    .get_length = file_get_length,
    .get_allocated = file_get_allocated,
    .block_status = file_block_status,
};
