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
/* ENOENT no such remote; EBUSY a backup lives only there (its local link is gone), a policy
 * replicates to it, or an object lock recorded on it has not expired (the text names the
 * date). */
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

/* A replicate's options (a policy's "replicate"): keep_local >= 0 tiers the chain after the
 * upload (links older than the newest keep_local that the remote holds are removed locally,
 * backups.local = 0; never the newest link of a chain still extended, never while a job works
 * on the drive or the chain); lock_days > 0 sets an S3 Object Lock retention of that many
 * days on each link uploaded (mode governance, or compliance) and records its date. */
struct bv_replicate_opts {
    int64_t keep_local;            /* -1: no tiering */
    int64_t lock_days;             /* 0: none */
    bool compliance;
};
int bv_remotes_replicate_opts(struct bv_app *app, const char *bid, const char *remote,
                              const struct bv_replicate_opts *o, struct bv_job_info *info,
                              bv_error **errp);

/* Tiering of one chain as above (under backups_lock).  self_job: the calling job's id (not
 * counted as a user of the chain), or NULL. */
int bv_remotes_tier_locked(struct bv_app *app, const char *remote, const char *drive,
                           const char *chain, int64_t keep_local, const char *self_job,
                           bv_error **errp);

/* Object lock: the latest retention date still in the future among the copies of bid on
 * remote (either may be NULL: any), as recorded.  false: nothing is locked. */
bool bv_remotes_locked_until(struct bv_app *app, const char *remote, const char *bid,
                             char until[32]);

/* Is a replicate job of one of drive's points live?  *job gets its id. */
bool bv_remotes_replicating(struct bv_app *app, const char *drive, char *job, size_t len);

/* Has a link of chain left local disk (backups.local = 0)? */
bool bv_remotes_chain_tiered(struct bv_app *app, const char *chain);

/* Start-up: a tiering interrupted between its catalog commit and the removal of the files
 * (local = 0 and the file still there) is finished. */
void bv_remotes_recover(struct bv_app *app);

/*
 * The remote side of a prune (runtime/prune.c calls these under backups_lock; the order and
 * its crash safety are described at the top of prune.c).  The plan is a JSON text, kept in
 * the prune intent: [{"remote","drive","chain","new_key"?,"old_keys":[…],"grand_key"?,
 * "grand_file"?}], one entry per remote holding the removed link or its child.
 */
/* EBUSY (409) when an object the prune would delete is under object lock (the text names
 * the date it unlocks); else *plan (malloc'd, "[]" when the chain is on no remote). */
int bv_remotes_prune_plan_locked(struct bv_app *app, const char *link, const char *child,
                                 const char *grand, const char *new_file, char **plan,
                                 bv_error **errp);
/* Before the switch: upload the merged child to each remote that held the child. */
int bv_remotes_prune_upload_locked(struct bv_app *app, const char *plan, const char *new_file,
                                   bv_error **errp);
/* Inside the switch transaction: the child's copies now are the merged objects, the removed
 * link's records go. */
int bv_remotes_prune_switch_locked(struct bv_app *app, const char *plan, const char *link,
                                   const char *child, const char *new_file);
/* After the switch and the grandchild's rebase: the grandchild re-uploaded (its header names
 * the merged file), each manifest rewritten, then the old objects deleted.  Idempotent;
 * a failure leaves the old objects (the remote chain stays whole either way). */
int bv_remotes_prune_finish_locked(struct bv_app *app, const char *plan, bv_error **errp);
/* A prune undone before the switch: the merged objects uploaded so far are deleted. */
void bv_remotes_prune_undo_locked(struct bv_app *app, const char *plan);

/* Tiered links a prune merges: has bid a present copy on some remote?  fetch brings its file
 * back from one (ranged GETs) while backups.local stays 0; drop_fetched removes again every
 * file of chain whose link is local = 0 (and bv_remotes_recover does at the next start). */
bool bv_remotes_has_copy(struct bv_app *app, const char *bid);
int bv_remotes_fetch_locked(struct bv_app *app, const char *bid, bv_error **errp);
void bv_remotes_drop_fetched_locked(struct bv_app *app, const char *chain);

/* Import (POST /remotes/{name}/import): reads every <drive>/<chain>/manifest.json of the
 * bucket; EEXIST (409) when a drive id is already taken (all named), ENODEV no such remote
 * (404), ENOENT/EINVAL no manifests or a bad one (400);
 * then a job of type import records the drives (remote-only), chains, backups (local = 0)
 * and their remote copies (present). */
int bv_remotes_import(struct bv_app *app, const char *name, struct bv_job_info *info,
                      bv_error **errp);

/* A drive an import made: *remote (may be NULL) gets its remote.  false: not one. */
bool bv_remotes_drive_remote_only(struct bv_app *app, const char *id, char *remote,
                                  size_t len, uint64_t *size);
/* Every remote-only drive: ids (malloc'd array of malloc'd strings). */
size_t bv_remotes_drives_list(struct bv_app *app, char ***ids);

#endif
