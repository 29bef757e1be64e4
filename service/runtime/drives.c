/* Drive lifecycle in the service: see drives.h. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "api/filters.h"
#include "app.h"
#include "bv/blkverify.h"
#include "bv/path.h"
#include "bvdb/drives.h"
#include "http/reply.h"
#include "json/json.h"
#include "log.h"
#include "runtime/drives.h"
#include "runtime/reports.h"

#define MAX_BITMAP_BLOB (512u << 20)

static void add_file(struct bv_drive_entry *e, const char *abs)
{
    if (abs && e->nfiles < BV_DRIVE_MAX_FILES)
        e->files[e->nfiles++] = strdup(abs);
}

static void add_chain(struct bv_drive_entry *e, bv_node *n)
{
    for (; n; n = bv_node_backing(n))
        add_file(e, bv_node_filename(n));
}

static int open_plain(struct bv_app *app, struct bv_drive_entry *e, enum bv_format fmt,
                      const struct bv_blkdebug_config *bd, bv_node **out, bv_error **errp)
{
    struct bv_open_opts o = {
        .path = e->file, .format = fmt, .root = app->images_dir, .blkdebug = bd,
    };
    int r = bv_node_open(&o, out, errp);
    if (r == 0)
        add_chain(e, *out);
    return r;
}





static int open_verify(struct bv_app *app, struct bv_drive_entry *e, const cJSON *bv,
                       bv_node **out, char *err, size_t errlen, bv_error **errp)
{
    const cJSON *test = NULL, *raw = NULL;
    const struct bvj_field f[] = {
        { "test", BVJ_OBJECT, true, &test },
        { "raw", BVJ_OBJECT, true, &raw },
    };
    const char *tfile = NULL, *rfile = NULL;
    int tfmt = -1;
    static const char *const fmts[] = { "raw", "qcow2", NULL };
    const struct bvj_field tf[] = {
        { "file", BVJ_STRING, true, &tfile },
        { "format", BVJ_ENUM, false, &tfmt, .names = fmts },
    };
    const struct bvj_field rf[] = {
        { "file", BVJ_STRING, true, &rfile },
    };
    char inner[384];
    if (bvj_read(bv, f, BVJ_COUNT(f), inner, sizeof(inner)) < 0 ||
        bvj_read(test, tf, BVJ_COUNT(tf), inner, sizeof(inner)) < 0 ||
        bvj_read(raw, rf, BVJ_COUNT(rf), inner, sizeof(inner)) < 0) {
        snprintf(err, errlen, "blkverify: %s", inner);
        return -EINVAL;
    }
    struct bv_blkverify_opts o = {
        .test = { .path = tfile, .format = tfmt >= 0 ? (enum bv_format)(tfmt + 1) : BV_FMT_NONE,
                  .root = app->images_dir },
        .raw = { .path = rfile, .format = BV_FMT_RAW, .root = app->images_dir },
        .report = bv_reports_blkverify,
        .opaque = e,
    };
    char *abs = NULL;
    if (bv_path_resolve(app->images_dir, NULL, tfile, 0, &abs, NULL) == 0)
        add_file(e, abs);
    free(abs);
    abs = NULL;
    if (bv_path_resolve(app->images_dir, NULL, rfile, 0, &abs, NULL) == 0)
        add_file(e, abs);
    free(abs);
    free(e->file);
    e->file = strdup(tfile);
    return bv_blkverify_open(&o, out, errp);
}

static int open_node(struct bv_app *app, struct bv_drive_entry *e, const cJSON *filters,
                     bv_node **out, int *status, char *err, size_t errlen)
{
    bv_error *be = NULL;
    int r;
    const cJSON *bd = cJSON_GetObjectItemCaseSensitive(filters, "blkdebug");
    const cJSON *bv = cJSON_GetObjectItemCaseSensitive(filters, "blkverify");
    *status = 400;
    if (strcmp(e->format, "blkverify") == 0) {
        if (!cJSON_IsObject(bv)) {
            snprintf(err, errlen, "a blkverify drive needs \"test\" and \"raw\"");
            return -EINVAL;
        }
        r = open_verify(app, e, bv, out, err, errlen, &be);
    } else {
        struct bv_blkdebug_config cfg;
        if (bd && api_blkdebug_parse(bd, &cfg, err, errlen) < 0)
            return -EINVAL;
        r = open_plain(app, e, bv_format_parse(e->format), bd ? &cfg : NULL, out, &be);
    }
    if (r < 0 && be) {
        snprintf(err, errlen, "%s", be->msg);
        *status = bv_status_for_errno(be->err) == 500 ? 500 : 400;
    }
    bv_error_free(be);
    return r;
}

int bv_drives_open(struct bv_app *app, const char *id, const char *format, const char *file,
                   const char *filters_json, struct bv_drive_entry **out, int *status,
                   char *err, size_t errlen)
{
    struct bv_drive_entry *e = calloc(1, sizeof(*e));
    cJSON *filters = cJSON_Parse(filters_json ? filters_json : "{}");
    int r = -ENOMEM;
    *status = 500;
    if (e)
        e->app = app;
    if (!e || !filters || !(e->id = strdup(id)) || !(e->format = strdup(format)) ||
        !(e->file = strdup(file ? file : "")) ||
        !(e->filters = strdup(filters_json ? filters_json : "{}"))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    bv_node *node = NULL;
    r = open_node(app, e, filters, &node, status, err, errlen);
    if (r < 0)
        goto fail;
    bv_error *be = NULL;
    r = bv_drive_new(id, node, &e->drive, &be);
    if (r < 0) {
        snprintf(err, errlen, "%s", be ? be->msg : "cannot create drive");
        bv_error_free(be);
        goto fail;
    }
    cJSON_Delete(filters);
    *out = e;
    return 0;
fail:
    cJSON_Delete(filters);
    bv_drive_entry_free(e);
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

static int restore_drive(const struct bvdb_drive *d, void *opaque)
{
    struct bv_app *app = opaque;
    struct bv_drive_entry *e = NULL;
    char err[512];
    int status;
    if (bv_drives_open(app, d->id, d->format, d->file, d->filters, &e, &status, err,
                       sizeof(err)) < 0) {
        log_error("drive '%s' (%s) cannot be reopened: %s; it stays in the catalog", d->id,
                  d->file, err);
        return 0;
    }
    if (bv_registry_insert(app, e) < 0) {
        bv_drive_entry_free(e);
        return 0;
    }
    void *ctx[2] = { app, e };
    bvdb_bitmap_list(app->db, d->id, restore_bitmap, ctx);
    bv_registry_put(app, e);
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
