/*
 * Chain-managed backups: see backups.h.
 *
 * Creating a backup, in order:
 *   1. decide full or incremental (and why), under app->backups_lock;
 *   2. make the chain directory and, for an incremental, the link file
 *      (a qcow2 over the previous link);
 *   3. record the chain (full) and the backup row (running) in one catalog
 *      transaction;
 *   4. start the job: a full through a transaction that also adds the
 *      chain's bitmap; an incremental as a job on that bitmap;
 *   5. the job's end is recorded by chain_finished() in the catalog
 *      transaction of its final event: complete with its CRC map and
 *      digest, or failed (the link file removed).
 * A failure at 4 undoes 2 and 3.  A crash between 3 and 5 leaves a row
 * "running": bv_backups_recover() fails it and removes its file at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "bv/path.h"
#include "bvdb/backups.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/backups-int.h"
#include "runtime/capacity.h"
#include "runtime/drives.h"
#include "runtime/jobs.h"
#include "runtime/linkread.h"
#include "runtime/remotes.h"
#include "runtime/registry.h"
#include "runtime/transactions.h"
#include "runtime/verify.h"

/* struct chain_job, struct current and CHAIN_BITMAP_PREFIX are in
 * backups-int.h: VM drives (runtime/vmbackups.c) build chains with the
 * same records. */

/* ---- records ----------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, const char *s)
{
    snprintf(dst, n, "%s", s ? s : "");
}

static void rec_of(const struct bvdb_backup *b, struct bv_backup_rec *r)
{
    memset(r, 0, sizeof(*r));
    copy_str(r->id, sizeof(r->id), b->id);
    copy_str(r->drive, sizeof(r->drive), b->drive_id);
    copy_str(r->chain, sizeof(r->chain), b->chain_id);
    copy_str(r->parent, sizeof(r->parent), b->parent_id);
    copy_str(r->kind, sizeof(r->kind), b->kind);
    copy_str(r->status, sizeof(r->status), b->status);
    copy_str(r->job_id, sizeof(r->job_id), b->job_id);
    copy_str(r->file, sizeof(r->file), b->file);
    copy_str(r->created_at, sizeof(r->created_at), b->created_at);
    copy_str(r->completed_at, sizeof(r->completed_at), b->completed_at);
    copy_str(r->verified_at, sizeof(r->verified_at), b->verified_at);
    copy_str(r->checksum, sizeof(r->checksum), b->checksum);
    copy_str(r->reason, sizeof(r->reason), b->reason);
    copy_str(r->policy, sizeof(r->policy), b->policy);
    r->virtual_size = b->virtual_size;
    r->data_bytes = b->data_bytes;
    r->compress = b->compress;
    r->local = b->local;
    r->seq = b->seq;
}

static void get_cb(const struct bvdb_backup *b, void *opaque)
{
    rec_of(b, opaque);
}

/* A point is damaged if it reads a damaged block (bv_backups_point_damage). */
static bool point_damaged(struct bv_app *app, const struct bv_backup_rec *r)
{
    return bv_backups_point_damage(app, r->id, NULL, NULL) != 0;
}

int bv_backups_get(struct bv_app *app, const char *id, struct bv_backup_rec *out,
                   bv_error **errp)
{
    if (bvdb_backup_get(app->db, id, get_cb, out) < 0)
        return bv_error_setf(errp, ENODEV, "Backup '%s' not found", id);
    out->damaged = point_damaged(app, out);
    return 0;
}

struct list_acc {
    struct bv_backup_rec *v;
    size_t n, cap;
};

static int list_cb(const struct bvdb_backup *b, void *opaque)
{
    struct list_acc *a = opaque;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct bv_backup_rec *v = realloc(a->v, cap * sizeof(*v));
        if (!v)
            return 1;
        a->v = v;
        a->cap = cap;
    }
    rec_of(b, &a->v[a->n++]);
    return 0;
}

int bv_backups_list(struct bv_app *app, const char *drive, struct bv_backup_rec **out)
{
    struct list_acc a = { NULL, 0, 0 };
    int r = bvdb_backup_list(app->db, drive, NULL, list_cb, &a);
    if (r < 0) {
        free(a.v);
        return r;
    }
    for (size_t i = 0; i < a.n; i++)
        a.v[i].damaged = point_damaged(app, &a.v[i]);
    *out = a.v;
    return (int)a.n;
}

/* ---- points ---------------------------------------------------------------------- */

int bv_backups_open_point(struct bv_app *app, const char *id, bv_node **out, bv_error **errp)
{
    struct bv_backup_rec r;
    int rc = bv_backups_get(app, id, &r, errp);
    if (rc < 0)
        return rc;
    if (strcmp(r.status, "running") == 0 || strcmp(r.status, "failed") == 0)
        return bv_error_setf(errp, EBUSY, "Backup '%s' is %s: it has no data to read", id,
                             r.status);
    return bv_linkread_open(app, id, 0, out, errp);   /* local or remote links */
}

/* The chain from the full up to id, as records (full first). */
static int chain_to(struct bv_app *app, const char *id, struct bv_backup_rec **out, size_t *n)
{
    size_t cap = 16, k = 0;
    struct bv_backup_rec *v = malloc(cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    char cur[BV_BACKUP_ID_MAX];
    copy_str(cur, sizeof(cur), id);
    while (cur[0]) {
        if (k == cap) {
            struct bv_backup_rec *nv = realloc(v, (cap *= 2) * sizeof(*v));
            if (!nv || k > 100000) {
                free(nv ? nv : v);
                return -ENOMEM;
            }
            v = nv;
        }
        if (bvdb_backup_get(app->db, cur, get_cb, &v[k]) < 0) {
            free(v);
            return -ENOENT;
        }
        copy_str(cur, sizeof(cur), v[k].parent);
        k++;
    }
    for (size_t i = 0; i < k / 2; i++) {
        struct bv_backup_rec t = v[i];
        v[i] = v[k - 1 - i];
        v[k - 1 - i] = t;
    }
    *out = v;
    *n = k;
    return 0;
}

struct crcs_blob {
    uint8_t *data;
    size_t len;
};

static void crcs_cb(const struct bvdb_backup *b, void *opaque)
{
    struct crcs_blob *c = opaque;
    c->len = b->crcs ? b->crcs_len : 0;
    c->data = c->len ? malloc(c->len) : NULL;
    if (c->data)
        memcpy(c->data, b->crcs, c->len);
    else
        c->len = 0;
}

static int load_link_map(struct bv_app *app, const struct bv_backup_rec *l,
                         struct bv_crcmap **out, bv_error **errp)
{
    struct crcs_blob c = { NULL, 0 };
    bvdb_backup_get(app->db, l->id, crcs_cb, &c);
    int r = bv_crcmap_load(c.data, c.len, l->virtual_size, out, errp);
    free(c.data);
    return r;
}

int bv_backups_point_crcmap(struct bv_app *app, const char *id, struct bv_crcmap **out,
                            bv_error **errp)
{
    struct bv_backup_rec *links = NULL;
    size_t n = 0;
    if (chain_to(app, id, &links, &n) < 0 || n == 0)
        return bv_error_setf(errp, ENODEV, "Backup '%s' not found", id);
    struct bv_crcmap *m = NULL;
    int r = bv_crcmap_new(links[n - 1].virtual_size, &m, errp);
    for (size_t i = 0; i < n && r == 0; i++) {
        struct bv_crcmap *lm = NULL;
        r = load_link_map(app, &links[i], &lm, errp);
        if (r == 0)
            bv_crcmap_overlay(m, lm);
        bv_crcmap_free(lm);
    }
    free(links);
    if (r < 0) {
        bv_crcmap_free(m);
        return r;
    }
    *out = m;
    return 0;
}

int bv_backups_link_crcmap(struct bv_app *app, const char *id, struct bv_crcmap **out,
                           bv_error **errp)
{
    struct bv_backup_rec r;
    if (bvdb_backup_get(app->db, id, get_cb, &r) < 0)
        return bv_error_setf(errp, ENODEV, "Backup '%s' not found", id);
    return load_link_map(app, &r, out, errp);
}

/* ---- damage ------------------------------------------------------------------------ */

struct damage_acc {
    struct damage_ext { uint64_t off, len; } *v;
    size_t n, cap;
};

static int damage_row(uint64_t off, uint64_t len, void *opaque)
{
    struct damage_acc *d = opaque;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        void *v = cap < 1000000 ? realloc(d->v, cap * sizeof(*d->v)) : NULL;
        if (!v)
            return 1;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = (struct damage_ext){ off, len };
    return 0;
}

/* The blocks of [off, off+len) that no newer link (above) rewrote, as runs. */
static int uncovered_runs(const struct bv_crcmap *above, const char *link, uint64_t off,
                          uint64_t len,
                          void (*cb)(void *, const char *, uint64_t, uint64_t), void *opaque)
{
    int runs = 0;
    uint64_t first = off / BV_CRC_BLOCK, end = (off + len + BV_CRC_BLOCK - 1) / BV_CRC_BLOCK;
    uint64_t run_start = UINT64_MAX;
    uint32_t crc;
    for (uint64_t b = first; b <= end; b++) {
        bool open = b < end && !(above && bv_crcmap_get(above, b, &crc));
        if (open && run_start == UINT64_MAX)
            run_start = b;
        if (!open && run_start != UINT64_MAX) {
            runs++;
            if (cb)
                cb(opaque, link, run_start * BV_CRC_BLOCK, (b - run_start) * BV_CRC_BLOCK);
            run_start = UINT64_MAX;
        }
    }
    return runs;
}

int bv_backups_point_damage(struct bv_app *app, const char *id,
                            void (*cb)(void *opaque, const char *link, uint64_t off,
                                       uint64_t len),
                            void *opaque)
{
    struct bv_backup_rec *links = NULL;
    size_t n = 0;
    if (chain_to(app, id, &links, &n) < 0)
        return -ENOENT;
    struct damage_acc *dmg = calloc(n ? n : 1, sizeof(*dmg));
    size_t lowest = SIZE_MAX;
    for (size_t i = 0; dmg && i < n; i++) {
        bvdb_damage_list(app->db, links[i].id, damage_row, &dmg[i]);
        if (lowest == SIZE_MAX && (dmg[i].n || strcmp(links[i].status, "corrupt") == 0))
            lowest = i;
    }
    int found = dmg ? 0 : -ENOMEM;
    struct bv_crcmap *above = NULL;
    if (lowest != SIZE_MAX && bv_crcmap_new(links[n - 1].virtual_size, &above, NULL) < 0)
        found = -ENOMEM;
    for (size_t i = n; found >= 0 && lowest != SIZE_MAX && i-- > lowest;) {
        if (dmg[i].n == 0 && strcmp(links[i].status, "corrupt") == 0) {
            found++;
            if (cb)
                cb(opaque, links[i].id, 0, 0);
        }
        for (size_t k = 0; k < dmg[i].n; k++)
            found += uncovered_runs(above, links[i].id, dmg[i].v[k].off, dmg[i].v[k].len, cb,
                                    opaque);
        struct bv_crcmap *lm = NULL;
        if (i > lowest && load_link_map(app, &links[i], &lm, NULL) == 0)
            bv_crcmap_overlay(above, lm);
        bv_crcmap_free(lm);
    }
    bv_crcmap_free(above);
    for (size_t i = 0; dmg && i < n; i++)
        free(dmg[i].v);
    free(dmg);
    free(links);
    return found;
}

/* ---- the job's end --------------------------------------------------------------- */

void chain_copied(void *opaque, uint64_t off, uint64_t len, const void *data)
{
    struct chain_job *cj = opaque;
    bv_crcmap_record(cj->map, off, len, data);
    atomic_fetch_add(&cj->written, len);
}

void chain_release(void *opaque)
{
    struct chain_job *cj = opaque;
    bv_crcmap_free(cj->map);
    free(cj);
}

/* Digest of the new point: the parent's point plus the blocks this link
 * wrote (their old values from the parent's point). */
static void point_digest(struct bv_app *app, struct chain_job *cj, char hex[33])
{
    struct bv_crcmap *prev = NULL;
    struct bv_digest d;
    bv_digest_init(&d);
    if (cj->parent[0] && bv_backups_point_crcmap(app, cj->parent, &prev, NULL) == 0)
        bv_digest_of_map(&d, prev);
    uint64_t b = 0;
    uint32_t crc, old;
    while (bv_crcmap_next(cj->map, &b, &crc)) {
        bool had = prev && bv_crcmap_get(prev, b, &old);
        bv_digest_change(&d, cj->size, b, had, had ? old : 0, crc);
        b++;
    }
    bv_crcmap_free(prev);
    bv_digest_hex(&d, hex);
}

struct chain_ids {
    struct bv_app *app;
    const char *drive, *keep;
};

/* A new chain took over: the older chains of the drive are no longer
 * extended and their bitmaps go. */
static int close_older(const struct bvdb_chain *c, void *opaque)
{
    struct chain_ids *ci = opaque;
    if (strcmp(c->id, ci->keep) == 0 || c->closed)
        return 0;
    bvdb_chain_close(ci->app->db, c->id);
    if (c->bitmap) {
        struct bv_drive_entry *e = bv_registry_get(ci->app, ci->drive);
        if (e) {
            bv_bitmaps_remove(ci->app, e, c->bitmap, NULL);
            bv_registry_put(ci->app, e);
        }
    }
    return 0;
}

void chain_finished(struct bv_app *app, void *opaque, const struct bv_job_info *info)
{
    struct chain_job *cj = opaque;
    char now[32];
    bv_app_now_str(app, now);
    bool ok = !info->cancelled && !info->error[0];
    struct bvdb_backup b = { .id = cj->bid, .completed_at = now };
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    char hex[33] = "";
    if (ok && bv_crcmap_serialize(cj->map, &blob, &blob_len, NULL) < 0)
        ok = false;
    if (ok) {
        point_digest(app, cj, hex);
        b.status = "complete";
        b.data_bytes = atomic_load(&cj->written);
        b.checksum = hex;
        b.crcs = blob;
        b.crcs_len = blob_len;
    } else {
        b.status = "failed";
    }
    if (bvdb_backup_finish(app->db, &b) < 0)
        log_error("cannot record the end of backup '%s'", cj->bid);
    free(blob);
    if (ok && cj->verify)
        bv_verify_after_backup(app, cj->bid);   /* queued: we hold the engine lock */
    struct chain_ids ci = { app, cj->drive, cj->cid };
    if (ok && cj->new_chain) {
        bvdb_chain_list(app->db, cj->drive, close_older, &ci);
    } else if (!ok) {
        bv_path_unlink(app->root, cj->file, NULL);
        if (cj->new_chain) {
            bvdb_chain_close(app->db, cj->cid);
            struct bv_drive_entry *e = bv_registry_get(app, cj->drive);
            if (e) {
                bv_bitmaps_remove(app, e, cj->bitmap, NULL);
                bv_registry_put(app, e);
            }
        }
    }
}

/* ---- creation -------------------------------------------------------------------- */

/* mkdir -p of a name the service made (drive ids and chain ids only). */
int make_dirs(struct bv_app *app, const char *dir, bv_error **errp)
{
    char path[1024];
    copy_str(path, sizeof(path), dir);
    for (char *p = path;; p++) {
        char c = *p;
        if (c == '/' || c == '\0') {
            *p = '\0';
            if (mkdirat(app->root->fd, path, 0750) < 0 && errno != EEXIST)
                return bv_error_setf(errp, errno, "cannot create directory '%s': %s", path,
                                     strerror(errno));
            *p = c;
        }
        if (!c)
            return 0;
    }
}

int find_chain(const struct bvdb_chain *c, void *opaque)
{
    struct current *cur = opaque;
    if (!c->closed) {
        copy_str(cur->chain, sizeof(cur->chain), c->id);
        copy_str(cur->bitmap, sizeof(cur->bitmap), c->bitmap);
        copy_str(cur->dir, sizeof(cur->dir), c->dir);
    }
    return 0;
}

int find_parent(const struct bvdb_backup *b, void *opaque)
{
    struct current *cur = opaque;
    if (strcmp(b->status, "running") == 0)
        cur->running = true;
    if (strcmp(b->chain_id, cur->chain) == 0 &&
        (strcmp(b->status, "complete") == 0 || strcmp(b->status, "corrupt") == 0)) {
        copy_str(cur->parent, sizeof(cur->parent), b->id);
        copy_str(cur->parent_file, sizeof(cur->parent_file), b->file);
    }
    return 0;
}

/* Why an incremental cannot be one (NULL: it can). */
static const char *incremental_blocker(struct bv_drive_entry *e, const struct current *cur,
                                       char *why, size_t n)
{
    if (!cur->chain[0] || !cur->parent[0]) {
        snprintf(why, n, "drive '%s' has no complete backup to extend", e->id);
        return why;
    }
    struct bv_dirty_bitmap *bm = bv_bitmap_find(bv_drive_bitmaps(e->drive), cur->bitmap);
    if (!bm) {
        snprintf(why, n, "the chain's bitmap '%s' did not survive a restart", cur->bitmap);
        return why;
    }
    struct bv_bitmap_info bi;
    bv_bitmap_query(bv_drive_bitmaps(e->drive), bm, &bi);
    if (bi.inconsistent) {
        snprintf(why, n, "the chain's bitmap '%s' came back inconsistent after a crash",
                 cur->bitmap);
        return why;
    }
    return NULL;
}

static struct chain_job *chain_job_new(struct bv_app *app, struct bv_drive_entry *e)
{
    struct chain_job *cj = calloc(1, sizeof(*cj));
    if (!cj)
        return NULL;
    cj->app = app;
    cj->size = bv_drive_size(e->drive);
    copy_str(cj->drive, sizeof(cj->drive), e->id);
    if (bv_crcmap_new(cj->size, &cj->map, NULL) < 0) {
        free(cj);
        return NULL;
    }
    return cj;
}

static void spec_of(struct chain_job *cj, const struct bv_backup_request *rq, bool full,
                    struct bv_backup_spec *s)
{
    memset(s, 0, sizeof(*s));
    s->device = cj->drive;
    s->sync = full ? BV_BACKUP_SYNC_FULL : BV_BACKUP_SYNC_INCREMENTAL;
    s->bitmap = full ? NULL : cj->bitmap;
    s->bitmap_mode = -1;
    s->target = cj->file;
    s->format = "qcow2";
    s->mode_existing = !full;
    s->compress = rq->compress;
    s->auto_finalize = s->auto_dismiss = true;
    s->copied = chain_copied;
    s->finished = chain_finished;
    s->release = chain_release;
    s->hook_opaque = cj;
    s->managed_target = true;
}

static int start_full(struct bv_app *app, struct bv_drive_entry *e, struct chain_job *cj,
                      const struct bv_backup_request *rq, bv_error **errp)
{
    struct bv_txn_action acts[2];
    memset(acts, 0, sizeof(acts));
    acts[0].type = BV_TXN_BITMAP_ADD;
    acts[0].node = e->id;
    acts[0].bitmap.name = cj->bitmap;
    acts[0].bitmap.persistent = e->format == BV_DRIVE_QCOW2;
    acts[1].type = BV_TXN_DRIVE_BACKUP;
    spec_of(cj, rq, true, &acts[1].backup);
    char **ids = NULL;
    size_t n = 0;
    int r = bv_txn_run(app, acts, 2, false, &ids, &n, errp);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return r;
}

static int start_incremental(struct bv_app *app, struct bv_drive_entry *e,
                             struct chain_job *cj, const struct bv_backup_request *rq,
                             const char *parent_base, bv_error **errp)
{
    struct bv_create_opts co = {
        .path = cj->file, .root = app->root, .format = BV_FMT_QCOW2,
        .size = bv_drive_size(e->drive), .backing = parent_base,
        .backing_format = BV_FMT_QCOW2,
    };
    int r = bv_image_create(&co, errp);
    if (r < 0) {
        chain_release(cj);
        return r;
    }
    struct bv_backup_spec s;
    spec_of(cj, rq, false, &s);
    s.target_no_backing = bv_remotes_chain_tiered(app, cj->cid);
    struct bv_job_info info;
    r = bv_jobs_backup(app, &s, &info, errp);
    if (r < 0)
        bv_path_unlink(app->root, cj->file, NULL);
    return r;
}

int record_start(struct bv_app *app, struct chain_job *cj, bool full, const char *reason,
                        const char *dir, const struct bv_backup_request *rq, int64_t seq,
                        bv_error **errp)
{
    char now[32];
    bv_app_now_str(app, now);                   /* the service's clock: retention counts it */
    int r = bvdb_begin(app->db);
    if (r == 0 && cj->new_chain) {
        struct bvdb_chain c = {
            .id = cj->cid, .drive_id = cj->drive, .bitmap = cj->bitmap, .dir = dir,
            .created_at = now,
        };
        r = bvdb_chain_insert(app->db, &c);
    }
    if (r == 0) {
        struct bvdb_backup b = {
            .id = cj->bid, .drive_id = cj->drive, .chain_id = cj->cid,
            .parent_id = cj->parent[0] ? cj->parent : NULL,
            .kind = full ? "full" : "incremental", .file = cj->file, .status = "running",
            .job_id = cj->job_id[0] ? cj->job_id : cj->drive, .created_at = now,
            .virtual_size = cj->size,
            .reason = reason, .compress = rq->compress, .seq = seq, .policy = rq->policy,
        };
        r = bvdb_backup_insert(app->db, &b);
    }
    if (r == 0)
        r = bvdb_commit(app->db);
    else
        bvdb_rollback(app->db);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot record the backup in the catalog");
    return 0;
}

void unrecord(struct bv_app *app, struct chain_job *cj)
{
    bvdb_backup_delete(app->db, cj->bid);
    if (cj->new_chain)
        bvdb_chain_delete(app->db, cj->cid);
}

/* Refuse (ENOSPC, before anything is made) a backup the storage directory
 * cannot hold: runtime/capacity.h says how it is estimated. */
static int check_space(struct bv_app *app, struct bv_drive_entry *e, bool full,
                       const char *bitmap, bv_error **errp)
{
    uint64_t bytes = 0;
    if (full) {
        int r = bv_capacity_allocated(bv_drive_node(e->drive), &bytes, errp);
        if (r < 0)
            return r;
    } else {
        struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
        struct bv_dirty_bitmap *bm = bv_bitmap_find(set, bitmap);
        struct bv_bitmap_info bi = { .count = 0 };
        if (bm)
            bv_bitmap_query(set, bm, &bi);
        bytes = bi.count;
    }
    return bv_capacity_check(app, bv_capacity_need(bytes), errp);
}

static int create_locked(struct bv_app *app, struct bv_drive_entry *e,
                         const struct bv_backup_request *rq, char *bid_out, bv_error **errp)
{
    struct current cur;
    memset(&cur, 0, sizeof(cur));
    bvdb_chain_list(app->db, e->id, find_chain, &cur);
    bvdb_backup_list(app->db, e->id, NULL, find_parent, &cur);
    if (cur.running || bv_drive_busy(e->drive))
        return bv_error_setf(errp, EBUSY, "A backup of drive '%s' is already running", e->id);
    char why[300];
    const char *reason = rq->incremental ? incremental_blocker(e, &cur, why, sizeof(why)) : NULL;
    bool full = !rq->incremental || reason;
    int space = check_space(app, e, full, cur.bitmap, errp);
    if (space < 0)
        return space;
    int64_t bseq = 0, cseq = 0;
    if (bvdb_next_seq(app->db, "backup", &bseq) < 0 ||
        (full && bvdb_next_seq(app->db, "chain", &cseq) < 0))
        return bv_error_setf(errp, EIO, "cannot allocate a backup id in the catalog");
    struct chain_job *cj = chain_job_new(app, e);
    if (!cj)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    snprintf(cj->bid, sizeof(cj->bid), "b%lld", (long long)bseq);
    char dir[512];
    if (full) {
        cj->new_chain = true;
        snprintf(cj->cid, sizeof(cj->cid), "c%lld", (long long)cseq);
        snprintf(dir, sizeof(dir), "chains/%s/%s", e->id, cj->cid);
        snprintf(cj->bitmap, sizeof(cj->bitmap), CHAIN_BITMAP_PREFIX "%s", cj->cid);
    } else {
        copy_str(cj->cid, sizeof(cj->cid), cur.chain);
        copy_str(dir, sizeof(dir), cur.dir);
        copy_str(cj->bitmap, sizeof(cj->bitmap), cur.bitmap);
        copy_str(cj->parent, sizeof(cj->parent), cur.parent);
    }
    snprintf(cj->file, sizeof(cj->file), "%s/%s.qcow2", dir, cj->bid);
    cj->verify = rq->verify;
    if (!full)
        bv_verify_remark_locked(app, e, cur.parent, cur.bitmap);
    int r = make_dirs(app, dir, errp);
    if (r == 0)
        r = record_start(app, cj, full, reason, dir, rq, bseq, errp);
    if (r < 0) {
        chain_release(cj);
        return r;
    }
    const char *slash = strrchr(cur.parent_file, '/');
    const char *parent_base = slash ? slash + 1 : cur.parent_file;
    snprintf(bid_out, BV_BACKUP_ID_MAX, "%s", cj->bid);
    struct chain_job keep = *cj;                 /* cj belongs to the job from here */
    r = full ? start_full(app, e, cj, rq, errp)
             : start_incremental(app, e, cj, rq, parent_base, errp);
    if (r < 0)
        unrecord(app, &keep);
    return r;
}

int bv_backups_create(struct bv_app *app, const struct bv_backup_request *rq,
                      struct bv_backup_rec *out, struct bv_job_info *job, bv_error **errp)
{
    struct bv_drive_entry *e = NULL;
    char bid[BV_BACKUP_ID_MAX];
    int r = bv_vm_backups_create(app, rq, bid, errp);   /* 1: not a VM drive */
    if (r == 1 && (r = bv_drives_get(app, rq->drive, &e, errp)) == 0) {
        pthread_mutex_lock(&app->backups_lock);
        r = create_locked(app, e, rq, bid, errp);
        pthread_mutex_unlock(&app->backups_lock);
        bv_registry_put(app, e);
    }
    if (r < 0)
        return r;
    r = bv_backups_get(app, bid, out, errp);
    if (r == 0 && job) {
        struct bv_job *j = bv_job_find(app->jobs, out->job_id);
        memset(job, 0, sizeof(*job));
        if (j) {
            bv_job_query(j, job);
            bv_job_unref(j);
        }
    }
    return r;
}

/* ---- recovery -------------------------------------------------------------------- */

static int fail_running(const struct bvdb_backup *b, void *opaque)
{
    struct bv_app *app = opaque;
    if (strcmp(b->status, "running") != 0)
        return 0;
    log_warn("backup '%s' of drive '%s' was running when the service stopped: failed",
             b->id, b->drive_id);
    bvdb_backup_set_status(app->db, b->id, "failed");
    bv_path_unlink(app->root, b->file, NULL);
    return 0;
}

void bv_backups_recover(struct bv_app *app)
{
    bvdb_backup_list(app->db, NULL, NULL, fail_running, app);
}
