/*
 * Chain backups of VM drives: POST /drives/{id}/backups on a VM drive.  The
 * chain, its rows, CRC map and digest are those of runtime/backups.c
 * (backups-int.h); the copy is a pull (runtime/vmpull.h) run as a service
 * job of type "backup" on a worker, with progress and cancel as any job.
 *
 * Chain bitmaps in QEMU.  The recipe replaces the bitmap at every backup
 * (NEW made at the point in time, OLD removed once the pull succeeded, or
 * merged into NEW when it failed), so the chain row records the prefix
 * "blockvault-chain-<cid>" and the bitmap in QEMU is "<prefix>-<bid>" of
 * the backup that made it.  Exactly one bitmap with the prefix must exist
 * and be consistent for an incremental; otherwise (the VM restarted with a
 * raw disk, someone removed it, a crash left two) the backup is a full one
 * with `reason`.
 *
 * Order: the job is created first (its id goes into the backup row), waits
 * until the rows are recorded, then pulls; its end is recorded by
 * chain_finished() before the job's final event.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "bvdb/backups.h"
#include "qmp/qmp.h"
#include "runtime/backups-int.h"
#include "runtime/jobs.h"
#include "runtime/vmdrives.h"
#include "runtime/vmdrives-int.h"
#include "runtime/vmpull.h"

struct vm_job {
    struct chain_job *cj;            /* owned until the job ends (chain_release) */
    struct bv_vm_drive *d;           /* a reference */
    char old_bitmap[200], new_bitmap[200], parent_base[1024];
    bool full;
    pthread_mutex_t lock;            /* guards go */
    pthread_cond_t cond;
    int go;                          /* 0 wait, 1 pull, -1 never started (not recorded) */
    struct bv_job *job;              /* while running */
    uint64_t reported;
    int64_t started_ms;              /* CLOCK_MONOTONIC, for the speed limit */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The job's speed (bytes/s; 0: none), as set_speed changes it: once the
 * bytes done run ahead of speed × elapsed, wait (in slices of at most
 * 100 ms, so that a cancel or a new speed is seen). */
static void throttle(struct vm_job *v, uint64_t done)
{
    for (;;) {
        uint64_t speed = bv_job_speed(v->job);
        if (!speed || bv_job_is_cancelled(v->job))
            return;
        int64_t elapsed = mono_ms() - v->started_ms;
        int64_t due = (int64_t)(done / speed * 1000 + done % speed * 1000 / speed);
        if (due <= elapsed)
            return;
        int64_t wait = due - elapsed < 100 ? due - elapsed : 100;
        struct timespec ts = { 0, (long)wait * 1000000L };
        nanosleep(&ts, NULL);
    }
}

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct vm_job *v = opaque;
    if (v->reported == 0)
        bv_job_set_len(v->job, total);
    bv_job_progress_add(v->job, done - v->reported);
    v->reported = done;
    throttle(v, done);
}

static bool on_cancelled(void *opaque)
{
    return bv_job_is_cancelled(((struct vm_job *)opaque)->job);
}

static void on_copied(void *opaque, uint64_t off, uint64_t len, const void *data)
{
    chain_copied(((struct vm_job *)opaque)->cj, off, len, data);
}

/* The chain bitmap prefixes ("blockvault-chain-<cid>-") of a drive's other chains. */
struct old_chains {
    const char *keep;            /* the new chain's id */
    char (*prefix)[200];
    size_t n, cap;
};

static int collect_old_chain(const struct bvdb_chain *c, void *opaque)
{
    struct old_chains *o = opaque;
    if (!c->bitmap || strcmp(c->id, o->keep) == 0)
        return 0;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 8;
        char (*p)[200] = realloc(o->prefix, cap * sizeof(*p));
        if (!p)
            return 0;
        o->prefix = p;
        o->cap = cap;
    }
    snprintf(o->prefix[o->n++], 200, "%s-", c->bitmap);
    return 0;
}

/* A new chain took over: the drive's older chains' bitmaps in QEMU go too
 * (only this drive's: another VM drive may name the same disk). */
static void drop_old_chain_bitmaps(struct vm_job *v)
{
    struct bv_vm_drive_info info;
    struct old_chains old = { .keep = v->cj->cid };
    const cJSON *bm;
    pthread_mutex_lock(&v->cj->app->backups_lock);
    bvdb_chain_list(v->cj->app->db, v->d->id, collect_old_chain, &old);
    pthread_mutex_unlock(&v->cj->app->backups_lock);
    if (old.n == 0 || bv_vm_drive_info(v->d, &info, NULL) < 0) {
        free(old.prefix);
        return;
    }
    cJSON_ArrayForEach(bm, info.bitmaps) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(bm, "name"));
        bool theirs = false;
        for (size_t i = 0; name && i < old.n && !theirs; i++)
            theirs = strncmp(name, old.prefix[i], strlen(old.prefix[i])) == 0;
        if (!theirs)
            continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "node", info.node_name);
        cJSON_AddStringToObject(a, "name", name);
        bv_qmp_execute(v->d->vm->q, "block-dirty-bitmap-remove", a, 0, NULL, NULL, 0, NULL);
        cJSON_Delete(a);
    }
    bv_vm_drive_info_clear(&info);
    free(old.prefix);
}

static int vm_job_run(struct bv_job *job, void *opaque, bv_error **errp)
{
    struct vm_job *v = opaque;
    pthread_mutex_lock(&v->lock);
    while (v->go == 0)
        pthread_cond_wait(&v->cond, &v->lock);
    int go = v->go;
    pthread_mutex_unlock(&v->lock);
    if (go < 0)
        return bv_error_setf(errp, ECANCELED, "the backup was not recorded");
    v->job = job;
    v->started_ms = mono_ms();
    struct bv_vm_pull_opts o = {
        .target = v->cj->file, .backing = v->full ? NULL : v->parent_base,
        .new_bitmap = v->new_bitmap, .old_bitmap = v->full ? NULL : v->old_bitmap,
        .progress = on_progress, .cancelled = on_cancelled, .copied = on_copied, .opaque = v,
    };
    bv_error *e = NULL;
    int r = bv_vm_pull(v->d, &o, NULL, &e);
    struct bv_job_info info;
    memset(&info, 0, sizeof(info));
    info.cancelled = r == -ECANCELED;
    if (r < 0 && !info.cancelled)
        snprintf(info.error, sizeof(info.error), "%.255s", e ? e->msg : strerror(-r));
    pthread_mutex_lock(&v->cj->app->backups_lock);
    chain_finished(v->cj->app, v->cj, &info);
    pthread_mutex_unlock(&v->cj->app->backups_lock);
    if (r == 0 && v->cj->new_chain)
        drop_old_chain_bitmaps(v);
    bv_error_propagate(errp, &e);
    bv_error_free(e);
    return r;
}

static void vm_job_release(void *opaque)
{
    struct vm_job *v = opaque;
    struct bv_app *app = v->cj->app;
    chain_release(v->cj);
    bv_vm_drives_put(app, v->d);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->cond);
    free(v);
}

/* The chain's one bitmap in QEMU, or why an incremental cannot be one. */
static const char *old_bitmap(struct bv_vm_drive *d, const struct current *cur, char *name,
                              size_t cap, char *why, size_t n)
{
    struct bv_vm_drive_info info;
    char prefix[200];
    const cJSON *bm;
    int found = 0;
    bool bad = false;
    if (!cur->chain[0] || !cur->parent[0]) {
        snprintf(why, n, "drive '%s' has no complete backup to extend", d->id);
        return why;
    }
    snprintf(prefix, sizeof(prefix), "%s-", cur->bitmap);
    bv_vm_drive_info(d, &info, NULL);
    cJSON_ArrayForEach(bm, info.bitmaps) {
        const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(bm, "name"));
        const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(bm, "status"));
        if (!nm || strncmp(nm, prefix, strlen(prefix)) != 0)
            continue;
        found++;
        bad |= st && strcmp(st, "active") != 0;
        snprintf(name, cap, "%s", nm);
    }
    bv_vm_drive_info_clear(&info);
    if (found == 1 && !bad)
        return NULL;
    if (found == 0)
        snprintf(why, n, "the chain's bitmap '%s…' is missing in QEMU (the VM restarted with a "
                 "disk that cannot keep it, or it was removed)", prefix);
    else
        snprintf(why, n, "the chain's bitmap '%s…' in QEMU is not in a state to count from "
                 "(%s)", prefix, found > 1 ? "more than one" : "inconsistent or disabled");
    return why;
}

static struct vm_job *vm_job_new(struct bv_app *app, struct bv_vm_drive *d, uint64_t size)
{
    struct vm_job *v = calloc(1, sizeof(*v));
    struct chain_job *cj = calloc(1, sizeof(*cj));
    if (!v || !cj || bv_crcmap_new(size, &cj->map, NULL) < 0) {
        free(v);
        free(cj);
        return NULL;
    }
    cj->app = app;
    cj->size = size;
    snprintf(cj->drive, sizeof(cj->drive), "%s", d->id);
    v->cj = cj;
    v->d = bv_vm_drives_get(app, d->id);       /* the job's own reference */
    if (!v->d) {
        chain_release(cj);
        free(v);
        return NULL;
    }
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->cond, NULL);
    return v;
}

static void set_go(struct vm_job *v, int go)
{
    pthread_mutex_lock(&v->lock);
    v->go = go;
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
}

/* Names of the new backup: ids, directory, file, bitmaps. */
static int plan(struct bv_app *app, struct vm_job *v, const struct current *cur, char *dir,
                size_t dcap, int64_t *bseq, bv_error **errp)
{
    struct chain_job *cj = v->cj;
    int64_t cseq = 0;
    if (bvdb_next_seq(app->db, "backup", bseq) < 0 ||
        (v->full && bvdb_next_seq(app->db, "chain", &cseq) < 0))
        return bv_error_setf(errp, EIO, "cannot allocate a backup id in the catalog");
    snprintf(cj->bid, sizeof(cj->bid), "b%lld", (long long)*bseq);
    if (v->full) {
        cj->new_chain = true;
        snprintf(cj->cid, sizeof(cj->cid), "c%lld", (long long)cseq);
        snprintf(dir, dcap, "chains/%s/%s", cj->drive, cj->cid);
        snprintf(cj->bitmap, sizeof(cj->bitmap), CHAIN_BITMAP_PREFIX "%s", cj->cid);
    } else {
        snprintf(cj->cid, sizeof(cj->cid), "%s", cur->chain);
        snprintf(dir, dcap, "%s", cur->dir);
        snprintf(cj->bitmap, sizeof(cj->bitmap), "%s", cur->bitmap);
        snprintf(cj->parent, sizeof(cj->parent), "%s", cur->parent);
        const char *slash = strrchr(cur->parent_file, '/');
        snprintf(v->parent_base, sizeof(v->parent_base), "%s",
                 slash ? slash + 1 : cur->parent_file);
    }
    snprintf(cj->file, sizeof(cj->file), "%s/%s.qcow2", dir, cj->bid);
    snprintf(v->new_bitmap, sizeof(v->new_bitmap), "%s-%s", cj->bitmap, cj->bid);
    return 0;
}

static int create_locked(struct bv_app *app, struct bv_vm_drive *d,
                         const struct bv_backup_request *rq, char *bid_out, bv_error **errp)
{
    struct current cur;
    struct bv_vm_drive_info info;
    char why[400], dir[512];
    memset(&cur, 0, sizeof(cur));
    bvdb_chain_list(app->db, d->id, find_chain, &cur);
    bvdb_backup_list(app->db, d->id, NULL, find_parent, &cur);
    if (cur.running)
        return bv_error_setf(errp, EBUSY, "A backup of drive '%s' is already running", d->id);
    bv_vm_drive_info(d, &info, NULL);
    bool gone = strcmp(info.vm_status, "gone") == 0;
    uint64_t size = info.size;
    bv_vm_drive_info_clear(&info);
    if (gone)
        return bv_error_setf(errp, EIO, "the VM of drive '%s' is gone (QEMU does not answer on "
                             "'%s')", d->id, d->vm->qmp);
    struct vm_job *v = vm_job_new(app, d, size);
    if (!v)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    const char *reason = rq->incremental ? old_bitmap(d, &cur, v->old_bitmap,
                                                      sizeof(v->old_bitmap), why, sizeof(why))
                                         : NULL;
    v->full = !rq->incremental || reason;
    v->cj->verify = rq->verify;      /* a checksum verify of the link, queued at its end */
    int64_t bseq = 0;
    int r = plan(app, v, &cur, dir, sizeof(dir), &bseq, errp);
    if (r == 0)
        r = make_dirs(app, dir, errp);
    if (r < 0) {
        vm_job_release(v);
        return r;
    }
    char params[1200];
    snprintf(params, sizeof(params), "{\"sync\":\"%s\",\"target\":\"%.1023s\"}",
             v->full ? "full" : "incremental", v->cj->file);
    struct bv_task_spec ts = {
        .type = "backup", .device = d->id, .params = params,
        .run = vm_job_run, .release = vm_job_release, .opaque = v,
    };
    struct bv_job_info ji;
    struct chain_job *cj = v->cj;
    r = bv_jobs_task(app, &ts, &ji, errp);        /* failure: v released */
    if (r < 0)
        return r;
    snprintf(cj->job_id, sizeof(cj->job_id), "%s", ji.id);
    r = record_start(app, cj, v->full, reason, dir, rq, bseq, errp);
    if (r == 0)
        snprintf(bid_out, BV_BACKUP_ID_MAX, "%s", cj->bid);
    set_go(v, r == 0 ? 1 : -1);                   /* v and cj may be gone after this */
    return r;
}

int bv_vm_backups_create(struct bv_app *app, const struct bv_backup_request *rq,
                         char bid_out[BV_BACKUP_ID_MAX], bv_error **errp)
{
    struct bv_vm_drive *d = bv_vm_drives_get(app, rq->drive);
    if (!d)
        return 1;
    pthread_mutex_lock(&app->backups_lock);
    int r = create_locked(app, d, rq, bid_out, errp);
    pthread_mutex_unlock(&app->backups_lock);
    bv_vm_drives_put(app, d);
    return r;
}
