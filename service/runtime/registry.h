/*
 * The open drives, by id.  An entry is reference-counted: a handler takes a
 * reference with bv_registry_get() and drops it with bv_registry_put(); a
 * removed entry is closed when its last reference goes.  So a request that
 * is using a drive never sees it freed under it.
 *
 * Locking: reg->lock guards the list, every entry's refs and removed flag.
 * It is a leaf lock: nothing else is taken and nothing is called while it
 * is held (closing a drive happens after it is released).
 */
#ifndef BV_RUNTIME_REGISTRY_H
#define BV_RUNTIME_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "bv/drive.h"
#include "bv/path.h"
#include "bv/image.h"

struct bv_app;
struct bv_registry;

/* What a drive is: an image of a format, or a blkverify pair.  The names
 * ("raw", "qcow2", "blkverify") are bv_drive_format_names, once. */
enum bv_drive_format {
    BV_DRIVE_RAW,
    BV_DRIVE_QCOW2,
    BV_DRIVE_BLKVERIFY,
};
/* NULL-terminated, indexed by enum bv_drive_format. */
extern const char *const bv_drive_format_names[];

#define BV_DRIVE_MAX_FILES 260   /* files an entry pins: its chain, blkverify children */

struct bv_drive_entry {
    struct bv_app *app;
    char *id;
    enum bv_drive_format format;
    char *file;                  /* relative to the storage directory */
    char *filters;               /* JSON text as stored in the catalog */
    bv_drive *drive;             /* owned */
    struct bv_file_id files[BV_DRIVE_MAX_FILES];  /* the files this drive keeps open */
    unsigned nfiles;
    /* registry-private (reg->lock) */
    unsigned refs;
    bool removed;
    struct bv_drive_entry *next;
};

struct bv_registry *bv_registry_new(void);
/* Closes every drive (flushes).  No references may be outstanding. */
void bv_registry_free(struct bv_registry *reg);

/* Insert e (the registry owns it from now on, with one reference for the
 * caller, to be dropped with put).  -EEXIST if the id is taken. */
int bv_registry_insert(struct bv_app *app, struct bv_drive_entry *e);
/* A new reference, or NULL. */
struct bv_drive_entry *bv_registry_get(struct bv_app *app, const char *id);
void bv_registry_put(struct bv_app *app, struct bv_drive_entry *e);
/* Unlink id; the caller's reference (from get) keeps it alive until put. */
void bv_registry_unlink(struct bv_app *app, struct bv_drive_entry *e);
/* References to every drive, oldest first (*out malloc'd; put each, free
 * the array).  Returns the count. */
size_t bv_registry_all(struct bv_app *app, struct bv_drive_entry ***out);

/* Is this canonical path open by a drive?  who gets "drive 'd0'". */
bool bv_registry_file_in_use(struct bv_app *app, const struct bv_file_id *id, char *who,
                             size_t len);

/* The drive whose own image (the top of its chain; not a blkverify pair) is
 * this file, with a reference, or NULL: readers of that file go through the
 * drive's node, which sees metadata the drive has not written back yet. */
struct bv_drive_entry *bv_registry_get_by_image(struct bv_app *app, const struct bv_file_id *id);

/* Free an entry that never made it into the registry (closes the drive). */
void bv_drive_entry_free(struct bv_drive_entry *e);

#endif
