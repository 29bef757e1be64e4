/*
 * Pull backup of a VM drive: see vmpull.h for the recipe and its order.
 * The state of one pull is a struct pull; set-up records each object as it
 * is made, and teardown undoes exactly what exists, in the reference's
 * order, whether the copy succeeded, failed, was cancelled or QEMU died
 * (then the QMP calls fail fast and only local files are removed).
 *
 * Reads: the copy set is listed first with NBD_CMD_BLOCK_STATUS over the
 * whole disk (bounded: at most MAX_EXTENTS ranges), then cut into chunks of
 * at most CHUNK bytes read with up to `inflight` nbd_aio_pread in flight
 * (this thread: libnbd's socket in a poll loop).  Each chunk that comes back
 * goes to a writer thread, which writes it into the target (zeros as a zero
 * write for an incremental, skipped for a full: a new image reads as zeros)
 * and runs the hooks, while the reads go on; a flusher thread syncs the
 * target every FLUSH_STEP bytes so that the final flush has little left.
 * Writing on the polling thread instead cost a third of the throughput:
 * QEMU's replies waited in the socket while we wrote (bench/bench_vm.sh).
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "app.h"
#include "bv/image.h"
#include "bv/path.h"
#include "qmp/qmp.h"
#include "runtime/vmdrives-int.h"
#include "runtime/vmpull.h"

#define CHUNK        (256u << 10)  /* 16 × 256 KiB beat 16 × 1 MiB: bench/README.md */
#define MAX_INFLIGHT 64
#define MAX_EXTENTS  (1u << 22)
#define EVENT_MS     10000
#define FLUSH_STEP   (64ull << 20)
/* Scratch space: below SCRATCH_LOW bytes free in the scratch directory's
 * file system at any check of a pull (every SCRATCH_CHECK_MS while reading,
 * and once the reads are done), QEMU may have failed guest writes whose old
 * data had to go into the overlay (ENOSPC: QEMU 7.2's copy-before-write
 * breaks the guest write and tells nobody).  The pull then fails, saying so.
 * One copy-before-write chunk is at most 1 MiB (plus qcow2 metadata), so a
 * write that failed leaves less than SCRATCH_LOW free.  A pull does not start
 * with less than SCRATCH_START free. */
#define SCRATCH_LOW      (2ull << 20)
#define SCRATCH_START    (2 * SCRATCH_LOW)
#define SCRATCH_CHECK_MS 50

struct range {
    uint64_t off, len;
};

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READY, SLOT_WRITING };

struct slot {
    struct pull *p;
    char *buf;
    struct range r;
    enum slot_state state;       /* pull.lk */
};

struct pull {
    struct bv_vm_drive *d;
    const struct bv_vm_pull_opts *o;
    struct bv_vm_drive_info info;
    char name[40];               /* overlay node, job and export id */
    char scratch_rel[600];       /* relative to <data> */
    char scratch_abs[4200];
    char scratch_dir[4096];      /* its directory */
    uint64_t scratch_min;        /* least free bytes seen there (UINT64_MAX: none) */
    int64_t scratch_checked;     /* when (CLOCK_MONOTONIC ms) */
    char sock[108];
    bool created, scratch, overlay, txn, server, exported;
    bool persistent;
    /* the copy */
    bv_node *target;
    struct range *set;
    size_t nset, capset;
    uint64_t total, done;
    int err;                     /* first failure (negative errno) */
    bv_error *errp;              /* its words */
    struct slot slots[MAX_INFLIGHT];
    unsigned inflight;           /* reads in flight (the reading thread's) */
    /* The writer thread.  lk guards the slots' states, the ready queue,
     * wstop/wabort and werr/werrp; done and the hooks are the writer's. */
    pthread_mutex_t lk;
    pthread_cond_t wcond;        /* something is ready, or stop */
    unsigned ready[MAX_INFLIGHT], rhead, rcount;
    bool wstop, wabort;
    int werr;
    bv_error *werrp;
    int efd;                     /* eventfd: the writer freed a slot */
    /* The flusher thread (lk too): the link synced every FLUSH_STEP bytes. */
    pthread_cond_t fcond;
    uint64_t unflushed;
    bool fwant, fstop;
};

static int fail(struct pull *p, int r, bv_error **e)
{
    if (p->err == 0) {
        p->err = r;
        bv_error_propagate(&p->errp, e);
    }
    bv_error_free(e ? *e : NULL);
    if (e)
        *e = NULL;
    return r;
}

static int failf(struct pull *p, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int failf(struct pull *p, int err, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bv_error *e = NULL;
    bv_error_setf(&e, err, "%s", msg);
    return fail(p, -err, &e);
}

/* ---------------- scratch space ---------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Free bytes in the scratch directory's file system (what an unprivileged
 * writer may use), or UINT64_MAX when statvfs fails. */
static uint64_t scratch_free(struct pull *p)
{
    struct statvfs sv;
    if (statvfs(p->scratch_dir, &sv) < 0)
        return UINT64_MAX;
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* The pull's check (see SCRATCH_LOW): fails it when the scratch space ran
 * low.  force: check now, else at most every SCRATCH_CHECK_MS. */
static int check_scratch(struct pull *p, bool force)
{
    int64_t t = now_ms();
    if (!p->scratch || (!force && t - p->scratch_checked < SCRATCH_CHECK_MS))
        return 0;
    p->scratch_checked = t;
    uint64_t f = scratch_free(p);
    if (f < p->scratch_min)
        p->scratch_min = f;
    if (p->scratch_min >= SCRATCH_LOW)
        return 0;
    return failf(p, ENOSPC, "the scratch space of '%s' ran out during the pull (%llu bytes "
                 "free in '%s'): guest writes that had to save old data there failed "
                 "(ENOSPC); the backup is not kept", p->d->id,
                 (unsigned long long)p->scratch_min, p->d->scratch_dir);
}

/* ---------------- set-up ---------------- */

static int make_scratch(struct pull *p)
{
    char dir[4096] = "";
    bv_error *e = NULL;
    struct bv_root *data = NULL;
    int r = vm_scratch_path(p->d, dir, sizeof(dir), &e);
    if (r == 0)
        r = bv_root_open(p->d->app->cfg.data_dir, &data, &e);
    snprintf(p->scratch_dir, sizeof(p->scratch_dir), "%s", dir);
    uint64_t f = r == 0 ? scratch_free(p) : UINT64_MAX;
    if (f < SCRATCH_START) {
        bv_root_close(data);
        return failf(p, ENOSPC, "the scratch directory '%s' of '%s' has %llu bytes free: a pull "
                     "needs room there for the old data of what the guest rewrites during the "
                     "backup", p->d->scratch_dir, p->d->id, (unsigned long long)f);
    }
    snprintf(p->scratch_rel, sizeof(p->scratch_rel), "%s/%s.qcow2", p->d->scratch_dir, p->name);
    snprintf(p->scratch_abs, sizeof(p->scratch_abs), "%s/%s.qcow2", dir, p->name);
    struct bv_create_opts co = {
        .path = p->scratch_rel, .root = data, .format = BV_FMT_QCOW2, .size = p->info.size,
    };
    if (r == 0 && (r = bv_image_create(&co, &e)) == 0)
        p->scratch = true;
    bv_root_close(data);
    if (r == 0 && (size_t)snprintf(p->sock, sizeof(p->sock), "%s/%s.sock", dir, p->name) >=
                      sizeof(p->sock))
        return failf(p, ENAMETOOLONG, "the NBD socket name under '%s' is too long for a Unix socket "
                     "(use a shorter --data)", dir);
    return r < 0 ? fail(p, r, &e) : 0;
}

static int add_overlay(struct pull *p)
{
    cJSON *a = cJSON_CreateObject(), *file;
    bv_error *e = NULL;
    cJSON_AddStringToObject(a, "driver", "qcow2");
    cJSON_AddStringToObject(a, "node-name", p->name);
    file = cJSON_AddObjectToObject(a, "file");
    cJSON_AddStringToObject(file, "driver", "file");
    cJSON_AddStringToObject(file, "filename", p->scratch_abs);
    cJSON_AddStringToObject(a, "backing", p->info.node_name);
    int r = bv_qmp_execute(p->d->vm->q, "blockdev-add", a, 0, NULL, NULL, 0, &e);
    cJSON_Delete(a);
    if (r == 0)
        p->overlay = true;
    return r < 0 ? fail(p, r, &e) : 0;
}

static cJSON *action(cJSON *actions, const char *type)
{
    cJSON *act = cJSON_CreateObject();
    cJSON_AddStringToObject(act, "type", type);
    cJSON_AddItemToArray(actions, act);
    return cJSON_AddObjectToObject(act, "data");
}

/* The point in time: bitmap changes and the sync=none job in one transaction. */
static int fix_point(struct pull *p, bool persistent, bv_error **e)
{
    cJSON *args = cJSON_CreateObject(), *acts = cJSON_AddArrayToObject(args, "actions"), *d;
    d = action(acts, "block-dirty-bitmap-add");
    cJSON_AddStringToObject(d, "node", p->info.node_name);
    cJSON_AddStringToObject(d, "name", p->o->new_bitmap);
    cJSON_AddBoolToObject(d, "persistent", persistent);
    if (p->o->old_bitmap) {
        d = action(acts, "block-dirty-bitmap-disable");
        cJSON_AddStringToObject(d, "node", p->info.node_name);
        cJSON_AddStringToObject(d, "name", p->o->old_bitmap);
    }
    d = action(acts, "blockdev-backup");
    cJSON_AddStringToObject(d, "device", p->info.node_name);
    cJSON_AddStringToObject(d, "target", p->name);
    cJSON_AddStringToObject(d, "sync", "none");
    cJSON_AddStringToObject(d, "job-id", p->name);
    int r = bv_qmp_execute(p->d->vm->q, "transaction", args, 0, NULL, NULL, 0, e);
    cJSON_Delete(args);
    return r;
}

static int start_point(struct pull *p)
{
    bv_error *e = NULL;
    int r = fix_point(p, true, &e);
    if (r == -EIO && e && strstr(e->msg, "persistent")) {   /* a raw disk: cannot store it */
        bv_error_free(e);
        e = NULL;
        r = fix_point(p, false, &e);
    } else {
        p->persistent = true;
    }
    if (r == 0)
        p->txn = true;
    return r < 0 ? fail(p, r, &e) : 0;
}

static int start_export(struct pull *p)
{
    bv_error *e = NULL;
    char cls[64];
    cJSON *a = cJSON_CreateObject(), *addr = cJSON_AddObjectToObject(a, "addr");
    cJSON_AddStringToObject(addr, "type", "unix");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(addr, "data"), "path", p->sock);
    unlink(p->sock);
    int r = bv_qmp_execute(p->d->vm->q, "nbd-server-start", a, 0, NULL, cls, sizeof(cls), &e);
    cJSON_Delete(a);
    if (r < 0 && e && strstr(e->msg, "already running"))
        return failf(p, EBUSY, "QEMU on '%s' already runs an NBD server that Blockvault did "
                     "not start", p->d->vm->qmp);
    if (r < 0)
        return fail(p, r, &e);
    p->server = true;
    a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "type", "nbd");
    cJSON_AddStringToObject(a, "id", p->name);
    cJSON_AddStringToObject(a, "node-name", p->name);
    cJSON_AddStringToObject(a, "name", p->name);
    cJSON_AddBoolToObject(a, "writable", false);
    if (p->o->old_bitmap)
        cJSON_AddItemToArray(cJSON_AddArrayToObject(a, "bitmaps"),
                             cJSON_CreateString(p->o->old_bitmap));
    r = bv_qmp_execute(p->d->vm->q, "block-export-add", a, 0, NULL, NULL, 0, &e);
    cJSON_Delete(a);
    if (r == 0)
        p->exported = true;
    return r < 0 ? fail(p, r, &e) : 0;
}

/* ---------------- the copy ---------------- */

static int add_range(struct pull *p, uint64_t off, uint64_t len)
{
    if (p->nset && p->set[p->nset - 1].off + p->set[p->nset - 1].len == off) {
        p->set[p->nset - 1].len += len;
        return 0;
    }
    if (p->nset == p->capset) {
        size_t cap = p->capset ? p->capset * 2 : 256;
        struct range *n = cap <= MAX_EXTENTS ? realloc(p->set, cap * sizeof(*n)) : NULL;
        if (!n)
            return -ENOMEM;
        p->set = n;
        p->capset = cap;
    }
    p->set[p->nset++] = (struct range){ off, len };
    return 0;
}

struct status_walk {
    struct pull *p;
    const char *context;
    uint64_t off;                /* where the next extent starts */
    int err;
};

static int on_extents(void *user, const char *ctx, uint64_t offset, uint32_t *entries,
                      size_t n, int *error)
{
    struct status_walk *w = user;
    (void)offset;
    (void)error;
    if (strcmp(ctx, w->context) != 0)
        return 0;
    bool incremental = w->p->o->old_bitmap != NULL;
    for (size_t i = 0; i + 1 < n && w->err == 0; i += 2) {
        uint64_t len = entries[i];
        uint32_t flags = entries[i + 1];
        bool want = incremental ? (flags & 1) : !(flags & LIBNBD_STATE_ZERO);
        if (len > w->p->info.size - w->off)
            len = w->p->info.size - w->off;
        if (want && len)
            w->err = add_range(w->p, w->off, len);
        w->off += len;
    }
    return 0;
}

static int list_copy_set(struct pull *p, struct nbd_handle *h, const char *context)
{
    struct status_walk w = { .p = p, .context = context };
    while (w.off < p->info.size && w.err == 0) {
        uint64_t before = w.off, count = p->info.size - w.off;
        if (count > (1u << 30))
            count = 1u << 30;
        if (nbd_block_status(h, count, w.off,
                             (nbd_extent_callback){ .callback = on_extents, .user_data = &w },
                             0) < 0)
            return failf(p, nbd_get_errno() ? nbd_get_errno() : EIO, "NBD block status on "
                         "'%s': %s", p->d->id, nbd_get_error());
        if (w.off == before)
            return failf(p, EPROTO, "QEMU's NBD server on '%s' reported no extents",
                         p->d->id);
    }
    if (w.err < 0)
        return failf(p, ENOMEM, "the copy set of '%s' has too many ranges", p->d->id);
    for (size_t i = 0; i < p->nset; i++)
        p->total += p->set[i].len;
    return 0;
}

static bool all_zero(const char *b, size_t n)
{
    return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

/* A read came back (on the reading thread, inside nbd_aio_notify_read or
 * nbd_close): its slot goes to the writer, or is free again on a failure. */
static int on_read(void *user, int *error)
{
    struct slot *s = user;
    struct pull *p = s->p;
    p->inflight--;
    if (*error)
        failf(p, *error, "NBD read from the VM of '%s' failed: %s", p->d->id, strerror(*error));
    pthread_mutex_lock(&p->lk);
    if (p->err) {
        s->state = SLOT_FREE;
    } else {
        s->state = SLOT_READY;
        p->ready[(p->rhead + p->rcount++) % MAX_INFLIGHT] = (unsigned)(s - p->slots);
        pthread_cond_signal(&p->wcond);
    }
    pthread_mutex_unlock(&p->lk);
    return 1;
}

/* Write one chunk into the link (on the writer thread). */
static int write_slot(struct pull *p, struct slot *s, bv_error **e)
{
    int r = 0;
    if (!all_zero(s->buf, s->r.len))
        r = bv_node_pwrite(p->target, s->buf, s->r.len, s->r.off, 0, e);
    else if (p->o->old_bitmap)
        r = bv_node_write_zeroes(p->target, s->r.len, s->r.off, 0, e);
    if (r < 0)
        return r;
    if (p->o->copied)
        p->o->copied(p->o->opaque, s->r.off, s->r.len, s->buf);
    p->done += s->r.len;
    if (p->o->progress)
        p->o->progress(p->o->opaque, p->done, p->total);
    return 0;
}

/* The writer: takes ready chunks in the order they came back and writes
 * them, so that the reading thread keeps QEMU's export busy meanwhile. */
static void *writer(void *opaque)
{
    struct pull *p = opaque;
    pthread_mutex_lock(&p->lk);
    for (;;) {
        while (p->rcount == 0 && !p->wstop)
            pthread_cond_wait(&p->wcond, &p->lk);
        if (p->rcount == 0)
            break;
        struct slot *s = &p->slots[p->ready[p->rhead]];
        p->rhead = (p->rhead + 1) % MAX_INFLIGHT;
        p->rcount--;
        bool skip = p->wabort || p->werr;
        s->state = SLOT_WRITING;
        pthread_mutex_unlock(&p->lk);
        bv_error *e = NULL;
        int r = skip ? 0 : write_slot(p, s, &e);
        pthread_mutex_lock(&p->lk);
        if (r < 0 && p->werr == 0) {
            p->werr = r;
            p->werrp = e;
            e = NULL;
        }
        bv_error_free(e);
        s->state = SLOT_FREE;
        if (!skip && r == 0 && (p->unflushed += s->r.len) >= FLUSH_STEP) {
            p->unflushed = 0;
            p->fwant = true;
            pthread_cond_signal(&p->fcond);
        }
        uint64_t one = 1;
        if (write(p->efd, &one, sizeof(one)) < 0) {
            /* the counter is far from full: nothing to do */
        }
    }
    pthread_mutex_unlock(&p->lk);
    return NULL;
}

/* The flusher: syncs the link every FLUSH_STEP bytes written, beside the
 * copy, so that the final flush (which makes the backup durable) finds
 * little left.  An error here shows again at the final flush. */
static void *flusher(void *opaque)
{
    struct pull *p = opaque;
    pthread_mutex_lock(&p->lk);
    for (;;) {
        while (!p->fwant && !p->fstop)
            pthread_cond_wait(&p->fcond, &p->lk);
        if (p->fstop)
            break;
        p->fwant = false;
        pthread_mutex_unlock(&p->lk);
        bv_node_flush(p->target, NULL);
        pthread_mutex_lock(&p->lk);
    }
    pthread_mutex_unlock(&p->lk);
    return NULL;
}

static struct slot *free_slot(struct pull *p, unsigned n)
{
    struct slot *s = NULL;
    pthread_mutex_lock(&p->lk);
    for (unsigned i = 0; i < n && !s; i++)
        if (p->slots[i].state == SLOT_FREE)
            s = &p->slots[i];
    if (s)
        s->state = SLOT_READING;
    pthread_mutex_unlock(&p->lk);
    return s;
}

/* Slots not free (reading, ready or being written). */
static unsigned busy_slots(struct pull *p, unsigned n)
{
    unsigned k = 0;
    pthread_mutex_lock(&p->lk);
    for (unsigned i = 0; i < n; i++)
        k += p->slots[i].state != SLOT_FREE;
    pthread_mutex_unlock(&p->lk);
    return k;
}

/* The writer's first failure becomes the pull's. */
static void take_writer_error(struct pull *p)
{
    pthread_mutex_lock(&p->lk);
    int r = p->werr;
    bv_error *e = p->werrp;
    p->werrp = NULL;
    pthread_mutex_unlock(&p->lk);
    if (r < 0 && p->err == 0)
        fail(p, r, &e);
    bv_error_free(e);
}

/* Wait for the export's socket (or the writer's eventfd) and let libnbd
 * move; false when the connection is gone. */
static bool wait_io(struct pull *p, struct nbd_handle *h)
{
    if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h))
        return false;
    struct pollfd fds[2] = { { .fd = nbd_aio_get_fd(h) }, { .fd = p->efd, .events = POLLIN } };
    unsigned dir = nbd_aio_get_direction(h);
    if (dir & LIBNBD_AIO_DIRECTION_READ)
        fds[0].events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE)
        fds[0].events |= POLLOUT;
    if (poll(fds, 2, 100) < 0)
        return errno == EINTR;
    if (fds[1].revents & POLLIN) {
        uint64_t v;
        if (read(p->efd, &v, sizeof(v)) < 0) {
            /* EAGAIN: already drained */
        }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
        return nbd_aio_notify_read(h) == 0;
    if (fds[0].revents & POLLOUT)
        return nbd_aio_notify_write(h) == 0;
    return true;
}

/* The copy: this thread keeps up to n reads in flight; the writer thread
 * writes what came back (and runs the hooks); the flusher syncs the link
 * behind them. */
static int copy(struct pull *p, struct nbd_handle *h)
{
    unsigned n = p->o->inflight ? p->o->inflight : 16;
    uint64_t chunk = CHUNK;
    const char *knob = getenv("BV_VM_PULL_INFLIGHT");   /* bench/bench_vm.sh only */
    if (knob && atoi(knob) > 0)
        n = (unsigned)atoi(knob);
    if ((knob = getenv("BV_VM_PULL_CHUNK_KIB")) && atoi(knob) >= 64 && atoi(knob) <= 32768)
        chunk = (uint64_t)atoi(knob) << 10;
    if (n > MAX_INFLIGHT)
        n = MAX_INFLIGHT;
    for (unsigned i = 0; i < n; i++) {
        p->slots[i].p = p;
        if (!(p->slots[i].buf = malloc(chunk)))
            return failf(p, ENOMEM, "out of memory");
    }
    pthread_t wt, ft;
    if ((p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return failf(p, errno, "eventfd: %s", strerror(errno));
    if (pthread_create(&wt, NULL, writer, p) != 0)
        return failf(p, EAGAIN, "cannot start the pull's writer thread");
    bool flushing = pthread_create(&ft, NULL, flusher, p) == 0;
    size_t next = 0;
    uint64_t pos = 0;                    /* within set[next] */
    for (;;) {
        take_writer_error(p);
        if (p->err == 0 && p->o->cancelled && p->o->cancelled(p->o->opaque))
            failf(p, ECANCELED, "the pull of '%s' was cancelled", p->d->id);
        if (p->err == 0)
            check_scratch(p, false);
        struct slot *s;
        while (p->err == 0 && next < p->nset && (s = free_slot(p, n))) {
            uint64_t len = p->set[next].len - pos;
            s->r = (struct range){ p->set[next].off + pos, len < chunk ? len : chunk };
            p->inflight++;
            if (nbd_aio_pread(h, s->buf, s->r.len, s->r.off,
                              (nbd_completion_callback){ .callback = on_read, .user_data = s },
                              0) < 0) {
                p->inflight--;
                pthread_mutex_lock(&p->lk);
                s->state = SLOT_FREE;
                pthread_mutex_unlock(&p->lk);
                failf(p, nbd_get_errno() ? nbd_get_errno() : EIO, "NBD read request on '%s': "
                      "%s", p->d->id, nbd_get_error());
                break;
            }
            pos += s->r.len;
            if (pos == p->set[next].len) {
                next++;
                pos = 0;
            }
        }
        if (p->err ? p->inflight == 0 : next == p->nset && busy_slots(p, n) == 0)
            break;
        if (!wait_io(p, h)) {
            failf(p, EIO, "NBD connection to the VM of '%s' lost: %s", p->d->id,
                  nbd_get_error() ? nbd_get_error() : "closed");
            break;
        }
    }
    pthread_mutex_lock(&p->lk);
    p->wstop = p->fstop = true;
    p->wabort = p->err != 0;
    pthread_cond_broadcast(&p->wcond);
    pthread_cond_broadcast(&p->fcond);
    pthread_mutex_unlock(&p->lk);
    pthread_join(wt, NULL);
    if (flushing)
        pthread_join(ft, NULL);
    take_writer_error(p);
    return p->err;
}

static int pull_data(struct pull *p)
{
    char context[300];
    const char *ctx = "base:allocation";
    if (p->o->old_bitmap) {
        snprintf(context, sizeof(context), "qemu:dirty-bitmap:%s", p->o->old_bitmap);
        ctx = context;
    }
    struct nbd_handle *h = nbd_create();
    int r = 0;
    if (!h)
        return failf(p, ENOMEM, "NBD: %s", nbd_get_error());
    if (nbd_set_pread_initialize(h, false) < 0 ||    /* every byte is read into it */
        nbd_add_meta_context(h, ctx) < 0 || nbd_set_export_name(h, p->name) < 0 ||
        nbd_connect_unix(h, p->sock) < 0)
        r = failf(p, EIO, "cannot attach to the VM's export of '%s': %s", p->d->id,
                  nbd_get_error());
    else if (nbd_can_meta_context(h, ctx) != 1)
        r = failf(p, EPROTO, "QEMU does not offer %s for '%s'", ctx, p->d->id);
    if (r == 0)
        r = list_copy_set(p, h, ctx);
    if (r == 0)
        r = copy(p, h);
    if (p->inflight == 0)
        nbd_shutdown(h, 0);
    nbd_close(h);                        /* retires what is still in flight */
    p->inflight = 0;
    return r;
}

static int open_target(struct pull *p)
{
    bv_error *e = NULL;
    struct bv_app *app = p->d->app;
    struct bv_create_opts co = {
        .path = p->o->target, .root = app->root, .format = BV_FMT_QCOW2,
        .size = p->info.size, .backing = p->o->backing,
        .backing_format = p->o->backing ? BV_FMT_QCOW2 : BV_FMT_NONE,
    };
    int r = bv_image_create(&co, &e);
    p->created = r == 0;
    struct bv_open_opts oo = { .path = p->o->target, .format = BV_FMT_QCOW2, .root = app->root };
    if (r == 0)
        r = bv_node_open(&oo, &p->target, &e);
    return r < 0 ? fail(p, r, &e) : 0;
}

/* ---------------- teardown ---------------- */

static void qmp_quiet(struct pull *p, const char *cmd, cJSON *args, const char *event,
                      const char *key)
{
    if (bv_qmp_execute(p->d->vm->q, cmd, args, 0, NULL, NULL, 0, NULL) == 0 && event) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, key, p->name);
        bv_qmp_wait_event(p->d->vm->q, event, m, EVENT_MS, NULL, NULL);
        cJSON_Delete(m);
    }
    cJSON_Delete(args);
}

static cJSON *args1(const char *k, const char *v)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, k, v);
    return a;
}

/* The reference's order: the export before the job (cancelling the job
 * first would let the export read through to the live disk). */
static void teardown(struct pull *p)
{
    if (p->exported) {
        cJSON *a = args1("id", p->name);
        cJSON_AddStringToObject(a, "mode", "hard");
        qmp_quiet(p, "block-export-del", a, "BLOCK_EXPORT_DELETED", "id");
    }
    if (p->server)
        qmp_quiet(p, "nbd-server-stop", NULL, NULL, NULL);
    if (p->txn) {
        cJSON *a = args1("device", p->name);
        cJSON_AddBoolToObject(a, "force", true);
        qmp_quiet(p, "block-job-cancel", a, "BLOCK_JOB_CANCELLED", "device");
    }
    if (p->overlay)
        qmp_quiet(p, "blockdev-del", args1("node-name", p->name), NULL, NULL);
    if (p->sock[0])
        unlink(p->sock);
    if (p->scratch)
        unlink(p->scratch_abs);
}

/* Success: OLD goes.  Failure: a full's NEW goes; an incremental's OLD is
 * merged into NEW and removed in one transaction. */
static void settle_bitmaps(struct pull *p, bool ok)
{
    const char *node = p->info.node_name;
    if (!p->txn || (ok && !p->o->old_bitmap))
        return;
    if (ok || !p->o->old_bitmap) {
        cJSON *a = args1("node", node);
        cJSON_AddStringToObject(a, "name", ok ? p->o->old_bitmap : p->o->new_bitmap);
        qmp_quiet(p, "block-dirty-bitmap-remove", a, NULL, NULL);
        return;
    }
    cJSON *args = cJSON_CreateObject(), *acts = cJSON_AddArrayToObject(args, "actions"), *d;
    d = action(acts, "block-dirty-bitmap-merge");
    cJSON_AddStringToObject(d, "node", node);
    cJSON_AddStringToObject(d, "target", p->o->new_bitmap);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "bitmaps"),
                         cJSON_CreateString(p->o->old_bitmap));
    d = action(acts, "block-dirty-bitmap-remove");
    cJSON_AddStringToObject(d, "node", node);
    cJSON_AddStringToObject(d, "name", p->o->old_bitmap);
    qmp_quiet(p, "transaction", args, NULL, NULL);
}

/* ---------------- the whole ---------------- */

static void pull_free(struct pull *p)
{
    for (unsigned i = 0; i < MAX_INFLIGHT; i++)
        free(p->slots[i].buf);
    free(p->set);
    bv_vm_drive_info_clear(&p->info);
    bv_error_free(p->errp);
    bv_error_free(p->werrp);
    if (p->efd >= 0)
        close(p->efd);
    pthread_mutex_destroy(&p->lk);
    pthread_cond_destroy(&p->wcond);
    pthread_cond_destroy(&p->fcond);
    free(p);
}

static int run(struct pull *p)
{
    bv_error *e = NULL;
    char prefix[32];
    int r = vm_resolve(p->d->vm, p->d->node, &p->info, &e);
    if (r < 0)
        return fail(p, r, &e);
    vm_tmp_prefix(p->d, prefix);
    snprintf(p->name, sizeof(p->name), "%s%u", prefix, ++p->d->vm->seq % 10000000u);
    if ((r = open_target(p)) < 0 || (r = make_scratch(p)) < 0 || (r = add_overlay(p)) < 0 ||
        (r = start_point(p)) < 0 || (r = start_export(p)) < 0)
        return r;
    if ((r = pull_data(p)) < 0 || (r = check_scratch(p, true)) < 0)
        return r;
    r = bv_node_flush(p->target, &e);
    return r < 0 ? fail(p, r, &e) : 0;
}

int bv_vm_pull(struct bv_vm_drive *d, const struct bv_vm_pull_opts *o,
               struct bv_vm_pull_result *res, bv_error **errp)
{
    struct pull *p = calloc(1, sizeof(*p));
    if (!p)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    p->d = d;
    p->o = o;
    p->efd = -1;
    p->scratch_min = UINT64_MAX;
    pthread_mutex_init(&p->lk, NULL);
    pthread_cond_init(&p->wcond, NULL);
    pthread_cond_init(&p->fcond, NULL);
    pthread_mutex_lock(&d->vm->op_lock);
    bv_qmp_flush_events(d->vm->q);
    int r = run(p);
    teardown(p);
    settle_bitmaps(p, r == 0);
    bool gone = r < 0 && strcmp(vm_status(d->vm), "gone") == 0;
    pthread_mutex_unlock(&d->vm->op_lock);
    bv_error *ce = NULL;
    if (p->target && bv_node_close(p->target, &ce) < 0 && r == 0)
        r = fail(p, -EIO, &ce);
    bv_error_free(ce);
    if (r < 0 && p->created)
        bv_path_unlink(d->app->root, o->target, NULL);
    if (res)
        *res = (struct bv_vm_pull_result){ p->info.size, p->total, p->done };
    atomic_fetch_add(r == 0 ? &d->pulls_ok : &d->pulls_failed, 1);
    atomic_fetch_add(&d->pulled_bytes, p->done);
    if (r < 0 && gone) {
        bv_error_setf(errp, EIO, "QEMU went away during the pull of '%s' (%s)", d->id,
                      p->errp ? p->errp->msg : strerror(-r));
        r = -EIO;
    } else if (r < 0) {
        bv_error_propagate(errp, &p->errp);
    }
    pull_free(p);
    return r;
}
