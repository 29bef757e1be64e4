/*
 * Downloading a whole object with parallel ranged GETs (bv_s3_get_range), the counterpart of
 * bv_s3_put_file: `parallel` threads take the next part from a shared counter, GET it into
 * their own part-sized buffer and pwrite it at its offset, so memory is bounded by
 * parallel × part_size.  A failure stops the others at their next part; the file then holds
 * an unspecified prefix of parts (the caller removes it).
 *
 * Threads: as the client (s3.h): every GET has its own curl handle.
 */
#ifndef BV_S3GET_H
#define BV_S3GET_H

#include <stddef.h>
#include <stdint.h>

#include <bv/error.h>

struct bv_s3;

struct bv_s3_get_opts {
    size_t part_size;       /* bytes per ranged GET; 0: 16 MiB (1 MiB .. 512 MiB) */
    unsigned parallel;      /* GETs in flight; 0: 4 (max 16) */
    /* called from the download threads, concurrently, with the bytes of each part written
     * (may be NULL) */
    void (*progress)(void *opaque, uint64_t bytes);
    void *opaque;
};

/* Write object key (size bytes; UINT64_MAX: HEAD it first) into fd at offset 0.  *got (may
 * be NULL) is the object's size. */
int bv_s3_get_file(struct bv_s3 *s3, const char *key, int fd, uint64_t size,
                   const struct bv_s3_get_opts *o, uint64_t *got, bv_error **errp);

#endif
