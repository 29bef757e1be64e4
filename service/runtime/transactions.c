/*
 * Transactions: see transactions.h.  Each action type is a row of
 * prepare / commit / abort (style.md §6: only prepare may fail; exactly one
 * of commit or abort runs).  The per-action undo state lives in struct step.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "bv/path.h"
#include "bvdb/drives.h"
#include "log.h"
#include "runtime/registry.h"
#include "runtime/transactions.h"
#include "runtime/vmdrives.h"

const char *const bv_txn_type_names[] = {
    "block-dirty-bitmap-add", "block-dirty-bitmap-clear", "block-dirty-bitmap-enable",
    "block-dirty-bitmap-disable", "block-dirty-bitmap-merge", "block-dirty-bitmap-remove",
    "drive-backup", NULL,
};

struct step {
    const struct bv_txn_action *a;
    struct bv_drive_entry *e;            /* borrowed from the txn's drive list */
    struct bv_dirty_bitmap *bm;
    struct bv_bitmap_backup *saved;      /* clear, merge */
    bool was_enabled;                    /* enable, disable */
    struct bv_job *job;                  /* drive-backup (a reference) */
    char *created_target;
};

struct txn {
    struct bv_app *app;
    struct bv_drive_entry **drives;      /* distinct, sorted by drive address */
    size_t ndrives;
    struct bv_job_txn *group;            /* grouped mode */
};

static const char *action_drive(const struct bv_txn_action *a)
{
    return a->type == BV_TXN_DRIVE_BACKUP ? a->backup.device : a->node;
}

static struct bv_drive_entry *txn_drive(struct txn *t, const char *id)
{
    for (size_t i = 0; i < t->ndrives; i++)
        if (strcmp(t->drives[i]->id, id) == 0)
            return t->drives[i];
    return NULL;
}

static int by_address(const void *a, const void *b)
{
    const struct bv_drive_entry *x = *(struct bv_drive_entry *const *)a;
    const struct bv_drive_entry *y = *(struct bv_drive_entry *const *)b;
    return x->drive < y->drive ? -1 : x->drive > y->drive;
}

/* The distinct drives the actions name that exist, with references. */
static int collect_drives(struct txn *t, const struct bv_txn_action *acts, size_t n)
{
    t->drives = calloc(n ? n : 1, sizeof(*t->drives));
    if (!t->drives)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *id = action_drive(&acts[i]);
        if (!id || txn_drive(t, id))
            continue;
        struct bv_drive_entry *e = bv_registry_get(t->app, id);
        if (e)
            t->drives[t->ndrives++] = e;
    }
    qsort(t->drives, t->ndrives, sizeof(*t->drives), by_address);
    return 0;
}

/* ---- bitmap actions -------------------------------------------------------- */

static int bitmap_of(struct step *s, bv_error **errp)
{
    return bv_bitmaps_lookup(s->e, s->a->bitmap.name, &s->bm, errp);
}

static int prepare_bitmap(struct txn *t, struct step *s, bv_error **errp)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(s->e->drive);
    const struct bv_txn_action *a = s->a;
    int r;
    switch (a->type) {
    case BV_TXN_BITMAP_ADD:
        return bv_bitmaps_add(t->app, s->e, &a->bitmap, &s->bm, errp);
    case BV_TXN_BITMAP_CLEAR:
        if ((r = bitmap_of(s, errp)) < 0)
            return r;
        return bv_bitmap_clear_backup(set, s->bm, &s->saved, errp);
    case BV_TXN_BITMAP_ENABLE:
        if ((r = bitmap_of(s, errp)) < 0)
            return r;
        return bv_bitmap_enable(set, s->bm, &s->was_enabled, errp);
    case BV_TXN_BITMAP_DISABLE:
        if ((r = bitmap_of(s, errp)) < 0)
            return r;
        return bv_bitmap_disable(set, s->bm, &s->was_enabled, errp);
    case BV_TXN_BITMAP_REMOVE:
        if ((r = bitmap_of(s, errp)) < 0)
            return r;
        return bv_bitmap_remove_prepare(set, s->bm, errp);
    case BV_TXN_BITMAP_MERGE: {
        if ((r = bitmap_of(s, errp)) < 0)
            return r;
        struct bv_dirty_bitmap *src[BV_BITMAP_MAX_MERGE_SOURCES];
        if (a->nsources == 0 || a->nsources > BV_BITMAP_MAX_MERGE_SOURCES)
            return bv_error_setf(errp, EINVAL, "'sources' must name 1 to %d bitmaps",
                                 BV_BITMAP_MAX_MERGE_SOURCES);
        for (size_t i = 0; i < a->nsources; i++)
            if ((r = bv_bitmaps_lookup(s->e, a->sources[i], &src[i], errp)) < 0)
                return r;
        return bv_bitmap_merge(set, s->bm, set, src, a->nsources, &s->saved, errp);
    }
    default:
        return -EINVAL;
    }
}

static void commit_bitmap(struct txn *t, struct step *s)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(s->e->drive);
    const char *name = s->a->bitmap.name;
    switch (s->a->type) {
    case BV_TXN_BITMAP_CLEAR:
    case BV_TXN_BITMAP_MERGE:
        bv_bitmap_backup_free(s->saved);
        break;
    case BV_TXN_BITMAP_ENABLE:
    case BV_TXN_BITMAP_DISABLE:
        if (bvdb_bitmap_set_enabled(t->app->db, s->e->id, name,
                                    s->a->type == BV_TXN_BITMAP_ENABLE) < 0)
            log_error("cannot record bitmap '%s' state in the catalog", name);
        break;
    case BV_TXN_BITMAP_REMOVE:
        bv_bitmap_remove_commit(set, s->bm);
        if (bvdb_bitmap_delete(t->app->db, s->e->id, name) < 0)
            log_error("cannot remove bitmap '%s' from the catalog", name);
        break;
    default:
        break;
    }
}

static void abort_bitmap(struct txn *t, struct step *s)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(s->e->drive);
    switch (s->a->type) {
    case BV_TXN_BITMAP_ADD:
        bv_bitmaps_remove(t->app, s->e, s->a->bitmap.name, NULL);
        break;
    case BV_TXN_BITMAP_CLEAR:
    case BV_TXN_BITMAP_MERGE:
        if (s->saved)
            bv_bitmap_restore(set, s->bm, s->saved);
        break;
    case BV_TXN_BITMAP_ENABLE:
    case BV_TXN_BITMAP_DISABLE:
        bv_bitmap_set_enabled(set, s->bm, s->was_enabled, NULL, NULL);
        break;
    case BV_TXN_BITMAP_REMOVE:
        bv_bitmap_remove_abort(set, s->bm);
        break;
    default:
        break;
    }
}

/* ---- one step ------------------------------------------------------------------ */

static int prepare(struct txn *t, struct step *s, bv_error **errp)
{
    const char *id = action_drive(s->a);
    s->e = id ? txn_drive(t, id) : NULL;
    bool backup = s->a->type == BV_TXN_DRIVE_BACKUP;
    if (!s->e && backup && s->a->backup.release)
        s->a->backup.release(s->a->backup.hook_opaque);
    struct bv_vm_drive *vm = s->e || !id ? NULL : bv_vm_drives_get(t->app, id);
    bv_vm_drives_put(t->app, vm);
    if (vm)                               /* its bitmaps and data live in QEMU */
        return bv_error_setf(errp, ENOTSUP, "Drive '%s' is a VM drive: transactions are not "
                             "supported for VM drives (use POST /api/v1/drives/%s/backups)",
                             id, id);
    if (!s->e)
        return bv_error_setf(errp, backup ? ENOENT : ENODEV,
                             "Cannot find device='%s' nor node-name='%s'", id ? id : "",
                             id ? id : "");
    if (!backup)
        return prepare_bitmap(t, s, errp);
    int r = bv_jobs_backup_prepare(t->app, s->e, &s->a->backup, &s->job, &s->created_target,
                                   errp);
    if (r == 0 && t->group)
        bv_job_txn_add(t->group, s->job);
    return r;
}

static void commit(struct txn *t, struct step *s)
{
    if (s->a->type == BV_TXN_DRIVE_BACKUP)
        bv_job_start(s->job);
    else
        commit_bitmap(t, s);
}

static void abort_step(struct txn *t, struct step *s)
{
    if (s->a->type == BV_TXN_DRIVE_BACKUP)
        bv_job_cancel(s->job, NULL);          /* created: cancelled, the bitmap reclaimed */
    else
        abort_bitmap(t, s);
}

/* ---- the transaction ------------------------------------------------------------ */

static int run_steps(struct txn *t, struct step *steps, size_t n, bv_error **errp)
{
    size_t i;
    int r = 0;
    for (i = 0; i < n && r == 0; i++)
        r = prepare(t, &steps[i], errp);
    if (r < 0) {
        for (size_t k = i - 1; k-- > 0;)      /* the failed one (i-1) prepared nothing */
            abort_step(t, &steps[k]);
        for (size_t k = i; k < n; k++) {       /* never prepared: their hooks go now */
            const struct bv_backup_spec *b = &steps[k].a->backup;
            if (steps[k].a->type == BV_TXN_DRIVE_BACKUP && b->release)
                b->release(b->hook_opaque);
        }
        return r;
    }
    for (i = 0; i < n; i++)
        commit(t, &steps[i]);
    return 0;
}

static int collect_ids(struct step *steps, size_t n, char ***ids, size_t *nids)
{
    *ids = calloc(n ? n : 1, sizeof(**ids));
    *nids = 0;
    if (!*ids)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (steps[i].job)
            (*ids)[(*nids)++] = strdup(bv_job_id(steps[i].job));
    return 0;
}

int bv_txn_run(struct bv_app *app, const struct bv_txn_action *actions, size_t n, bool grouped,
               char ***job_ids, size_t *njobs, bv_error **errp)
{
    struct txn t = { .app = app };
    struct step *steps = calloc(n ? n : 1, sizeof(*steps));
    *job_ids = NULL;
    *njobs = 0;
    if (!steps || collect_drives(&t, actions, n) < 0 ||
        (grouped && !(t.group = bv_job_txn_new(app->jobs)))) {
        free(steps);
        free(t.drives);
        bv_job_txn_unref(t.group);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        steps[i].a = &actions[i];
    for (size_t i = 0; i < t.ndrives; i++)
        bv_drive_quiesce(t.drives[i]->drive);
    int r = run_steps(&t, steps, n, errp);
    for (size_t i = t.ndrives; i-- > 0;)
        bv_drive_unquiesce(t.drives[i]->drive);
    if (r == 0)
        collect_ids(steps, n, job_ids, njobs);
    /* after unquiescing: freeing a job removes its notifier (quiesces) */
    for (size_t i = 0; i < n; i++) {
        if (steps[i].job)
            bv_job_unref(steps[i].job);
        if (r < 0 && steps[i].created_target)
            bv_path_unlink(app->root, steps[i].created_target, NULL);
        free(steps[i].created_target);
    }
    bv_job_txn_unref(t.group);
    for (size_t i = 0; i < t.ndrives; i++)
        bv_registry_put(app, t.drives[i]);
    free(t.drives);
    free(steps);
    return r;
}
