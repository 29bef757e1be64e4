/*
 * Drive lifecycle in the service: open a drive from its catalog record
 * (format, file, filters JSON), restore every drive and bitmap at start-up,
 * save persistent bitmaps periodically and at shutdown.
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

#include <stddef.h>

#include "runtime/registry.h"

struct bv_app;

/* Open a drive (not yet in the registry).  filters_json: "{}" or
 * {"blkdebug":{…}} or {"blkverify":{"test":{"file","format"},"raw":{"file"}}}.
 * On failure returns a negative errno with err filled; *status gets the HTTP
 * status that fits (400 for bad input, 500 otherwise). */
int bv_drives_open(struct bv_app *app, const char *id, const char *format, const char *file,
                   const char *filters_json, struct bv_drive_entry **out, int *status,
                   char *err, size_t errlen);

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
