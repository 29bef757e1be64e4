/*
 * Drive lifecycle in the service: see drives.h.  Creating a drive is
 * prepare (image file, engine node) → register → record; a failure at any
 * step undoes the earlier ones, so the registry, the catalog and the
 * storage directory never disagree about a drive this call made.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "bv/blkverify.h"
#include "bv/path.h"
#include "bvdb/drives.h"
#include "log.h"
#include "runtime/drives.h"
#include "runtime/remotes.h"
#include "runtime/reports.h"
#include "runtime/vmdrives.h"

#define MAX_BITMAP_BLOB (512u << 20)
#define MAX_FILE_NAME   1024

static bool id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > BV_DRIVE_ID_MAX ||
        !((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

int bv_drive_id_check(const char *id, bv_error **errp)
{
    if (id_valid(id))
        return 0;
    return bv_error_setf(errp, EINVAL, "Invalid drive id '%s': use a letter, then letters, "
                         "digits, '-', '.' or '_' (at most %d)", id, BV_DRIVE_ID_MAX);
}

static void add_file(struct bv_drive_entry *e, const struct bv_file_id *id)
{
    if (e->nfiles < BV_DRIVE_MAX_FILES)
        e->files[e->nfiles++] = *id;
}

static void add_chain(struct bv_drive_entry *e, bv_node *n)
{
    for (; n; n = bv_node_backing(n)) {
        struct bv_file_id id;
        bv_node_file_id(n, &id);
        add_file(e, &id);
    }
}

static void add_named(struct bv_app *app, struct bv_drive_entry *e, const char *file)
{
    struct stat st;
    if (bv_path_stat(app->root, file, &st, NULL) == 0)
        add_file(e, &(struct bv_file_id){ .dev = (uint64_t)st.st_dev, .ino = (uint64_t)st.st_ino });
}

static int open_plain(struct bv_app *app, struct bv_drive_entry *e,
                      const struct bv_drive_filters *f, bv_node **out, bv_error **errp)
{
    struct bv_open_opts o = {
        .path = e->file, .format = bv_format_from_index((int)e->format),
        .root = app->root,
        .filters = BV_FILTERS_BLKDEBUG(f && f->has_blkdebug ? &f->blkdebug : NULL),
    };
    int r = bv_node_open(&o, out, errp);
    if (r == 0)
        add_chain(e, *out);
    return r;
}

static int open_verify(struct bv_app *app, struct bv_drive_entry *e,
                       const struct bv_drive_filters *f, bv_node **out, bv_error **errp)
{
    if (!f || !f->has_blkverify)
        return bv_error_setf(errp, EINVAL, "a blkverify drive needs \"test\" and \"raw\"");
    struct bv_blkverify_opts o = {
        .test = { .path = f->test_file, .format = f->test_format, .root = app->root },
        .raw = { .path = f->raw_file, .format = BV_FMT_RAW, .root = app->root },
        .report = bv_reports_blkverify,
        .opaque = e,
    };
    add_named(app, e, f->test_file);
    add_named(app, e, f->raw_file);
    char *file = strdup(f->test_file);
    if (!file)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    free(e->file);
    e->file = file;
    return bv_blkverify_open(&o, out, errp);
}

static int entry_new(struct bv_app *app, const struct bv_drive_spec *s, const char *file,
                     struct bv_drive_entry **out, bv_error **errp)
{
    struct bv_drive_entry *e = calloc(1, sizeof(*e));
    const char *text = s->filters_text ? s->filters_text : "{}";
    if (!e || !(e->id = strdup(s->id)) || !(e->file = strdup(file ? file : "")) ||
        !(e->filters = strdup(text))) {
        bv_drive_entry_free(e);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    e->app = app;
    e->format = s->format;
    *out = e;
    return 0;
}

/* Open the drive a spec describes (not yet in the registry). */
static int drive_open(struct bv_app *app, const struct bv_drive_spec *s, const char *file,
                      struct bv_drive_entry **out, bv_error **errp)
{
    struct bv_drive_entry *e = NULL;
    bv_node *node = NULL;
    int r = entry_new(app, s, file, &e, errp);
    if (r < 0)
        return r;
    r = s->format == BV_DRIVE_BLKVERIFY ? open_verify(app, e, s->filters, &node, errp)
                                        : open_plain(app, e, s->filters, &node, errp);
    if (r == 0)
        r = bv_drive_new(s->id, node, &e->drive, errp);
    if (r < 0) {
        bv_drive_entry_free(e);
        return r;
    }
    *out = e;
    return 0;
}

/* Create the image file for a new drive (exclusively: an existing file, even
 * one made a moment ago by POST /images, is -EEXIST); *created gets its name. */
static int create_image(struct bv_app *app, const struct bv_drive_spec *s, const char *file,
                        char **created, bv_error **errp)
{
    struct bv_create_opts co = {
        .path = file, .root = app->root, .format = bv_format_from_index((int)s->format),
        .size = s->size, .cluster_size = s->cluster_size,
    };
    bv_error *e = NULL;
    int r = bv_image_create(&co, &e);
    if (r == -EEXIST)
        r = bv_error_setf(errp, EEXIST, "Image '%s' already exists; use \"existing\":true "
                          "to open it", file);
    else if (r < 0)
        bv_error_propagate(errp, &e);
    bv_error_free(e);
    if (r == 0 && !(*created = strdup(file)))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    return r;
}

static int record_drive(struct bv_app *app, struct bv_drive_entry *e, bv_error **errp)
{
    char now[32];
    bvdb_now(now);
    struct bvdb_drive rec = {
        .id = e->id, .format = bv_drive_format_names[e->format], .file = e->file,
        .size = bv_drive_size(e->drive),
        .cluster_size = bv_node_cluster_size(bv_drive_node(e->drive)),
        .filters = e->filters, .created_at = now,
    };
    if (bvdb_drive_insert(app->db, &rec) < 0)
        return bv_error_setf(errp, EIO, "cannot record drive '%s' in the catalog", e->id);
    return 0;
}

int bv_drives_id_free(struct bv_app *app, const char *id, bv_error **errp)
{
    struct bv_drive_entry *taken = bv_registry_get(app, id);
    struct bv_vm_drive *vm = bv_vm_drives_get(app, id);     /* one id namespace */
    bv_vm_drives_put(app, vm);
    if (!taken && !vm && bv_drives_detached_get(app, id, NULL) == 0)
        return bv_error_setf(errp, EEXIST, "Drive '%s' already exists, detached with its "
                             "backups (delete it with ?delete_backups=true to reuse the id)", id);
    if (!taken && !vm && !bv_remotes_drive_remote_only(app, id, NULL, 0, NULL))
        return 0;
    bv_registry_put(app, taken);
    return bv_error_setf(errp, EEXIST, "Drive '%s' already exists", id);
}

int bv_drives_create(struct bv_app *app, const struct bv_drive_spec *s,
                     struct bv_drive_entry **out, bv_error **errp)
{
    char file[MAX_FILE_NAME], *created = NULL;
    struct bv_drive_entry *e = NULL;
    int r = bv_drive_id_check(s->id, errp);
    if (r < 0 || (r = bv_drives_id_free(app, s->id, errp)) < 0)
        goto out;
    if (s->file)
        snprintf(file, sizeof(file), "%s", s->file);
    else
        snprintf(file, sizeof(file), "%s.%s", s->id, bv_drive_format_names[s->format]);
    if (s->create && s->format != BV_DRIVE_BLKVERIFY &&
        (r = create_image(app, s, file, &created, errp)) < 0)
        goto out;
    if ((r = drive_open(app, s, file, &e, errp)) < 0)
        goto undo;
    if (bv_registry_insert(app, e) < 0) {
        bv_drive_entry_free(e);
        r = bv_error_setf(errp, EEXIST, "Drive '%s' already exists", s->id);
        goto undo;
    }
    if ((r = record_drive(app, e, errp)) < 0) {
        bv_registry_unlink(app, e);
        bv_registry_put(app, e);
        goto undo;
    }
    *out = e;
    goto out;
undo:
    if (created)
        bv_path_unlink(app->root, created, NULL);
out:
    free(created);
    return r;
}

int bv_drives_get(struct bv_app *app, const char *id, struct bv_drive_entry **out,
                  bv_error **errp)
{
    *out = bv_registry_get(app, id);
    if (*out)
        return 0;
    struct bv_vm_drive *vm = bv_vm_drives_get(app, id);   /* local-only operations refuse it */
    bv_vm_drives_put(app, vm);
    if (vm)
        return bv_error_setf(errp, EBUSY, "Drive '%s' is a VM drive: not supported for VM "
                             "drives (the VM owns the disk)", id);
    if (bv_drives_detached_get(app, id, NULL) == 0)
        return bv_error_setf(errp, EBUSY, "Drive '%s' is detached (deleted with its backups "
                             "kept): it has no image; its backups can still be read, verified "
                             "and restored", id);
    char remote[BV_REMOTE_NAME_MAX + 1];
    if (bv_remotes_drive_remote_only(app, id, remote, sizeof(remote), NULL))
        return bv_error_setf(errp, EBUSY, "Drive '%s' is remote-only (imported from remote "
                             "'%s'): its backups can be listed, read, verified and restored, "
                             "nothing else", id, remote);
    return bv_error_setf(errp, ENODEV, "Cannot find device='%s' nor node-name='%s'", id, id);
}

int bv_drives_remove(struct bv_app *app, const char *id, bool delete_file, bv_error **errp)
{
    struct bv_drive_delete_opts o = { .delete_file = delete_file,
                                      .backups = BV_DRIVE_BACKUPS_REFUSE };
    return bv_drives_delete(app, id, &o, errp);
}

int bv_drives_resize(struct bv_app *app, struct bv_drive_entry *e, uint64_t size, bool shrink,
                     bv_error **errp)
{
    int r = bv_drive_resize(e->drive, size, shrink, errp);
    if (r == 0 && bvdb_drive_set_size(app->db, e->id, bv_drive_size(e->drive)) < 0)
        r = bv_error_setf(errp, EIO, "resized, but the catalog could not record it");
    return r;
}

/* ---- bitmaps at start-up ---- */

static int restore_bitmap(const struct bvdb_bitmap *b, void *opaque)
{
    struct bv_app *app = ((void **)opaque)[0];
    struct bv_drive_entry *e = ((void **)opaque)[1];
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    bv_error *err = NULL;
    unsigned flags = BV_BITMAP_F_PERSISTENT | (b->enabled ? 0 : BV_BITMAP_F_DISABLED);
    bool broken = b->in_use || b->inconsistent || (b->data && b->size != bv_drive_size(e->drive));
    int r;
    if (broken) {
        r = bv_bitmap_add(set, b->name, b->granularity, flags | BV_BITMAP_F_INCONSISTENT, NULL, &err);
        if (r == 0) {
            log_warn("drive '%s': bitmap '%s' was in use when the service stopped; it is "
                     "inconsistent and can only be removed", e->id, b->name);
            bvdb_bitmap_set_flags(app->db, e->id, b->name, false, true);
        }
    } else if (b->data) {
        r = bv_bitmap_load(set, b->name, b->granularity, flags, b->data, b->data_len, NULL, &err);
    } else {
        r = bv_bitmap_add(set, b->name, b->granularity, flags, NULL, &err);
    }
    if (r < 0) {
        log_error("drive '%s': cannot restore bitmap '%s': %s; marking it inconsistent",
                  e->id, b->name, err ? err->msg : "?");
        bv_error_free(err);
        err = NULL;
        bv_bitmap_add(set, b->name, b->granularity, flags | BV_BITMAP_F_INCONSISTENT, NULL, NULL);
        bvdb_bitmap_set_flags(app->db, e->id, b->name, false, true);
    } else if (!broken) {
        bvdb_bitmap_set_flags(app->db, e->id, b->name, true, false);
    }
    bv_error_free(err);
    return 0;
}

static int restore_spec(const struct bvdb_drive *d, struct bv_drive_spec *s,
                        struct bv_drive_filters *f, bv_error **errp)
{
    int fmt = -1;
    for (int i = 0; d->format && bv_drive_format_names[i]; i++)
        if (strcmp(bv_drive_format_names[i], d->format) == 0)
            fmt = i;
    if (fmt < 0)
        return bv_error_setf(errp, EINVAL, "unknown drive format '%s'", d->format);
    int r = bv_filters_decode(d->filters, f, errp);
    *s = (struct bv_drive_spec){
        .id = d->id, .format = (enum bv_drive_format)fmt, .file = d->file, .filters = f,
        .filters_text = d->filters,
    };
    return r;
}

static int restore_drive(const struct bvdb_drive *d, void *opaque)
{
    struct bv_app *app = opaque;
    struct bv_drive_entry *e = NULL;
    struct bv_drive_spec s;
    struct bv_drive_filters f = { 0 };
    bv_error *err = NULL;
    if (d->detached_at)
        return 0;                       /* no image to open: only its backups live on */
    if (restore_spec(d, &s, &f, &err) < 0 || drive_open(app, &s, d->file, &e, &err) < 0) {
        log_error("drive '%s' (%s) cannot be reopened: %s; it stays in the catalog", d->id,
                  d->file, err ? err->msg : "?");
        goto out;
    }
    if (bv_registry_insert(app, e) < 0) {
        bv_drive_entry_free(e);
        goto out;
    }
    void *ctx[2] = { app, e };
    bvdb_bitmap_list(app->db, d->id, restore_bitmap, ctx);
    bv_registry_put(app, e);
out:
    bv_filters_clear(&f);
    bv_error_free(err);
    return 0;
}

void bv_drives_restore(struct bv_app *app)
{
    bvdb_bitmap_drop_volatile(app->db);
    int n = bvdb_drive_list(app->db, restore_drive, app);
    if (n > 0)
        log_info("restored %d drive(s) from the catalog", n);
}

/* ---- saving ---- */

void bv_drives_save_entry(struct bv_app *app, struct bv_drive_entry *e, bool final)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    size_t n = bv_bitmap_list(set, NULL, 0);
    struct bv_bitmap_info *infos = calloc(n ? n : 1, sizeof(*infos));
    if (!infos)
        return;
    n = bv_bitmap_list(set, infos, n);
    for (size_t i = 0; i < n; i++) {
        const struct bv_bitmap_info *bi = &infos[i];
        if (!bi->persistent || bi->inconsistent)
            continue;
        struct bv_dirty_bitmap *bm = bv_bitmap_find(set, bi->name);
        uint8_t *data = NULL;
        size_t len = 0;
        bv_error *err = NULL;
        if (!bm || bv_bitmap_serialize(set, bm, MAX_BITMAP_BLOB, &data, &len, &err) < 0) {
            log_error("drive '%s': cannot save bitmap '%s': %s", e->id, bi->name,
                      err ? err->msg : "gone");
            bv_error_free(err);
            continue;
        }
        /* a bitmap held by a job at shutdown is not trusted afterwards */
        bool enabled = bi->status != BV_BITMAP_DISABLED;
        bool in_use = !final || bi->busy;
        if (bvdb_bitmap_save(app->db, e->id, bi->name, data, len, bv_drive_size(e->drive),
                             enabled, in_use) < 0)
            log_error("drive '%s': cannot store bitmap '%s' in the catalog", e->id, bi->name);
        free(data);
    }
    free(infos);
}

void bv_drives_save_bitmaps(struct bv_app *app, bool final)
{
    struct bv_drive_entry **all = NULL;
    size_t n = bv_registry_all(app, &all);
    for (size_t i = 0; i < n; i++) {
        bv_drives_save_entry(app, all[i], final);
        bv_registry_put(app, all[i]);
    }
    free(all);
}

static void *saver_main(void *opaque)
{
    struct bv_app *app = opaque;
    pthread_mutex_lock(&app->saver_lock);
    while (!atomic_load(&app->stopping)) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += app->saver_interval;
        if (pthread_cond_timedwait(&app->saver_cond, &app->saver_lock, &t) == ETIMEDOUT) {
            pthread_mutex_unlock(&app->saver_lock);
            bv_drives_save_bitmaps(app, false);
            pthread_mutex_lock(&app->saver_lock);
        }
    }
    pthread_mutex_unlock(&app->saver_lock);
    return NULL;
}

int bv_drives_start_saver(struct bv_app *app, unsigned interval_s)
{
    app->saver_interval = interval_s;
    pthread_mutex_init(&app->saver_lock, NULL);
    pthread_cond_init(&app->saver_cond, NULL);
    if (pthread_create(&app->saver, NULL, saver_main, app) != 0)
        return -EAGAIN;
    app->saver_running = true;
    return 0;
}

void bv_drives_stop_saver(struct bv_app *app)
{
    if (!app->saver_running)
        return;
    pthread_mutex_lock(&app->saver_lock);
    pthread_cond_broadcast(&app->saver_cond);
    pthread_mutex_unlock(&app->saver_lock);
    pthread_join(app->saver, NULL);
    app->saver_running = false;
    pthread_cond_destroy(&app->saver_cond);
    pthread_mutex_destroy(&app->saver_lock);
}
