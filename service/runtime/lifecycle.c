/*
 * Drive lifecycle: deleting a drive that has backup chains (see drives.h,
 * "drive lifecycle").  Order of a delete, under app->backups_lock:
 *   1. plan: the drive (attached in the registry, or a detached row), its
 *      backups (ids, files, chain folders) and the refusals;
 *   2. the catalog, in one transaction: detach (KEEP), or purge the chains
 *      and the drive's row (DELETE, or no backups at all);
 *   3. the registry entry is unlinked (the drive closes once no request
 *      uses it), or a VM drive is removed (runtime/vmdrives.h: the objects
 *      the service made in QEMU go; a detached VM drive keeps a drives row
 *      made here, sized as its newest backup);
 *   4. files: the link files and chain folders (DELETE), the image
 *      (delete_file).
 * A crash after 2 leaves at most unreferenced files under chains/<drive>/,
 * never a catalog row that names a missing file.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "bv/path.h"
#include "bvdb/backups.h"
#include "bvdb/drives.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/drives.h"
#include "runtime/jobs.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"

#define MAX_LINKS 100000

/* ---- detached drives ------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, const char *s)
{
    snprintf(dst, n, "%s", s ? s : "");
}

static void detached_of(const struct bvdb_drive *d, struct bv_detached_drive *o)
{
    memset(o, 0, sizeof(*o));
    copy_str(o->id, sizeof(o->id), d->id);
    copy_str(o->format, sizeof(o->format), d->format);
    o->size = d->size;
    o->cluster_size = d->cluster_size;
    copy_str(o->created_at, sizeof(o->created_at), d->created_at);
    copy_str(o->detached_at, sizeof(o->detached_at), d->detached_at);
}

struct one_detached {
    bool found;
    struct bv_detached_drive *out;
};

static void get_detached(const struct bvdb_drive *d, void *opaque)
{
    struct one_detached *o = opaque;
    if (!d->detached_at)
        return;
    o->found = true;
    if (o->out)
        detached_of(d, o->out);
}

int bv_drives_detached_get(struct bv_app *app, const char *id, struct bv_detached_drive *out)
{
    struct one_detached o = { false, out };
    if (bvdb_drive_get(app->db, id, get_detached, &o) < 0 || !o.found)
        return -ENODEV;
    return 0;
}

struct detached_acc {
    struct bv_detached_drive *v;
    size_t n;
    bool oom;
};

static int add_detached(const struct bvdb_drive *d, void *opaque)
{
    struct detached_acc *a = opaque;
    if (!d->detached_at)
        return 0;
    struct bv_detached_drive *v = realloc(a->v, (a->n + 1) * sizeof(*v));
    if (!v) {
        a->oom = true;
        return 1;
    }
    a->v = v;
    detached_of(d, &a->v[a->n++]);
    return 0;
}

int bv_drives_detached_list(struct bv_app *app, struct bv_detached_drive **out)
{
    struct detached_acc a = { NULL, 0, false };
    int r = bvdb_drive_list(app->db, add_detached, &a);
    if (r < 0 || a.oom) {
        free(a.v);
        return r < 0 ? r : -ENOMEM;
    }
    *out = a.v;
    return (int)a.n;
}

/* ---- the plan ----------------------------------------------------------------------- */

struct link {
    char id[BV_BACKUP_ID_MAX], chain[BV_BACKUP_ID_MAX];
    char file[1024];
};

struct plan {
    struct bv_drive_entry *e;      /* attached: a reference; NULL when detached or a VM drive */
    bool vm;                       /* a VM drive (runtime/vmdrives.h) */
    uint64_t last_size;            /* virtual size of its newest backup */
    struct bv_detached_drive detached;
    struct link *links;
    size_t n;
    unsigned running;              /* backups still being written */
    bool oom;
    char image[1024];              /* the image to unlink with delete_file, or "" */
};

static int add_link(const struct bvdb_backup *b, void *opaque)
{
    struct plan *p = opaque;
    if (strcmp(b->status, "running") == 0)
        p->running++;
    p->last_size = b->virtual_size;
    struct link *v = p->n < MAX_LINKS ? realloc(p->links, (p->n + 1) * sizeof(*v)) : NULL;
    if (!v) {
        p->oom = true;
        return 1;
    }
    p->links = v;
    struct link *l = &p->links[p->n++];
    copy_str(l->id, sizeof(l->id), b->id);
    copy_str(l->chain, sizeof(l->chain), b->chain_id);
    copy_str(l->file, sizeof(l->file), strcmp(b->status, "failed") ? b->file : "");
    return 0;
}

static bool is_link(const struct plan *p, const char *id)
{
    for (size_t i = 0; id && id[0] && i < p->n; i++)
        if (strcmp(p->links[i].id, id) == 0)
            return true;
    return false;
}

/* A live job that works on the drive or reads one of its backups: its id into who. */
static bool job_uses(struct bv_app *app, const char *drive, const struct plan *p, char *who,
                     size_t len)
{
    struct bv_job_view *v = NULL;
    size_t n = bv_jobs_list(app, false, NULL, NULL, &v);
    bool found = false;
    for (size_t i = 0; i < n && !found; i++) {
        const struct bv_job_info *j = &v[i].info;
        if (j->status == BV_JOB_CONCLUDED || j->status == BV_JOB_NULL)
            continue;
        cJSON *params = cJSON_Parse(v[i].params);
        const cJSON *bk = cJSON_GetObjectItem(params, "backup");
        found = strcmp(j->device, drive) == 0 || is_link(p, j->device) ||
                (cJSON_IsString(bk) && is_link(p, bk->valuestring));
        cJSON_Delete(params);
        if (found)
            snprintf(who, len, "%s", j->id);
    }
    free(v);
    return found;
}

static int refusals(struct bv_app *app, const char *id, const struct bv_drive_delete_opts *o,
                    const struct plan *p, bv_error **errp)
{
    char who[160];
    if (p->e && bv_drive_busy(p->e->drive))
        return bv_error_setf(errp, EBUSY, "Node '%s' is busy: block device is in use by a job",
                             id);
    if (p->running)
        return bv_error_setf(errp, EBUSY, "A backup of drive '%s' is running", id);
    if (p->n == 0)
        return 0;
    if (o->backups == BV_DRIVE_BACKUPS_REFUSE)
        return bv_error_setf(errp, EBUSY, "Drive '%s' has %zu backup(s): delete it with "
                             "?keep_backups=true (the backups stay and the drive shows as "
                             "detached) or ?delete_backups=true (the backups are deleted too)",
                             id, p->n);
    if (o->backups == BV_DRIVE_BACKUPS_DELETE && job_uses(app, id, p, who, sizeof(who)))
        return bv_error_setf(errp, EBUSY, "Job '%s' uses drive '%s' or one of its backups",
                             who, id);
    return 0;
}

static int plan_locked(struct bv_app *app, const char *id, const struct bv_drive_delete_opts *o,
                       struct plan *p, bv_error **errp)
{
    memset(p, 0, sizeof(*p));
    int r = bv_drives_detached_get(app, id, &p->detached);
    struct bv_vm_drive *vm = r < 0 ? bv_vm_drives_get(app, id) : NULL;
    p->vm = vm != NULL;
    bv_vm_drives_put(app, vm);
    if (r < 0 && !p->vm && (r = bv_drives_get(app, id, &p->e, errp)) < 0)
        return r;
    if (p->e && o->delete_file && p->e->format != BV_DRIVE_BLKVERIFY)
        copy_str(p->image, sizeof(p->image), p->e->file);
    if (bvdb_backup_list(app->db, id, NULL, add_link, p) < 0 || p->oom)
        return bv_error_setf(errp, EIO, "cannot read the backups of drive '%s' from the "
                             "catalog", id);
    return refusals(app, id, o, p, errp);
}

/* ---- files -------------------------------------------------------------------------- */

/* rmdir of name inside the storage-relative directory dir (names the service made). */
static void remove_dir(struct bv_app *app, const char *dir, const char *name)
{
    int fd = -1;
    if (bv_path_open(app->root, NULL, dir, 0, O_RDONLY | O_DIRECTORY, 0, &fd, NULL, NULL) < 0)
        return;
    if (unlinkat(fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        log_warn("cannot remove folder '%s/%s': %s", dir, name, strerror(errno));
    fsync(fd);
    close(fd);
}

static void remove_chains(struct bv_app *app, const char *drive, const struct plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        bv_error *e = NULL;
        int r = p->links[i].file[0] ? bv_path_unlink(app->root, p->links[i].file, &e) : 0;
        if (r < 0 && r != -ENOENT)
            log_warn("cannot remove backup link '%s': %s", p->links[i].file,
                     e ? e->msg : strerror(-r));
        bv_error_free(e);
    }
    char dir[300];
    snprintf(dir, sizeof(dir), "chains/%s", drive);
    for (size_t i = 0; i < p->n; i++)
        if (i == 0 || strcmp(p->links[i].chain, p->links[i - 1].chain) != 0)
            remove_dir(app, dir, p->links[i].chain);
    remove_dir(app, "chains", drive);
}

/* ---- the delete ----------------------------------------------------------------------- */

static int catalog_locked(struct bv_app *app, const char *id, const struct bv_drive_delete_opts *o,
                          const struct plan *p, bv_error **errp)
{
    int r = 0;
    if (p->n > 0 && o->backups == BV_DRIVE_BACKUPS_KEEP) {
        if (!p->e && !p->vm)
            return 0;                      /* detached already */
        char now[32];
        bv_app_now_str(app, now);
        if (p->vm) {                       /* a row to stay behind: QEMU had the image */
            struct bvdb_drive rec = {
                .id = id, .format = "qcow2", .file = "", .size = p->last_size,
                .filters = "{}", .created_at = now, .detached_at = now,
            };
            r = bvdb_drive_insert(app->db, &rec);
        }
        if (r == 0)
            r = bvdb_drive_detach(app->db, id, now);
    } else {
        r = bvdb_backups_purge_drive(app->db, id, true);
    }
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot remove drive '%s' from the catalog", id);
    return 0;
}

int bv_drives_delete(struct bv_app *app, const char *id, const struct bv_drive_delete_opts *o,
                     bv_error **errp)
{
    struct plan p;
    pthread_mutex_lock(&app->backups_lock);
    int r = plan_locked(app, id, o, &p, errp);
    if (r == 0)
        r = catalog_locked(app, id, o, &p, errp);
    if (r == 0 && p.e)
        bv_registry_unlink(app, p.e);
    bv_registry_put(app, p.e);            /* closes the drive once no request uses it */
    if (r == 0 && p.vm)
        r = bv_vm_drives_remove(app, id, errp);   /* its QEMU objects and row */
    if (r == 0 && p.n > 0 && o->backups == BV_DRIVE_BACKUPS_DELETE)
        remove_chains(app, id, &p);
    pthread_mutex_unlock(&app->backups_lock);
    if (r == 0 && p.image[0])
        bv_path_unlink(app->root, p.image, NULL);
    if (r == 0 && p.n > 0)
        log_info("drive '%s' deleted; its %zu backup(s) %s", id, p.n,
                 o->backups == BV_DRIVE_BACKUPS_KEEP ? "are kept (detached)" : "are deleted");
    free(p.links);
    return r;
}
