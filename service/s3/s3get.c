/*
 * Parallel ranged download of one object (see s3get.h).
 */
#include "s3/s3get.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "s3/s3.h"

#define DEFAULT_PART (16u << 20)
#define MIN_PART     (1u << 20)
#define MAX_PART     (512u << 20)
#define MAX_PARALLEL 16

struct download {
    struct bv_s3 *s3;
    const char *key;
    int fd;
    uint64_t size;
    size_t part;
    const struct bv_s3_get_opts *o;
    atomic_uint_fast64_t next;       /* next part number to take */
    atomic_bool failed;
    pthread_mutex_t lock;            /* guards err, r */
    bv_error *err;
    int r;
};

static int write_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static void fail(struct download *d, int r, bv_error *e)
{
    pthread_mutex_lock(&d->lock);
    if (d->r == 0) {
        d->r = r;
        d->err = e;
        e = NULL;
    }
    pthread_mutex_unlock(&d->lock);
    bv_error_free(e);
    atomic_store(&d->failed, true);
}

static void *worker(void *arg)
{
    struct download *d = arg;
    uint8_t *buf = malloc(d->part);
    if (!buf) {
        fail(d, -ENOMEM, NULL);
        return NULL;
    }
    for (;;) {
        uint64_t i = atomic_fetch_add(&d->next, 1);
        uint64_t off = i * d->part;
        if (off >= d->size || atomic_load(&d->failed))
            break;
        size_t len = d->size - off < d->part ? (size_t)(d->size - off) : d->part;
        bv_error *e = NULL;
        int r = bv_s3_get_range(d->s3, d->key, off, len, buf, &e);
        if (r == 0 && (r = write_all(d->fd, buf, len, off)) < 0)
            bv_error_setf(&e, -r, "cannot write the download of '%s': %s", d->key,
                          strerror(-r));
        if (r < 0) {
            fail(d, r, e);
            break;
        }
        if (d->o->progress)
            d->o->progress(d->o->opaque, len);
    }
    free(buf);
    return NULL;
}

int bv_s3_get_file(struct bv_s3 *s3, const char *key, int fd, uint64_t size,
                   const struct bv_s3_get_opts *o, uint64_t *got, bv_error **errp)
{
    static const struct bv_s3_get_opts none;
    struct download d = { .s3 = s3, .key = key, .fd = fd, .size = size, .o = o ? o : &none };
    d.part = d.o->part_size ? d.o->part_size : DEFAULT_PART;
    if (d.part < MIN_PART || d.part > MAX_PART)
        return bv_error_setf(errp, EINVAL, "part size: 1 MiB to 512 MiB");
    unsigned n = d.o->parallel ? d.o->parallel : 4;
    if (n > MAX_PARALLEL)
        return bv_error_setf(errp, EINVAL, "at most %d GETs in flight", MAX_PARALLEL);
    int r = 0;
    if (size == UINT64_MAX && (r = bv_s3_head(s3, key, &d.size, errp)) < 0)
        return r;
    if (ftruncate(fd, (off_t)d.size) < 0)
        return bv_error_setf(errp, errno, "cannot size the download of '%s': %s", key,
                             strerror(errno));
    uint64_t parts = d.size / d.part + (d.size % d.part != 0);
    if (n > parts)
        n = parts ? (unsigned)parts : 1;
    pthread_mutex_init(&d.lock, NULL);
    pthread_t t[MAX_PARALLEL];
    unsigned started = 0;
    for (; started < n; started++)
        if (pthread_create(&t[started], NULL, worker, &d) != 0)
            break;
    if (started == 0)
        worker(&d);                       /* no thread: do it here */
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&d.lock);
    if (d.r < 0) {
        if (d.err)
            bv_error_propagate(errp, &d.err);
        else
            bv_error_setf(errp, -d.r, "download of '%s' failed: %s", key, strerror(-d.r));
        return d.r;
    }
    if (got)
        *got = d.size;
    return 0;
}
