/*
 * Remotes: S3 buckets that chains are copied to (issue 16).
 *
 * A remote is a catalog row (name, endpoint, bucket, region, access key, flags) plus its
 * secret key in <data>/remotes/<name>.secret (mode 0600 in a 0700 directory, written to a
 * temporary file, fsynced and renamed): readable only by the service's user, never in a row
 * the API returns.  Creating one proves the key and the bucket against the remote first
 * (making the bucket when asked), so a 201 means replication can start.
 *
 * Replicate jobs (bv_remotes_replicate) upload each complete link of a point that the remote
 * lacks to <drive>/<chain>/<backup>.qcow2 (links are immutable once complete, so a link is
 * uploaded once: remote_links records it as present) and then the chain's manifest
 * <drive>/<chain>/manifest.json (links in order with parents, checksums, sizes, the drive's
 * size), rewritten after each run.
 *
 * Locking: app->backups_lock is held around catalog changes that must agree with the chains
 * (insert/delete of a remote, the record of an uploaded link); never across a request to the
 * remote except where noted.
 */
#ifndef BV_RUNTIME_REMOTES_H
#define BV_RUNTIME_REMOTES_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/error.h"
#include "bv/job.h"

struct bv_app;
struct bv_s3;

#define BV_REMOTE_NAME_MAX 64

struct bv_remote_spec {
    const char *name;              /* [A-Za-z0-9._-], 1..64, not starting with '.' */
    const char *endpoint, *bucket, *region;   /* region NULL: us-east-1 */
    const char *access_key, *secret_key;
    bool path_style;               /* must be true (the only addressing supported) */
    bool create_bucket, object_lock;
};

struct bv_remote_view {
    char name[BV_REMOTE_NAME_MAX + 1];
    char endpoint[256], bucket[64], region[65], access_key[129];
    char created_at[32];
    bool path_style, object_lock;
};

/* EINVAL bad field, EEXIST name taken, EACCES the remote refused the key, ENOENT no bucket
 * (without create_bucket); other failures to reach the remote are EINVAL with the reason. */
int bv_remotes_create(struct bv_app *app, const struct bv_remote_spec *s,
                      struct bv_remote_view *out, bv_error **errp);
/* ENOENT: no such remote. */
int bv_remotes_get(struct bv_app *app, const char *name, struct bv_remote_view *out,
                   bv_error **errp);
/* By name; *out malloc'd; the count or -errno. */
int bv_remotes_list(struct bv_app *app, struct bv_remote_view **out);
/* ENOENT no such remote; EBUSY a backup lives only there (its local link is gone). */
int bv_remotes_delete(struct bv_app *app, const char *name, bv_error **errp);

/* A client for the remote (reads its secret file).  Free with bv_s3_free. */
int bv_remotes_client(struct bv_app *app, const char *name, struct bv_s3 **out,
                      bv_error **errp);

/* One backup's copies: {"remote","state","locked_until"?} rows as a JSON array text
 * (malloc'd), and whether its link is still on local disk. */
char *bv_remotes_of_backup_json(struct bv_app *app, const char *bid);

/* Start a replicate job of point bid to remote.  ENODEV no such backup, ENOENT no such remote
 * (400), EBUSY the point is not complete. */
int bv_remotes_replicate(struct bv_app *app, const char *bid, const char *remote,
                         struct bv_job_info *info, bv_error **errp);

#endif
