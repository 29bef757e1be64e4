/*
 * Bitmap operations of the service (see drives.h): the engine enforces
 * QEMU's semantics and texts; this file adds the catalog row for each change
 * and undoes the engine change when the catalog refuses it.  A bitmap named
 * by a caller that does not exist is -ENODEV (QEMU's DeviceNotFound).
 */
#include <errno.h>
#include <string.h>

#include "app.h"
#include "bvdb/drives.h"
#include "runtime/drives.h"

#define MAX_MERGE_SOURCES BV_BITMAP_MAX_MERGE_SOURCES

int bv_bitmaps_lookup(struct bv_drive_entry *e, const char *name, struct bv_dirty_bitmap **out,
                      bv_error **errp)
{
    bv_error *err = NULL;
    int r = bv_bitmap_lookup(bv_drive_bitmaps(e->drive), name, out, &err);
    if (r < 0) {
        r = bv_error_setf(errp, ENODEV, "%s", err ? err->msg : "bitmap not found");
        bv_error_free(err);
    }
    return r;
}

/* Persistent bitmaps live in qcow2 images (the engine checks the name). */
static int check_persistent(struct bv_drive_entry *e, bv_error **errp)
{
    if (e->format != BV_DRIVE_QCOW2)
        return bv_error_setf(errp, ENOTSUP, "Can't store persistent bitmaps to %s: Operation "
                             "not supported", e->id);
    return 0;
}

int bv_bitmaps_add(struct bv_app *app, struct bv_drive_entry *e, const struct bv_bitmap_spec *s,
                   struct bv_dirty_bitmap **out, bv_error **errp)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    if (s->persistent) {
        int r = check_persistent(e, errp);
        if (r < 0)
            return r;
    }
    uint32_t gran = s->has_granularity ? s->granularity
        : bv_bitmap_default_granularity(bv_node_cluster_size(bv_drive_node(e->drive)));
    unsigned flags = (s->persistent ? BV_BITMAP_F_PERSISTENT : 0) |
                     (s->disabled ? BV_BITMAP_F_DISABLED : 0);
    struct bv_dirty_bitmap *bm = NULL;
    int r = bv_bitmap_add(set, s->name, gran, flags, &bm, errp);
    if (r < 0)
        return r;
    struct bvdb_bitmap rec = {
        .drive_id = e->id, .name = s->name, .granularity = gran, .persistent = s->persistent,
        .enabled = !s->disabled, .in_use = s->persistent, .size = bv_drive_size(e->drive),
    };
    if (bvdb_bitmap_insert(app->db, &rec) < 0) {
        bv_bitmap_remove(set, bm, NULL);
        return bv_error_setf(errp, EIO, "cannot record bitmap '%s' in the catalog", s->name);
    }
    if (out)
        *out = bm;
    return 0;
}

int bv_bitmaps_remove(struct bv_app *app, struct bv_drive_entry *e, const char *name,
                      bv_error **errp)
{
    struct bv_dirty_bitmap *bm = NULL;
    int r = bv_bitmaps_lookup(e, name, &bm, errp);
    if (r == 0)
        r = bv_bitmap_remove(bv_drive_bitmaps(e->drive), bm, errp);
    if (r == 0)
        bvdb_bitmap_delete(app->db, e->id, name);
    return r;
}

int bv_bitmaps_apply(struct bv_app *app, struct bv_drive_entry *e, const char *name,
                     enum bv_bitmap_verb verb, struct bv_dirty_bitmap **out, bv_error **errp)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    struct bv_dirty_bitmap *bm = NULL;
    int r = bv_bitmaps_lookup(e, name, &bm, errp);
    if (r < 0)
        return r;
    switch (verb) {
    case BV_BITMAP_CLEAR: r = bv_bitmap_clear(set, bm, errp); break;
    case BV_BITMAP_ENABLE: r = bv_bitmap_enable(set, bm, NULL, errp); break;
    case BV_BITMAP_DISABLE: r = bv_bitmap_disable(set, bm, NULL, errp); break;
    }
    if (r == 0 && verb != BV_BITMAP_CLEAR)
        bvdb_bitmap_set_enabled(app->db, e->id, name, verb == BV_BITMAP_ENABLE);
    if (r == 0 && out)
        *out = bm;
    return r;
}

int bv_bitmaps_merge(struct bv_app *app, struct bv_drive_entry *e, const char *target,
                     const char *const *sources, size_t n, struct bv_dirty_bitmap **out,
                     bv_error **errp)
{
    (void)app;
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    struct bv_dirty_bitmap *bm = NULL, *srcs[MAX_MERGE_SOURCES];
    int r = bv_bitmaps_lookup(e, target, &bm, errp);
    if (r < 0)
        return r;
    if (n == 0)
        return bv_error_setf(errp, EINVAL, "'sources' must name at least one bitmap");
    if (n > MAX_MERGE_SOURCES)
        return bv_error_setf(errp, EINVAL, "'sources' must be 1 to %d bitmap names",
                             MAX_MERGE_SOURCES);
    for (size_t i = 0; i < n; i++) {
        srcs[i] = bv_bitmap_find(set, sources[i]);
        if (!srcs[i])
            return bv_error_setf(errp, EINVAL, "Dirty bitmap '%s' not found", sources[i]);
    }
    r = bv_bitmap_merge(set, bm, set, srcs, n, NULL, errp);
    if (r == 0 && out)
        *out = bm;
    return r;
}
