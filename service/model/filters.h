/*
 * A drive's filters: the typed options runtime/ opens a drive with, and the
 * JSON text the catalog keeps for them.
 *
 * Why this module exists: the scheduler, crash recovery and the NBD server
 * open drives with no request in sight, so runtime/ takes typed options only
 * and never sees JSON.  The catalog still stores filters as JSON text
 * ({"blkdebug":{…}} or {"blkverify":{"test":{"file","format"?},"raw":{"file"}}},
 * "{}" for none), written by api/ from the request.  This module is the one
 * place that text becomes typed options: api/ decodes what it is about to
 * store (so a request and a restart see the same parser and the same error
 * texts), and runtime/'s restore decodes what it read back.  The header
 * carries no cJSON, so runtime/ can include it; the JSON stays in the .c.
 *
 * blkdebug rules follow QEMU's names and defaults (qemu-semantics §7): the
 * state machine starts at 1, a missing state means any state, errno
 * defaults to 5, offset is a byte offset in the image file (QEMU's
 * sector × 512; "sector" is accepted too), an unknown event is refused.
 */
#ifndef BV_MODEL_FILTERS_H
#define BV_MODEL_FILTERS_H

#include <stdbool.h>

#include "bv/blkdebug.h"
#include "bv/error.h"
#include "bv/image.h"

struct bv_drive_filters {
    bool has_blkdebug;
    struct bv_blkdebug_config blkdebug;
    bool has_blkverify;
    char *test_file;               /* blkverify: owned, relative to the storage dir */
    enum bv_format test_format;    /* BV_FMT_NONE: probe */
    char *raw_file;                /* blkverify: owned */
};

/* Decode catalog text (NULL or "" means "{}") into *out.  0, or -EINVAL with
 * a sentence naming the field ("blkdebug.inject_error[0]: …"), -ENOMEM.
 * *out is always initialised; release it with bv_filters_clear(). */
int bv_filters_decode(const char *text, struct bv_drive_filters *out, bv_error **errp);
void bv_filters_clear(struct bv_drive_filters *f);

#endif
