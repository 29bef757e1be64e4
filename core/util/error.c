/* bv_error: see include/bv/error.h. */
#include "bv/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set_v(bv_error **errp, int err, enum bv_error_kind kind,
                 uint64_t offset, const char *fmt, va_list ap)
{
    if (err < 0)
        err = -err;
    if (!errp || *errp)
        return -err;
    bv_error *e = calloc(1, sizeof(*e));
    if (!e)
        return -err;
    e->err = err;
    e->kind = kind;
    e->offset = offset;
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    *errp = e;
    return -err;
}

int bv_error_setf(bv_error **errp, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = set_v(errp, err, BV_ERR_GENERIC, 0, fmt, ap);
    va_end(ap);
    return r;
}

int bv_error_set_kind(bv_error **errp, int err, enum bv_error_kind kind,
                      uint64_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = set_v(errp, err, kind, offset, fmt, ap);
    va_end(ap);
    return r;
}

void bv_error_prepend(bv_error **errp, const char *fmt, ...)
{
    if (!errp || !*errp)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    char old[sizeof((*errp)->msg)];
    memcpy(old, (*errp)->msg, sizeof(old));
    /* an over-long message is cut at the buffer's end */
    size_t cap = sizeof((*errp)->msg);
    int n = snprintf((*errp)->msg, cap, "%s: ", prefix);
    if (n < 0 || (size_t)n >= cap - 1)
        return;
    size_t room = cap - (size_t)n - 1;
    size_t len = strnlen(old, room);
    memcpy((*errp)->msg + n, old, len);
    (*errp)->msg[(size_t)n + len] = '\0';
}

void bv_error_free(bv_error *e)
{
    free(e);
}

void bv_error_propagate(bv_error **dst, bv_error **src)
{
    if (!src || !*src)
        return;
    if (dst && !*dst)
        *dst = *src;
    else
        bv_error_free(*src);
    *src = NULL;
}
