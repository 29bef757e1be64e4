/*
 * Prune: see prune.h.  The block work is core's (bv/prune.h); the catalog
 * steps around it are here.
 *
 * Removing link L (parent P, child C, C's child G), in order — each
 * numbered step is also a test crash point (BV_TEST_CRASH_AT=N: the daemon
 * _exit()s right after step N; only that variable enables it):
 *   0. plan, under app->backups_lock held for the whole run: L, P, C and G
 *      from the catalog, and the refusals (running, newest of a live chain);
 *   1. the intent row (prune_intents) is committed: step 'copying', the
 *      new file's name, the old files [L, C] — nothing has moved yet;
 *   2. the merged file <C>.m<N>.qcow2 is created in the chain's directory
 *      over P's file (no backing when L is the full) and C-over-L copied
 *      into it (crash 2: after its first chunk);
 *   3. it is flushed (fdatasync) and the directory fsynced;
 *   4. ONE catalog transaction switches: C's file, parent (P), kind ("full"
 *      when L was the full) and CRC map (L's overlaid by C's: C's point is
 *      unchanged, so its checksum stays), L's damage that C does not
 *      overwrite moves to C, failed rows on L move to P, L's row is
 *      deleted, the intent's step becomes 'switched';
 *   5. G's backing name becomes the merged file's (rebase -u, synced).  Until
 *      then G still reads through C's old file, which reads the same;
 *   6. the old files are unlinked (crash 6: after the first), then
 *   7. the directory is fsynced;
 *   8. the intent is deleted.
 * Without a child (the newest link of a closed chain, a failed backup)
 * there is nothing to merge: steps 2, 3 and 5 do nothing.
 *
 * A replicated chain (remote_links: L or C present on a remote) has a remote
 * side, so that the remote chain is whole at every instant — its manifest
 * names only objects that exist, and every object's backing name exists:
 *   0. the plan refuses (409) when L's or C's object is under object lock
 *      (the text names the date it unlocks), while a replicate job of the
 *      drive runs (it reads the links), and when a tiered link the merge
 *      needs (L, C, G, L's ancestors with backups.local = 0) has no copy;
 *   1b. after the intent, those tiered links are fetched back into their
 *      files (ranged GETs; their rows stay local = 0); after step 8, or
 *      after an undo, every local = 0 file of the chain is removed again
 *      (the merged child too when C was tiered: it is on the remotes by
 *      then).  A crash in between leaves local = 0 files, which the next
 *      start removes (bv_remotes_recover, after the prune recovery, which
 *      may still need G's);
 *   1. with the intent, the remote plan (prune_intents.remote_objects: per
 *      remote, the merged object's key, the old keys, G's key, and G's object
 *      lock read from the remote when G is locked) is recorded;
 *   3b. after step 3 and BEFORE the switch, the merged file is uploaded under
 *      its own new key to every remote that holds C (the old objects and the
 *      old manifest are untouched: the remote still holds the old chain);
 *      crash point 3 comes after this upload;
 *   4. the switch transaction also points C's remote records at the merged
 *      objects and drops L's;
 *   5b. after G's rebase, G's object is uploaded again (its header now names
 *      the merged file, which is already there; a locked G's new version gets
 *      the same retention, from the plan), then each manifest is
 *      rewritten from the catalog (it names the merged link), and only then
 *      are L's and C's old objects deleted.  A failure here keeps the intent
 *      (the old objects stay, unreferenced but harmless) and the next start
 *      does 5b again.
 * Recovery: 'copying' also deletes merged objects an interrupted 3b may have
 * uploaded (the old remote chain is intact); 'switched' redoes 5b.
 *
 * Recovery at start-up (bv_prune_recover), per intent left behind:
 *   'copying'  → the catalog still holds the old chain, intact: the partial
 *                new file is removed and the intent dropped;
 *   'switched' → the catalog holds the new chain: steps 5–8 are redone
 *                (each is idempotent) and the intent dropped.
 * A failure or a cancel before step 4 undoes the same way as 'copying'; the
 * catalog switch is the commit point, so after it the prune completes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "bv/crcmap.h"
#include "bv/path.h"
#include "bv/prune.h"
#include "bvdb/backups.h"
#include "bvdb/remotes.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/capacity.h"
#include "runtime/jobs.h"
#include "runtime/prune.h"
#include "runtime/remotes.h"

#define ID_MAX BV_BACKUP_ID_MAX
#define MAX_LINKS 100000

enum crash_step {
    CRASH_INTENT = 1, CRASH_COPYING, CRASH_MERGED, CRASH_SWITCHED, CRASH_REBASED,
    CRASH_UNLINKING, CRASH_UNLINKED,
};

/* One catalog row of the chain, as the plan needs it. */
struct link {
    char id[ID_MAX], chain[ID_MAX], parent[ID_MAX], kind[16], status[16];
    char file[1024];
    bool compress;
    uint64_t size;
};

struct plan {
    char chain[ID_MAX], dir[512], drive[129];
    bool closed;
    struct link *rows;             /* the chain's rows, oldest first */
    size_t n;
    struct link *link, *parent, *child, *grand;   /* into rows; NULL: none */
    char new_file[1024];           /* "" without a child */
    char *remote_plan;             /* the remote side (runtime/remotes.h), NULL: none */
};

/* A prune job's state (the job's opaque). */
struct prune {
    struct bv_app *app;
    char bid[ID_MAX];
};

/* ---- helpers --------------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, const char *s)
{
    snprintf(dst, n, "%s", s ? s : "");
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Test-only: BV_TEST_CRASH_AT=N stops the daemon dead right after step N
 * (see the list above), as a power cut would, minus the page cache.  Unset
 * in normal use. */
static void crash_point(enum crash_step step)
{
    const char *v = getenv("BV_TEST_CRASH_AT");
    if (v && atoi(v) == (int)step) {
        fprintf(stderr, "blockvault: BV_TEST_CRASH_AT=%d: exiting in the middle of a prune\n",
                (int)step);
        _exit(86);
    }
}

static void sync_dir(struct bv_app *app, const char *file)
{
    int r = bv_path_sync_parent(app->root, file);
    if (r < 0)
        log_warn("fsync of the directory of '%s' failed: %s", file, strerror(-r));
}

static void remove_file(struct bv_app *app, const char *file)
{
    bv_error *e = NULL;
    int r = bv_path_unlink(app->root, file, &e);
    if (r < 0 && r != -ENOENT)
        log_warn("cannot remove '%s': %s", file, e ? e->msg : strerror(-r));
    bv_error_free(e);
}

/* ---- the plan ---------------------------------------------------------------------- */

static void link_of(const struct bvdb_backup *b, struct link *l)
{
    memset(l, 0, sizeof(*l));
    copy_str(l->id, sizeof(l->id), b->id);
    copy_str(l->chain, sizeof(l->chain), b->chain_id);
    copy_str(l->parent, sizeof(l->parent), b->parent_id);
    copy_str(l->kind, sizeof(l->kind), b->kind);
    copy_str(l->status, sizeof(l->status), b->status);
    copy_str(l->file, sizeof(l->file), b->file);
    l->compress = b->compress;
    l->size = b->virtual_size;
}

static void get_link(const struct bvdb_backup *b, void *opaque)
{
    link_of(b, opaque);
}

static int add_row(const struct bvdb_backup *b, void *opaque)
{
    struct plan *p = opaque;
    if (p->n >= MAX_LINKS)
        return 1;
    struct link *v = realloc(p->rows, (p->n + 1) * sizeof(*v));
    if (!v)
        return 1;
    p->rows = v;
    link_of(b, &p->rows[p->n++]);
    return 0;
}

static void get_chain(const struct bvdb_chain *c, void *opaque)
{
    struct plan *p = opaque;
    copy_str(p->dir, sizeof(p->dir), c->dir);
    copy_str(p->drive, sizeof(p->drive), c->drive_id);
    p->closed = c->closed;
}

static void plan_free(struct plan *p)
{
    free(p->rows);
    free(p->remote_plan);
    memset(p, 0, sizeof(*p));
}

static bool is_failed(const struct link *l)
{
    return strcmp(l->status, "failed") == 0;
}

/* The live (not failed) row whose parent is id, or NULL. */
static struct link *child_of(struct plan *p, const char *id)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->rows[i].parent, id) == 0 && !is_failed(&p->rows[i]))
            return &p->rows[i];
    return NULL;
}

static struct link *row_named(struct plan *p, const char *id)
{
    for (size_t i = 0; i < p->n && id[0]; i++)
        if (strcmp(p->rows[i].id, id) == 0)
            return &p->rows[i];
    return NULL;
}

static int refusals(struct plan *p, bv_error **errp)
{
    const char *bid = p->link->id;
    if (strcmp(p->link->status, "running") == 0)
        return bv_error_setf(errp, EBUSY, "Backup '%s' is running", bid);
    if (p->child && strcmp(p->child->status, "running") == 0)
        return bv_error_setf(errp, EBUSY, "Backup '%s' is running on top of backup '%s'",
                             p->child->id, bid);
    if (p->grand && strcmp(p->grand->status, "running") == 0)
        return bv_error_setf(errp, EBUSY, "Backup '%s' is running on top of backup '%s', "
                             "whose data the prune moves", p->grand->id, p->child->id);
    if (!p->child && !p->closed && !is_failed(p->link))
        return bv_error_setf(errp, EBUSY, "Backup '%s' is the newest link of chain '%s', "
                             "which is still extended: the chain's bitmap counts from it",
                             bid, p->chain);
    return 0;
}

/* The links whose files a merge needs: L, C, G (its header is rewritten) and L's ancestors
 * (C is opened with its backing chain).  cb(link) for each; stops at the first non-zero. */
static int needed_links(struct plan *p, int (*cb)(struct plan *p, const struct link *l,
                                                  void *opaque), void *opaque)
{
    if (!p->child)
        return 0;                       /* nothing to merge: no file is read */
    const struct link *fixed[3] = { p->child, p->grand, p->link };
    for (int i = 0; i < 3; i++) {
        int r = fixed[i] ? cb(p, fixed[i], opaque) : 0;
        if (r)
            return r;
    }
    for (struct link *a = row_named(p, p->link->parent); a; a = row_named(p, a->parent)) {
        int r = cb(p, a, opaque);
        if (r)
            return r;
    }
    return 0;
}

struct tier_ctx {
    struct bv_app *app;
    bv_error **errp;
};

/* A tiered link the merge needs must have a copy to fetch. */
static int check_tiered(struct plan *p, const struct link *l, void *opaque)
{
    (void)p;
    struct tier_ctx *t = opaque;
    if (bvdb_backup_get_local(t->app->db, l->id) == 0 && !bv_remotes_has_copy(t->app, l->id))
        return bv_error_setf(t->errp, EBUSY, "Backup '%s' lives only on a remote that no "
                             "longer has it: it cannot be merged", l->id);
    return 0;
}

/* Bring back each tiered link the merge needs (its row stays local = 0). */
static int fetch_tiered(struct plan *p, const struct link *l, void *opaque)
{
    (void)p;
    struct tier_ctx *t = opaque;
    if (bvdb_backup_get_local(t->app->db, l->id) != 0)
        return 0;
    return bv_remotes_fetch_locked(t->app, l->id, t->errp);
}

static int plan_locked(struct bv_app *app, const char *bid, struct plan *p, bv_error **errp)
{
    struct link l;
    memset(p, 0, sizeof(*p));
    if (bvdb_backup_get(app->db, bid, get_link, &l) < 0)
        return bv_error_setf(errp, ENODEV, "Backup '%s' not found", bid);
    copy_str(p->chain, sizeof(p->chain), l.chain);
    if (bvdb_chain_get(app->db, l.chain, get_chain, p) < 0 ||
        bvdb_backup_list(app->db, NULL, l.chain, add_row, p) < 0)
        return bv_error_setf(errp, EIO, "cannot read chain '%s' from the catalog", l.chain);
    p->link = row_named(p, bid);
    if (!p->link)
        return bv_error_setf(errp, EIO, "cannot read chain '%s' from the catalog", l.chain);
    p->parent = row_named(p, p->link->parent);
    p->child = is_failed(p->link) ? NULL : child_of(p, bid);
    p->grand = p->child ? child_of(p, p->child->id) : NULL;
    if (p->link->parent[0] && !p->parent)
        return bv_error_setf(errp, EIO, "backup '%s' names a parent '%s' that is not in its "
                             "chain", bid, p->link->parent);
    int r = refusals(p, errp);
    struct tier_ctx tc = { app, errp };
    char remote[BV_REMOTE_NAME_MAX + 1];
    if (r == 0 && bv_remotes_drive_remote_only(app, p->drive, remote, sizeof(remote), NULL))
        r = bv_error_setf(errp, EBUSY, "Drive '%s' is remote-only (imported from remote '%s'): "
                          "its backups are not pruned here", p->drive, remote);
    if (r == 0)
        r = needed_links(p, check_tiered, &tc);
    char job[160];
    if (r == 0 && bv_remotes_replicating(app, p->drive, job, sizeof(job)))
        r = bv_error_setf(errp, EBUSY, "Job '%s' is replicating drive '%s': prune after it",
                          job, p->drive);
    /* object lock: the plan of the remote side refuses what it may not delete */
    if (r == 0)
        r = bv_remotes_prune_plan_locked(app, bid, p->child ? p->child->id : NULL,
                                         p->grand ? p->grand->id : NULL, "", &p->remote_plan,
                                         errp);
    return r;
}

static char *old_files_json(const struct plan *p)
{
    cJSON *old = cJSON_CreateArray();
    cJSON_AddItemToArray(old, cJSON_CreateString(p->link->file));
    if (p->child)
        cJSON_AddItemToArray(old, cJSON_CreateString(p->child->file));
    char *t = cJSON_PrintUnformatted(old);
    cJSON_Delete(old);
    return t;
}

/* Step 1: the intent, before anything moves. */
static int intent_insert(struct bv_app *app, struct plan *p, bv_error **errp)
{
    if (p->child) {
        int64_t n = 0;
        if (bvdb_next_seq(app->db, "merge", &n) < 0)
            return bv_error_setf(errp, EIO, "cannot allocate a file name in the catalog");
        snprintf(p->new_file, sizeof(p->new_file), "%s/%s.m%lld.qcow2", p->dir, p->child->id,
                 (long long)n);
    }
    char *old_text = old_files_json(p);
    if (!old_text)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    char now[32];
    bvdb_now(now);
    struct bvdb_prune_intent in = {
        .backup_id = p->link->id, .child_id = p->child ? p->child->id : NULL,
        .step = "copying", .new_file = p->child ? p->new_file : NULL, .old_files = old_text,
        .created_at = now,
    };
    int r = bvdb_prune_intent_insert(app->db, &in);
    free(old_text);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot record the prune of backup '%s' in the catalog",
                             p->link->id);
    free(p->remote_plan);
    p->remote_plan = NULL;
    r = bv_remotes_prune_plan_locked(app, p->link->id, p->child ? p->child->id : NULL,
                                     p->grand ? p->grand->id : NULL, p->new_file,
                                     &p->remote_plan, errp);
    if (r == 0 && bvdb_prune_intent_set_remote_objects(app->db, p->link->id, p->remote_plan) < 0)
        r = bv_error_setf(errp, EIO, "cannot record the prune of backup '%s' in the catalog",
                          p->link->id);
    if (r < 0)
        bvdb_prune_intent_delete(app->db, p->link->id);
    return r;
}

/* Undo before the switch: the old chain is intact. */
static void undo(struct bv_app *app, struct plan *p)
{
    bv_remotes_prune_undo_locked(app, p->remote_plan);
    if (p->new_file[0]) {
        remove_file(app, p->new_file);
        sync_dir(app, p->new_file);
    }
    if (bvdb_prune_intent_delete(app->db, p->link->id) < 0)
        log_error("cannot drop the prune intent of backup '%s' (it is undone at the next "
                  "start)", p->link->id);
}

/* ---- steps 2 and 3: the merged file ------------------------------------------------ */

static void on_written(void *opaque, uint64_t off, uint64_t len)
{
    (void)opaque;
    (void)off;
    (void)len;
    crash_point(CRASH_COPYING);
}

static int create_merged(struct bv_app *app, struct plan *p, bv_node *top, bv_error **errp)
{
    struct bv_create_opts co = {
        .path = p->new_file, .root = app->root, .format = BV_FMT_QCOW2,
        .size = bv_node_size(top), .cluster_size = bv_node_cluster_size(top),
        .backing = p->parent ? base_name(p->parent->file) : NULL,
        .backing_format = p->parent ? BV_FMT_QCOW2 : BV_FMT_NONE,
    };
    return bv_image_create(&co, errp);
}

static int merge(struct bv_app *app, struct plan *p, struct bv_job *job, bv_error **errp)
{
    bv_node *top = NULL, *out = NULL;
    struct bv_open_opts to = {
        .path = p->child->file, .format = BV_FMT_QCOW2, .root = app->root, .read_only = true,
    };
    int r = bv_node_open(&to, &top, errp);
    bv_node *l = r == 0 ? bv_node_backing(top) : NULL;
    if (r == 0 && (!l || strcmp(bv_node_filename(l), p->link->file) != 0))
        r = bv_error_setf(errp, EIO, "'%s' is not backed by '%s' as the catalog says",
                          p->child->file, p->link->file);
    if (r == 0)
        r = create_merged(app, p, top, errp);
    if (r == 0) {
        struct bv_open_opts oo = { .path = p->new_file, .format = BV_FMT_QCOW2, .root = app->root };
        r = bv_node_open(&oo, &out, errp);
    }
    if (r == 0) {
        struct bv_prune_merge_opts mo = {
            .top = top, .out = out, .compress = p->child->compress, .job = job,
            .written = on_written,
        };
        r = bv_prune_merge(&mo, errp);
    }
    int rc = bv_node_close(out, r < 0 ? NULL : errp);
    if (r == 0)
        r = rc;
    bv_node_close(top, NULL);
    if (r == 0)
        sync_dir(app, p->new_file);
    return r;
}

/* ---- step 4: the switch -------------------------------------------------------------- */

struct blob {
    uint8_t *data;
    size_t len;
};

static int load_map(struct bv_app *app, const struct link *l, struct bv_crcmap **out,
                    bv_error **errp)
{
    return bv_backups_link_crcmap(app, l->id, out, errp);
}

/* The child's new map: the link's, overlaid by the child's own. */
static int merged_map(struct bv_app *app, struct plan *p, struct bv_crcmap **child_map,
                      struct blob *out, bv_error **errp)
{
    struct bv_crcmap *m = NULL;
    int r = load_map(app, p->link, &m, errp);
    if (r == 0)
        r = load_map(app, p->child, child_map, errp);
    if (r == 0) {
        bv_crcmap_overlay(m, *child_map);
        r = bv_crcmap_serialize(m, &out->data, &out->len, errp);
    }
    bv_crcmap_free(m);
    return r;
}

struct damage_move {
    struct bv_app *app;
    const char *child;
    const struct bv_crcmap *child_map;    /* blocks the child wrote itself */
    int r;
    unsigned moved;
};

/* A damaged extent of the link stays damage of the merged child where the
 * child did not write the block over it. */
static int move_damage(uint64_t off, uint64_t len, void *opaque)
{
    struct damage_move *d = opaque;
    uint64_t end = off + len;
    for (uint64_t b = off / BV_CRC_BLOCK; b * BV_CRC_BLOCK < end && d->r == 0; b++) {
        uint32_t crc;
        if (bv_crcmap_get(d->child_map, b, &crc))
            continue;
        uint64_t s = b * BV_CRC_BLOCK > off ? b * BV_CRC_BLOCK : off;
        uint64_t e = (b + 1) * BV_CRC_BLOCK < end ? (b + 1) * BV_CRC_BLOCK : end;
        d->r = bvdb_damage_add(d->app->db, d->child, s, e - s, NULL);
        d->moved++;
    }
    return d->r < 0;
}

static int switch_child(struct bv_app *app, struct plan *p, const struct blob *map,
                        const struct bv_crcmap *child_map)
{
    const char *kind = p->parent ? p->child->kind : "full";
    int r = bvdb_backup_relink(app->db, p->child->id, p->new_file,
                               p->parent ? p->parent->id : NULL, kind, map->data, map->len);
    struct damage_move d = { app, p->child->id, child_map, 0, 0 };
    if (r == 0)
        r = bvdb_damage_list(app->db, p->link->id, move_damage, &d);
    if (r >= 0)
        r = d.r;
    if (r >= 0 && d.moved && strcmp(p->link->status, "corrupt") == 0)
        r = bvdb_backup_set_status(app->db, p->child->id, "corrupt");
    return r < 0 ? r : 0;
}

static int switch_catalog(struct bv_app *app, struct plan *p, bv_error **errp)
{
    struct blob map = { NULL, 0 };
    struct bv_crcmap *child_map = NULL;
    int r = p->child ? merged_map(app, p, &child_map, &map, errp) : 0;
    if (r < 0)
        return r;
    r = bvdb_begin(app->db);
    if (r == 0 && p->child)
        r = switch_child(app, p, &map, child_map);
    for (size_t i = 0; i < p->n && r == 0; i++) {
        struct link *f = &p->rows[i];
        if (is_failed(f) && strcmp(f->parent, p->link->id) == 0)
            r = bvdb_backup_relink(app->db, f->id, f->file, p->parent ? p->parent->id : NULL,
                                   f->kind, NULL, 0);
    }
    if (r == 0)
        r = bvdb_backup_delete(app->db, p->link->id);
    if (r == 0)
        r = bv_remotes_prune_switch_locked(app, p->remote_plan, p->link->id,
                                           p->child ? p->child->id : NULL, p->new_file);
    if (r == 0)
        r = bvdb_prune_intent_set_step(app->db, p->link->id, "switched");
    if (r == 0)
        r = bvdb_commit(app->db);
    else
        bvdb_rollback(app->db);
    free(map.data);
    bv_crcmap_free(child_map);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot switch chain '%s' in the catalog", p->chain);
    return 0;
}

/* ---- steps 5 to 8: after the switch (also the recovery of 'switched') ----------------- */

/* G reads through the merged file from now on.  0 or -errno. */
static int rebase_grandchild(struct bv_app *app, const char *grand_file, const char *child_file)
{
    bv_error *e = NULL;
    int r = bv_image_rebase_unsafe(grand_file, app->root, base_name(child_file), BV_FMT_QCOW2,
                                   &e);
    if (r < 0)
        log_error("cannot point '%s' at '%s': %s", grand_file, child_file,
                  e ? e->msg : strerror(-r));
    bv_error_free(e);
    return r;
}

static void unlink_old(struct bv_app *app, const char *old_json)
{
    cJSON *old = cJSON_Parse(old_json ? old_json : "[]");
    const cJSON *f;
    const char *last = NULL;
    cJSON_ArrayForEach(f, old) {
        if (!cJSON_IsString(f))
            continue;
        remove_file(app, f->valuestring);
        last = f->valuestring;
        crash_point(CRASH_UNLINKING);
    }
    if (last)
        sync_dir(app, last);
    cJSON_Delete(old);
    crash_point(CRASH_UNLINKED);
}

/* Steps 5–8.  The intent stays if G cannot be rebased (its old backing file
 * is kept; the next start tries again). */
static void finish(struct bv_app *app, const char *bid, const char *grand_file,
                   const char *child_file, const char *old_json)
{
    if (grand_file && rebase_grandchild(app, grand_file, child_file) < 0)
        return;
    crash_point(CRASH_REBASED);
    char *plan = NULL;
    bool remote_ok = true;
    if (bvdb_prune_intent_get_remote_objects(app->db, bid, &plan) == 0 && strcmp(plan, "[]")) {
        bv_error *e = NULL;
        if (bv_remotes_prune_finish_locked(app, plan, &e) < 0) {
            log_error("prune of backup '%s': %s (retried at the next start; the remote chain "
                      "stays whole)", bid, e ? e->msg : "the remote side failed");
            remote_ok = false;
        }
        bv_error_free(e);
    }
    free(plan);
    unlink_old(app, old_json);
    if (remote_ok && bvdb_prune_intent_delete(app->db, bid) < 0)
        log_error("cannot drop the prune intent of backup '%s'", bid);
}

/* ---- the job ---------------------------------------------------------------------------- */

static int prune_locked(struct bv_app *app, struct prune *pr, struct bv_job *job,
                        bv_error **errp)
{
    struct plan p;
    int r = plan_locked(app, pr->bid, &p, errp);
    if (r == 0 && bv_job_is_cancelled(job))
        r = bv_error_setf(errp, ECANCELED, "the prune was cancelled");
    if (r == 0)
        r = intent_insert(app, &p, errp);
    if (r < 0) {
        plan_free(&p);
        return r;
    }
    crash_point(CRASH_INTENT);
    struct tier_ctx tc = { app, errp };
    r = needed_links(&p, fetch_tiered, &tc);
    if (r == 0 && p.child) {
        r = merge(app, &p, job, errp);
        if (r == 0)
            r = bv_remotes_prune_upload_locked(app, p.remote_plan, p.new_file, errp);
        if (r == 0)
            crash_point(CRASH_MERGED);        /* 3, and 3b when the chain is replicated */
    }
    if (r == 0)
        r = switch_catalog(app, &p, errp);
    if (r < 0) {
        undo(app, &p);
        bv_remotes_drop_fetched_locked(app, p.chain);
        plan_free(&p);
        return r;
    }
    crash_point(CRASH_SWITCHED);
    char *old = old_files_json(&p);
    finish(app, p.link->id, p.grand ? p.grand->file : NULL, p.new_file, old);
    free(old);
    /* tiered links fetched for the merge (and a merged child that was tiered) leave again */
    bv_remotes_drop_fetched_locked(app, p.chain);
    plan_free(&p);
    return 0;
}

static int prune_run(struct bv_job *job, void *opaque, bv_error **errp)
{
    struct prune *pr = opaque;
    struct bv_app *app = pr->app;
    pthread_mutex_lock(&app->backups_lock);
    int r = prune_locked(app, pr, job, errp);
    pthread_mutex_unlock(&app->backups_lock);
    if (r < 0 && r != -ECANCELED)
        log_warn("prune of backup '%s' failed: %s", pr->bid,
                 errp && *errp ? (*errp)->msg : strerror(-r));
    return r;
}

/* A merge writes the child anew with the link's data: room for both files
 * (runtime/capacity.h), or ENOSPC before anything is made. */
static int check_space(struct bv_app *app, const struct plan *p, bv_error **errp)
{
    if (!p->child)
        return 0;
    uint64_t bytes = bv_capacity_file_bytes(app, p->link->file) +
                     bv_capacity_file_bytes(app, p->child->file);
    return bv_capacity_check(app, bv_capacity_need(bytes), errp);
}

int bv_prune_start(struct bv_app *app, const char *bid, struct bv_job_info *info,
                   bv_error **errp)
{
    struct plan p;
    pthread_mutex_lock(&app->backups_lock);
    int r = plan_locked(app, bid, &p, errp);
    if (r == 0)
        r = check_space(app, &p, errp);
    struct prune *pr = r == 0 ? calloc(1, sizeof(*pr)) : NULL;
    if (r == 0 && !pr)
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r == 0) {
        pr->app = app;
        copy_str(pr->bid, sizeof(pr->bid), bid);
        cJSON *params = cJSON_CreateObject();
        cJSON_AddStringToObject(params, "backup", bid);
        char *text = cJSON_PrintUnformatted(params);
        cJSON_Delete(params);
        struct bv_task_spec s = {
            .type = "prune", .device = p.drive, .params = text, .run = prune_run,
            .release = free, .opaque = pr,
        };
        r = bv_jobs_task(app, &s, info, errp);      /* pr belongs to the job */
        free(text);
    }
    pthread_mutex_unlock(&app->backups_lock);
    plan_free(&p);
    return r;
}

/* ---- recovery -------------------------------------------------------------------------- */

struct intent {
    char bid[ID_MAX], child[ID_MAX], step[16];
    char new_file[1024];
    char *old_files;
};

struct intents {
    struct intent *v;
    size_t n;
};

static int add_intent(const struct bvdb_prune_intent *in, void *opaque)
{
    struct intents *a = opaque;
    if (a->n >= MAX_LINKS)
        return 1;
    struct intent *v = realloc(a->v, (a->n + 1) * sizeof(*v));
    if (!v)
        return 1;
    a->v = v;
    struct intent *t = &a->v[a->n++];
    copy_str(t->bid, sizeof(t->bid), in->backup_id);
    copy_str(t->child, sizeof(t->child), in->child_id);
    copy_str(t->step, sizeof(t->step), in->step);
    copy_str(t->new_file, sizeof(t->new_file), in->new_file);
    t->old_files = strdup(in->old_files ? in->old_files : "[]");
    return 0;
}

struct grand_find {
    const char *child;
    char file[1024];
};

static int find_grand(const struct bvdb_backup *b, void *opaque)
{
    struct grand_find *g = opaque;
    if (b->parent_id && strcmp(b->parent_id, g->child) == 0 && strcmp(b->status, "failed") != 0)
        copy_str(g->file, sizeof(g->file), b->file);
    return 0;
}

static void recover_switched(struct bv_app *app, const struct intent *in)
{
    struct link child;
    struct grand_find g = { in->child, "" };
    bool has_child = in->child[0] && bvdb_backup_get(app->db, in->child, get_link, &child) == 0;
    if (has_child)
        bvdb_backup_list(app->db, NULL, child.chain, find_grand, &g);
    log_warn("finishing the prune of backup '%s' that a stop interrupted", in->bid);
    finish(app, in->bid, has_child && g.file[0] ? g.file : NULL,
           has_child ? child.file : "", in->old_files);
}

static void recover_one(struct bv_app *app, const struct intent *in)
{
    if (strcmp(in->step, "copying") == 0) {
        log_warn("undoing the prune of backup '%s' that a stop interrupted: its chain is "
                 "unchanged", in->bid);
        char *plan = NULL;
        if (bvdb_prune_intent_get_remote_objects(app->db, in->bid, &plan) == 0)
            bv_remotes_prune_undo_locked(app, plan);
        free(plan);
        if (in->new_file[0]) {
            remove_file(app, in->new_file);
            sync_dir(app, in->new_file);
        }
        if (bvdb_prune_intent_delete(app->db, in->bid) < 0)
            log_error("cannot drop the prune intent of backup '%s'", in->bid);
    } else if (strcmp(in->step, "switched") == 0) {
        recover_switched(app, in);
    } else {
        log_error("prune intent of backup '%s' has an unknown step '%s': left alone", in->bid,
                  in->step);
    }
}

void bv_prune_recover(struct bv_app *app)
{
    struct intents a = { NULL, 0 };
    pthread_mutex_lock(&app->backups_lock);
    if (bvdb_prune_intent_list(app->db, add_intent, &a) < 0)
        log_error("cannot read the prune intents from the catalog");
    for (size_t i = 0; i < a.n; i++) {
        recover_one(app, &a.v[i]);
        free(a.v[i].old_files);
    }
    pthread_mutex_unlock(&app->backups_lock);
    free(a.v);
}
