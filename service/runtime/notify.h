/*
 * Notifications (issue 17, contract "Operations"): webhooks told about job
 * failures, corruption, stale protection and low space.
 *
 * An event becomes one pending delivery per notification that wants it, in
 * the catalog (bvdb/notifications.h), with its JSON body fixed at that
 * moment:
 *   {"event":"job_failed","id":"ev-<16 hex>","created_at":"<RFC 3339 UTC>",
 *    "data":{...}}
 * The notifier thread POSTs each due delivery to its URL (libcurl, 10 s
 * timeout, no redirects) with the headers
 *   Content-Type: application/json
 *   X-Blockvault-Event: <event>          X-Blockvault-Delivery: <delivery id>
 *   X-Blockvault-Timestamp: <unix seconds of this attempt>
 *   X-Blockvault-Signature: sha256=<hex>  (only when the notification has a secret)
 * where <hex> is HMAC-SHA256(secret, "<timestamp>.<body>") — the timestamp
 * header's digits, a '.', then the body's bytes exactly as sent.  A 2xx
 * answer delivers it; anything else (another status, no answer) is a failed
 * attempt, retried after base × 2^(attempts − 1) ms (base: --notify-retry-ms,
 * default 30000; at most one hour) until --notify-attempts (default 8)
 * attempts have failed, then the delivery is "failed".  Attempts and the next
 * attempt's time are in the catalog, so pending deliveries resume after a
 * restart; an attempt cut short by shutdown is not counted.  Delivery times
 * are real time (not --test-clock's).
 *
 * Sources (each a typed call from the unit that sees the event):
 *   job_failed        any job that concludes with an error (runtime/jobs.c's
 *                     event sink), and each job found "interrupted by restart"
 *                     at start-up: data {"job_id","type","device","error"};
 *   corruption        a corrupt verify report or a blkverify mismatch
 *                     (CORRUPTION_DETECTED's data);
 *   protection_stale  a drive under an enabled policy whose newest complete
 *                     backup (or, without one, the policy's creation) is older
 *                     than two of the policy's intervals, checked by the
 *                     scheduler at each tick; once per drive and episode (the
 *                     episode ends when the drive is protected again; a
 *                     restart starts afresh): data {"policy","drive",
 *                     "newest_backup_at"|null,"interval_s","age_s"};
 *   space_low         the storage directory's free space below
 *                     --space-low-percent (default 10; 0: off) of its size,
 *                     checked by the notifier every 30 s (data {"cause":
 *                     "threshold","free","total","threshold_percent"}), and a
 *                     backup, restore or prune refused with 507 (data {"cause":
 *                     "refused","need","free"}); each once per episode (the
 *                     threshold one until the space is back above it, the
 *                     refused one until a space check passes).
 *
 * Locks: n->lock guards the wake-up flags and the episode state only; it is
 * a leaf (nothing is called with it held).  The catalog has its own lock.
 * The source calls may run under the job engine's lock: they only write the
 * catalog and signal.
 */
#ifndef BV_RUNTIME_NOTIFY_H
#define BV_RUNTIME_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bv/error.h"

struct bv_app;
struct bv_job_info;

enum bv_notify_event {
    BV_NOTIFY_JOB_FAILED,
    BV_NOTIFY_CORRUPTION,
    BV_NOTIFY_PROTECTION_STALE,
    BV_NOTIFY_SPACE_LOW,
    BV_NOTIFY_NEVENTS,
};
/* "job_failed", "corruption", "protection_stale", "space_low", NULL. */
extern const char *const bv_notify_event_names[];

#define BV_NOTIFY_NAME_MAX 64
#define BV_NOTIFY_URL_MAX 2048
#define BV_NOTIFY_SECRET_MIN 8
#define BV_NOTIFY_SECRET_MAX 256
#define BV_NOTIFY_MAX 100                  /* notifications at most */
#define BV_NOTIFY_KEEP 1000                /* delivery log rows kept per notification */
#define BV_NOTIFY_BACKOFF_MAX_MS 3600000   /* the longest wait between attempts */

struct bv_notify_spec {
    const char *name;              /* [A-Za-z0-9._-], 1..BV_NOTIFY_NAME_MAX, no leading '.' */
    const char *url;               /* http:// or https:// with a host */
    const char *const *events;     /* names (bv_notify_event_names), non-empty, no repeats */
    size_t nevents;
    const char *secret;            /* NULL: unsigned; else BV_NOTIFY_SECRET_MIN..MAX bytes */
};

/* EINVAL: a bad field (the message names it); EEXIST: name taken; E2BIG:
 * BV_NOTIFY_MAX reached. */
int bv_notify_create(struct bv_app *app, const struct bv_notify_spec *s, bv_error **errp);
/* ENOENT: no such notification.  Its deliveries and secret go with it. */
int bv_notify_delete(struct bv_app *app, const char *name, bv_error **errp);

/* The notifier thread (after the catalog is open; stopped before it closes). */
int bv_notify_start(struct bv_app *app);
void bv_notify_stop(struct bv_app *app);

/* ---- sources ---- */
/* A job concluded; a no-op unless it failed. */
void bv_notify_job_concluded(struct bv_app *app, const struct bv_job_info *j);
/* A job failed that the engine no longer knows (live when the service died). */
void bv_notify_job_failed(struct bv_app *app, const char *job_id, const char *type,
                          const char *device, const char *error);
/* data_json: CORRUPTION_DETECTED's data object. */
void bv_notify_corruption(struct bv_app *app, const char *data_json);
/* The scheduler's check of one enabled policy (runtime/policies.c):
 * interval_s is the time between its next two slots, now_s the service's
 * clock. */
void bv_notify_check_stale(struct bv_app *app, const char *policy, char *const *drives,
                           size_t ndrives, int64_t interval_s, int64_t now_s);
/* Every space check before a job (runtime/capacity.c): ok or refused. */
void bv_notify_space_checked(struct bv_app *app, bool ok, uint64_t need, uint64_t free);

/* Prometheus lines for GET /metrics: deliveries by state. */
void bv_notify_metrics(struct bv_app *app, FILE *f);

/* ---- pure parts (unit-tested) ---- */
/* Names to a bit set (bit i: bv_notify_event_names[i]).  EINVAL when n is 0
 * or a name is unknown or repeated (the message names it as events[i]). */
int bv_notify_events_parse(const char *const *names, size_t n, uint32_t *out, bv_error **errp);
/* "sha256=" + hex HMAC-SHA256(secret, ts "." body): 7 + 64 + NUL. */
#define BV_NOTIFY_SIG_SIZE 72
int bv_notify_sign(const char *secret, const char *ts, const char *body, size_t len,
                   char out[BV_NOTIFY_SIG_SIZE]);
/* The wait after the attempts-th failed attempt (attempts >= 1). */
int64_t bv_notify_backoff_ms(int64_t base_ms, int64_t attempts);
/* 0 when url is an http:// or https:// URL with a host; else -EINVAL with
 * the reason. */
int bv_notify_check_url(const char *url, bv_error **errp);

#endif
