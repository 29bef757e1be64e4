/*
 * bv_error: how core/ hands words to its caller.
 *
 * Core functions return 0 or a negative errno and, when the caller passes a
 * non-NULL errp, fill *errp with one sentence a person can act on.  The layer
 * that consumes an error reports it (logs it, puts it in a reply); core never
 * prints.  An error is owned by whoever receives it and freed with
 * bv_error_free().
 *
 * Corruption found in an image is its own kind (BV_ERR_CORRUPT), carrying the
 * structure and offset where it was found so that it can feed a report.
 */
#ifndef BV_ERROR_H
#define BV_ERROR_H

#include <stdint.h>

enum bv_error_kind {
    BV_ERR_GENERIC = 0,
    BV_ERR_CORRUPT,        /* on-disk metadata is inconsistent */
    BV_ERR_MISMATCH,       /* blkverify/compare: two sides differ */
};

typedef struct bv_error {
    int err;               /* positive errno (EINVAL, EIO, ENOENT, EBUSY, …) */
    enum bv_error_kind kind;
    uint64_t offset;       /* BV_ERR_CORRUPT/MISMATCH: where, else 0 */
    char msg[512];
} bv_error;

/* Set *errp (if errp && !*errp) to a new error; returns -err for tail calls:
 *     return bv_error_setf(errp, EINVAL, "bad size %" PRIu64, size);
 * The first error wins: a second set on a filled *errp is ignored. */
int bv_error_setf(bv_error **errp, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As bv_error_setf, with kind and offset. */
int bv_error_set_kind(bv_error **errp, int err, enum bv_error_kind kind,
                      uint64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Prefix the message of *errp (if set) with "prefix: ". */
void bv_error_prepend(bv_error **errp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void bv_error_free(bv_error *e);

/* Move *src into *dst (if dst && !*dst), else free it; *src becomes NULL. */
void bv_error_propagate(bv_error **dst, bv_error **src);

#endif
