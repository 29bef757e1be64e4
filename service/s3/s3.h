/*
 * bv_s3: a small S3 client for remotes (Ceph RADOS Gateway, any S3-compatible store).
 *
 * libcurl does the HTTP and the AWS Signature V4 (CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3");
 * the protocol layer is here: path-style URLs (endpoint/bucket/key), query parameters sorted
 * and each with an '=' (curl signs the query as given), x-amz-content-sha256: UNSIGNED-PAYLOAD
 * (curl signs a payload hash it does not send), Content-Length on every PUT, Content-MD5 on
 * every object and part.  Bodies the remote controls (errors, listings, multipart replies)
 * are read into buffers with a ceiling; XML is scanned for the few elements we need.
 *
 * Errors are sentences: a 403 InvalidAccessKeyId/SignatureDoesNotMatch is EACCES "the remote
 * refused the credentials"; NoSuchBucket/NoSuchKey are ENOENT; other 4xx are EPROTO with the
 * remote's code and message; 5xx, timeouts, resets and refused connections are retried with
 * exponential backoff (cfg.retries times) and then reported as EIO/EHOSTUNREACH.
 *
 * Threads: a struct bv_s3 is immutable after bv_s3_new; every call may run on any thread
 * concurrently (each request has its own curl handle).  bv_s3_put_file runs up to
 * cfg.parallel part uploads at once on its own threads, each with one part-sized buffer, so
 * its memory is bounded by parallel × part_size.
 */
#ifndef BV_S3_H
#define BV_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bv/error.h>

struct bv_s3_config {
    const char *endpoint;   /* "http://127.0.0.1:PORT" (http or https, no path) */
    const char *bucket;
    const char *region;     /* NULL: "us-east-1" */
    const char *access_key;
    const char *secret_key;
    size_t part_size;       /* multipart part size; 0: 16 MiB (min 5 MiB, max 512 MiB) */
    unsigned parallel;      /* parts in flight; 0: 4 (max 16) */
    int retries;            /* retries after the first attempt; <0: 4 */
    long timeout_s;         /* a request that moves no byte for this long fails; 0: 30 */
};

struct bv_s3;

/* Copies the configuration.  Fails (EINVAL) on a malformed endpoint or empty field. */
int bv_s3_new(const struct bv_s3_config *cfg, struct bv_s3 **out, bv_error **errp);
void bv_s3_free(struct bv_s3 *s3);

/* HEAD the bucket; with create, make it when missing (object_lock: with Object Lock
 * enabled).  A wrong key is EACCES ("the remote refused the credentials"), a missing bucket
 * ENOENT. */
int bv_s3_check_bucket(struct bv_s3 *s3, bool create, bool object_lock, bv_error **errp);

/* PUT one object from memory (Content-MD5 sent). */
int bv_s3_put(struct bv_s3 *s3, const char *key, const void *buf, size_t len,
              bv_error **errp);

/* PUT size bytes read from fd at offset 0: one PUT up to part_size, else a multipart upload
 * with cfg.parallel parts in flight (aborted on failure).  progress (may be NULL) is called
 * with the bytes of each part (or the object) once the remote has them, from the upload
 * threads, concurrently. */
int bv_s3_put_file(struct bv_s3 *s3, const char *key, int fd, uint64_t size,
                   void (*progress)(void *opaque, uint64_t bytes), void *opaque,
                   bv_error **errp);

/* A multipart upload that survives failures and restarts: the caller records what the
 * callbacks report (in its catalog) and hands it back on the next attempt.  Used only above
 * part_size (smaller objects are one PUT). */
struct bv_s3_resume {
    const char *upload_id;     /* continue this upload (NULL: start a new one) */
    /* Is part (1-based) already uploaded?  Then copy its ETag (< 128 bytes) into etag. */
    bool (*have_part)(void *opaque, unsigned part, char *etag);
    /* A new upload began (its id): earlier records are void.  Called before any part. */
    void (*started)(void *opaque, const char *upload_id);
    /* The remote acknowledged a part (from the upload threads, concurrently). */
    void (*part_done)(void *opaque, unsigned part, const char *etag, uint64_t bytes);
    void *opaque;
};

/* As bv_s3_put_file, resuming rs->upload_id when given; a failed upload is left in place (not
 * aborted) for the next attempt.  An upload the remote no longer knows (NoSuchUpload) is
 * ENOENT: start again with upload_id NULL. */
int bv_s3_put_file_resumable(struct bv_s3 *s3, const char *key, int fd, uint64_t size,
                             void (*progress)(void *opaque, uint64_t bytes), void *opaque,
                             const struct bv_s3_resume *rs, bv_error **errp);

/* Ranged GET of exactly len bytes at offset into buf (a short object is EIO). */
int bv_s3_get_range(struct bv_s3 *s3, const char *key, uint64_t offset, size_t len,
                    void *buf, bv_error **errp);

/* GET a whole object of at most max bytes into a new buffer (*out, free()d by the caller;
 * NUL-terminated past *len).  Larger is EFBIG. */
int bv_s3_get(struct bv_s3 *s3, const char *key, size_t max, char **out, size_t *len,
              bv_error **errp);

/* HEAD an object: its size.  Missing is ENOENT (no error filled when errp is NULL). */
int bv_s3_head(struct bv_s3 *s3, const char *key, uint64_t *size, bv_error **errp);

int bv_s3_delete(struct bv_s3 *s3, const char *key, bv_error **errp);

/* S3 Object Lock: PUT ?retention on the object's current version (Content-MD5 sent), mode
 * "GOVERNANCE" or "COMPLIANCE", until an RFC 3339 UTC time.  The bucket must have been made
 * with Object Lock enabled (else the remote refuses it: EPROTO with its code). */
int bv_s3_put_retention(struct bv_s3 *s3, const char *key, const char *mode, const char *until,
                        bv_error **errp);
/* GET ?retention of the object's current version: its mode and RetainUntilDate, as the
 * remote writes them (-ENOENT when it has none). */
int bv_s3_get_retention(struct bv_s3 *s3, const char *key, char *mode, size_t modelen,
                        char *until, size_t untillen, bv_error **errp);

/* ListObjectsV2 under prefix, every page; fn returning nonzero stops (that value is
 * returned). */
typedef int (*bv_s3_list_fn)(void *opaque, const char *key, uint64_t size);
int bv_s3_list(struct bv_s3 *s3, const char *prefix, bv_s3_list_fn fn, void *opaque,
               bv_error **errp);

#endif
