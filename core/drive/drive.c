/*
 * Drives: the write path with bitmaps and before-write notifiers, quiesce
 * for jobs, ownership.  See include/bv/drive.h for the rules and locks.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "bv/drive.h"

struct bv_drive {
    char *id;
    bv_node *node;
    struct bv_bitmap_set *bitmaps;
    pthread_rwlock_t quiesce_lock;
    pthread_mutex_t lock;
    char owner[32];                       /* job type holding the drive, "" if free (lock) */
    struct bv_drive_notifier *notifiers;  /* lock; changed only while quiesced */
};

int bv_drive_new(const char *id, bv_node *node, bv_drive **out, bv_error **errp)
{
    bv_drive *d = calloc(1, sizeof(*d));
    if (!d || !(d->id = strdup(id))) {
        free(d);
        bv_node_close(node, NULL);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    d->node = node;
    int r = bv_bitmap_set_new(id, bv_node_size(node), &d->bitmaps, errp);
    if (r < 0) {
        bv_node_close(node, NULL);
        free(d->id);
        free(d);
        return r;
    }
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* a quiescing job must not starve behind a stream of writes */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&d->quiesce_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&d->lock, NULL);
    *out = d;
    return 0;
}

int bv_drive_free(bv_drive *d, bv_error **errp)
{
    if (!d)
        return 0;
    int r = bv_node_close(d->node, errp);
    bv_bitmap_set_free(d->bitmaps);
    pthread_rwlock_destroy(&d->quiesce_lock);
    pthread_mutex_destroy(&d->lock);
    free(d->id);
    free(d);
    return r;
}

const char *bv_drive_id(const bv_drive *d) { return d->id; }
bv_node *bv_drive_node(bv_drive *d) { return d->node; }
struct bv_bitmap_set *bv_drive_bitmaps(bv_drive *d) { return d->bitmaps; }
uint64_t bv_drive_size(bv_drive *d) { return bv_node_size(d->node); }

int bv_drive_pread(bv_drive *d, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    pthread_rwlock_rdlock(&d->quiesce_lock);
    int r = bv_node_pread(d->node, buf, len, off, errp);
    pthread_rwlock_unlock(&d->quiesce_lock);
    return r;
}

/* Notifiers run in registration order; the first failure stops the write. */
static int notify(bv_drive *d, uint64_t off, uint64_t len, bv_error **errp)
{
    pthread_mutex_lock(&d->lock);
    struct bv_drive_notifier *n = d->notifiers;
    pthread_mutex_unlock(&d->lock);
    /* the list cannot change while we hold quiesce_lock for reading */
    for (; n; n = n->next) {
        int r = n->before_write(n->opaque, off, len, errp);
        if (r < 0)
            return r;
    }
    return 0;
}

enum write_kind { W_DATA, W_ZEROES, W_DISCARD };

static int do_write(bv_drive *d, enum write_kind kind, const void *buf, uint64_t len,
                    uint64_t off, int flags, bv_error **errp)
{
    pthread_rwlock_rdlock(&d->quiesce_lock);
    uint64_t size = bv_node_size(d->node);
    int r;
    if (off > size || len > size - off) {
        r = bv_error_setf(errp, EINVAL, "request [%llu, +%llu) lies past the end of drive "
                          "'%s' (%llu bytes)", (unsigned long long)off,
                          (unsigned long long)len, d->id, (unsigned long long)size);
        goto out;
    }
    r = notify(d, off, len, errp);
    if (r < 0)
        goto out;
    switch (kind) {
    case W_DATA:    r = bv_node_pwrite(d->node, buf, len, off, flags, errp); break;
    case W_ZEROES:  r = bv_node_write_zeroes(d->node, len, off, flags, errp); break;
    case W_DISCARD: r = bv_node_discard(d->node, len, off, errp); break;
    }
    if (len)
        bv_bitmap_set_mark(d->bitmaps, off, len);
out:
    pthread_rwlock_unlock(&d->quiesce_lock);
    return r;
}

int bv_drive_pwrite(bv_drive *d, const void *buf, uint64_t len, uint64_t off, int flags,
                    bv_error **errp)
{
    return do_write(d, W_DATA, buf, len, off, flags, errp);
}

int bv_drive_write_zeroes(bv_drive *d, uint64_t len, uint64_t off, int flags, bv_error **errp)
{
    return do_write(d, W_ZEROES, NULL, len, off, flags, errp);
}

int bv_drive_discard(bv_drive *d, uint64_t len, uint64_t off, bv_error **errp)
{
    return do_write(d, W_DISCARD, NULL, len, off, 0, errp);
}

int bv_drive_flush(bv_drive *d, bv_error **errp)
{
    pthread_rwlock_rdlock(&d->quiesce_lock);
    int r = bv_node_flush(d->node, errp);
    pthread_rwlock_unlock(&d->quiesce_lock);
    return r;
}

int bv_drive_resize(bv_drive *d, uint64_t size, bool allow_shrink, bv_error **errp)
{
    bv_drive_quiesce(d);
    int r;
    pthread_mutex_lock(&d->lock);
    bool busy = d->owner[0] != '\0';
    pthread_mutex_unlock(&d->lock);
    if (busy) {
        r = bv_error_setf(errp, EBUSY, "Device '%s' is in use", d->id);
        goto out;
    }
    uint64_t old = bv_node_size(d->node);
    if (size < old && !allow_shrink) {
        r = bv_error_setf(errp, EINVAL, "shrinking drive '%s' from %llu to %llu bytes needs "
                          "\"shrink\":true", d->id, (unsigned long long)old,
                          (unsigned long long)size);
        goto out;
    }
    r = bv_node_truncate(d->node, size, allow_shrink, errp);
    if (r == 0)
        r = bv_bitmap_set_truncate(d->bitmaps, bv_node_size(d->node), errp);
out:
    bv_drive_unquiesce(d);
    return r;
}

int bv_drive_claim(bv_drive *d, const char *job_type, bv_error **errp)
{
    int r = 0;
    pthread_mutex_lock(&d->lock);
    if (d->owner[0])
        r = bv_error_setf(errp, EBUSY, "Node '%s' is busy: block device is in use by block "
                          "job: %s", d->id, d->owner);
    else
        snprintf(d->owner, sizeof(d->owner), "%s", job_type);
    pthread_mutex_unlock(&d->lock);
    return r;
}

void bv_drive_release(bv_drive *d)
{
    pthread_mutex_lock(&d->lock);
    d->owner[0] = '\0';
    pthread_mutex_unlock(&d->lock);
}

bool bv_drive_busy(bv_drive *d)
{
    pthread_mutex_lock(&d->lock);
    bool busy = d->owner[0] != '\0';
    pthread_mutex_unlock(&d->lock);
    return busy;
}

void bv_drive_add_notifier_quiesced(bv_drive *d, struct bv_drive_notifier *n)
{
    pthread_mutex_lock(&d->lock);
    struct bv_drive_notifier **pp = &d->notifiers;
    while (*pp)
        pp = &(*pp)->next;
    n->next = NULL;
    *pp = n;
    pthread_mutex_unlock(&d->lock);
}

void bv_drive_remove_notifier(bv_drive *d, struct bv_drive_notifier *n)
{
    bv_drive_quiesce(d);
    pthread_mutex_lock(&d->lock);
    for (struct bv_drive_notifier **pp = &d->notifiers; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    bv_drive_unquiesce(d);
}

void bv_drive_quiesce(bv_drive *d)
{
    pthread_rwlock_wrlock(&d->quiesce_lock);
}

void bv_drive_unquiesce(bv_drive *d)
{
    pthread_rwlock_unlock(&d->quiesce_lock);
}
