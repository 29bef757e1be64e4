/*
 * Drive and bitmap operations of the service, typed: the HTTP handlers,
 * start-up restore and (later) the scheduler and the NBD server call the
 * same functions.  Nothing here knows HTTP or JSON: options come in as C
 * structs, failures go out as a negative errno and a bv_error sentence, and
 * api/ maps them to statuses once (api/common.c).  The errno says what
 * happened: ENODEV no such drive or bitmap, EEXIST a name or file taken,
 * EBUSY in use by a job, EINVAL/ENOTSUP bad options, EIO/ENOMEM internal.
 *
 * Every mutating operation updates the engine and the catalog together and
 * undoes the engine change when the catalog refuses it.  Filters arrive
 * typed (model/filters.h); their catalog text is passed alongside, opaque
 * to runtime/, which stores it and never parses it.
 *
 * Bitmap persistence rules (qemu-semantics §2.7, as QEMU does with qcow2):
 * while the service runs, each loaded persistent bitmap's row has in_use=1;
 * a clean shutdown stores the contents (zlib) and clears in_use.  A row found
 * with in_use=1 at start-up means the service died with the bitmap loaded:
 * it comes back inconsistent (only removal works) and is never trusted.
 * Periodic saves store contents but keep in_use=1.  Non-persistent bitmaps
 * do not survive a restart.
 */
#ifndef BV_RUNTIME_DRIVES_H
#define BV_RUNTIME_DRIVES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/filters.h"
#include "runtime/registry.h"

struct bv_app;

struct bv_drive_spec {
    const char *id;                /* QEMU's id rule (bv_drive_id_check) */
    enum bv_drive_format format;
    const char *file;              /* image, relative to the storage dir; NULL: "<id>.<format>"
                                      (unused for blkverify: the test child is the file) */
    bool create;                   /* create the image first (raw/qcow2); else open it */
    uint64_t size;                 /* with create */
    uint32_t cluster_size;         /* with create; 0 = default */
    const struct bv_drive_filters *filters;  /* may be NULL: none */
    const char *filters_text;      /* the catalog text of filters ("{}" when NULL) */
};

/* QEMU's id rule: a letter, then letters, digits, '-', '.', '_', at most
 * BV_DRIVE_ID_MAX.  0, or -EINVAL saying so. */
#define BV_DRIVE_ID_MAX 128
int bv_drive_id_check(const char *id, bv_error **errp);

/* Create (or open) a drive, register it and record it in the catalog.  On
 * success *out holds a reference (bv_registry_put).  A failure leaves no
 * drive, no row and no file this call created. */
int bv_drives_create(struct bv_app *app, const struct bv_drive_spec *spec,
                     struct bv_drive_entry **out, bv_error **errp);
/* 0 when no drive has id (local, VM or detached: one id namespace), else -EEXIST saying
 * which. */
int bv_drives_id_free(struct bv_app *app, const char *id, bv_error **errp);
/* A reference to drive id, or -ENODEV "Cannot find device=…". */
int bv_drives_get(struct bv_app *app, const char *id, struct bv_drive_entry **out,
                  bv_error **errp);
/* Remove from the catalog and the registry (closed once no request uses it);
 * delete_file also unlinks its image (never a blkverify pair's files).  A drive with
 * backups is refused (bv_drives_delete with BV_DRIVE_BACKUPS_REFUSE). */
int bv_drives_remove(struct bv_app *app, const char *id, bool delete_file, bv_error **errp);

/* ---- drive lifecycle (runtime/lifecycle.c; contract: "Drives with backups") ----
 * What deleting a drive does with its backup chains:
 *   REFUSE  EBUSY while the drive has backups (the chains would lose their drive);
 *   KEEP    the drive is detached: closed and out of the registry, its catalog row kept with
 *           detached_at (the id stays taken, also across restarts), its bitmaps dropped and
 *           its chains closed.  Its backups stay listed, readable, verifiable, restorable and
 *           prunable; everything that needs the image (data, io, bitmaps, resize, new
 *           backups) is EBUSY "Drive 'd' is detached …".  Deleting a detached drive again
 *           needs DELETE (or works plainly once its backups are all pruned);
 *   DELETE  every chain goes: the catalog rows first (backups, chains, damaged extents,
 *           remote records, the drive and its chain bitmaps: one transaction), then the link
 *           files and the chain folders.  EBUSY while a job works on the drive or reads one
 *           of its backups (restore, verify, replicate, prune).
 * Runs under app->backups_lock, so no backup or prune of the drive starts or runs meanwhile. */
enum bv_drive_backups {
    BV_DRIVE_BACKUPS_REFUSE,
    BV_DRIVE_BACKUPS_KEEP,
    BV_DRIVE_BACKUPS_DELETE,
};
struct bv_drive_delete_opts {
    bool delete_file;              /* unlink the image too (attached drives, not blkverify) */
    enum bv_drive_backups backups;
};
int bv_drives_delete(struct bv_app *app, const char *id, const struct bv_drive_delete_opts *o,
                     bv_error **errp);

struct bv_detached_drive {
    char id[BV_DRIVE_ID_MAX + 1];
    char format[16];               /* what it was: "raw" | "qcow2" | "blkverify" */
    uint64_t size;                 /* its size when it was detached */
    uint32_t cluster_size;
    char created_at[32], detached_at[32];
};
/* 0 with *out (may be NULL) when id is a detached drive, else -ENODEV. */
int bv_drives_detached_get(struct bv_app *app, const char *id, struct bv_detached_drive *out);
/* Every detached drive, oldest first: *out malloc'd; the count or -errno. */
int bv_drives_detached_list(struct bv_app *app, struct bv_detached_drive **out);
/* Resize the drive and record the new size. */
int bv_drives_resize(struct bv_app *app, struct bv_drive_entry *e, uint64_t size, bool shrink,
                     bv_error **errp);

/* ---- bitmaps (runtime/bitmaps.c) ---- */
struct bv_bitmap_spec {
    const char *name;
    uint32_t granularity;          /* with has_granularity, checked by the engine */
    bool has_granularity;          /* false: the default for the drive's cluster size */
    bool persistent;               /* qcow2 drives only */
    bool disabled;
};
enum bv_bitmap_verb { BV_BITMAP_CLEAR, BV_BITMAP_ENABLE, BV_BITMAP_DISABLE };

/* The bitmap name of drive e, or -ENODEV with the engine's sentence. */
int bv_bitmaps_lookup(struct bv_drive_entry *e, const char *name, struct bv_dirty_bitmap **out,
                      bv_error **errp);
int bv_bitmaps_add(struct bv_app *app, struct bv_drive_entry *e, const struct bv_bitmap_spec *s,
                   struct bv_dirty_bitmap **out, bv_error **errp);
int bv_bitmaps_remove(struct bv_app *app, struct bv_drive_entry *e, const char *name,
                      bv_error **errp);
int bv_bitmaps_apply(struct bv_app *app, struct bv_drive_entry *e, const char *name,
                     enum bv_bitmap_verb verb, struct bv_dirty_bitmap **out, bv_error **errp);
/* Merge sources[n] (names, 1 to BV_BITMAP_MAX_MERGE_SOURCES) into target. */
#define BV_BITMAP_MAX_MERGE_SOURCES 64
int bv_bitmaps_merge(struct bv_app *app, struct bv_drive_entry *e, const char *target,
                     const char *const *sources, size_t n, struct bv_dirty_bitmap **out,
                     bv_error **errp);

/* Start-up: reopen the catalog's drives and their bitmaps. */
void bv_drives_restore(struct bv_app *app);
/* Store persistent bitmaps; final=true also clears in_use (clean shutdown). */
void bv_drives_save_bitmaps(struct bv_app *app, bool final);
/* Store one drive's persistent bitmaps. */
void bv_drives_save_entry(struct bv_app *app, struct bv_drive_entry *e, bool final);

/* Background saver: every interval_s seconds until app->stopping. */
int bv_drives_start_saver(struct bv_app *app, unsigned interval_s);
void bv_drives_stop_saver(struct bv_app *app);

#endif
