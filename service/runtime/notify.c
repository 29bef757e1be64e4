/* Notifications: see notify.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "app.h"
#include "bv/job.h"
#include "bvdb/backups.h"
#include "bvdb/notifications.h"
#include "bvdb/policies.h"
#include "log.h"
#include "runtime/capacity.h"
#include "runtime/notify.h"
#include "runtime/secrets.h"
#include "runtime/tokens.h"

const char *const bv_notify_event_names[] = {
    "job_failed", "corruption", "protection_stale", "space_low", NULL,
};

#define TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 5000
#define SPACE_CHECK_MS 30000       /* the free-space check and the longest sleep */
#define BATCH 16                   /* deliveries read per catalog query */
#define ERROR_MAX 256

/* A drive in a stale episode (already notified). */
struct stale {
    char policy[129], drive[129];
};

struct bv_notifier {
    struct bv_app *app;
    pthread_t thread;
    bool running;
    pthread_mutex_t lock;          /* guards everything below */
    pthread_cond_t cond;
    bool stop, kicked;
    bool threshold_episode;        /* space_low (threshold) notified, not over */
    bool threshold_logged;         /* the same, for the log line */
    bool space_recheck;            /* a notification was made: check the threshold now */
    bool refused_episode;          /* space_low (refused) notified, not over */
    bool refused_due;              /* a refusal to notify: refused_need/free */
    uint64_t refused_need, refused_free;
    struct stale *stale;
    size_t nstale, capstale;
};

/* ---- pure parts -------------------------------------------------------------------- */

int bv_notify_events_parse(const char *const *names, size_t n, uint32_t *out, bv_error **errp)
{
    uint32_t set = 0;
    if (n == 0)
        return bv_error_setf(errp, EINVAL, "events: give at least one of job_failed, "
                             "corruption, protection_stale, space_low");
    for (size_t i = 0; i < n; i++) {
        int k = -1;
        for (int j = 0; names[i] && bv_notify_event_names[j]; j++)
            if (strcmp(names[i], bv_notify_event_names[j]) == 0)
                k = j;
        if (k < 0)
            return bv_error_setf(errp, EINVAL, "events[%zu]: '%s' is not an event (job_failed, "
                                 "corruption, protection_stale, space_low)", i,
                                 names[i] ? names[i] : "");
        if (set & (1u << k))
            return bv_error_setf(errp, EINVAL, "events[%zu]: '%s' is given twice", i, names[i]);
        set |= 1u << k;
    }
    *out = set;
    return 0;
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

int bv_notify_sign(const char *secret, const char *ts, const char *body, size_t len,
                   char out[BV_NOTIFY_SIG_SIZE])
{
    size_t tl = strlen(ts);
    if (len > SIZE_MAX - tl - 1)
        return -EOVERFLOW;
    char *msg = malloc(tl + 1 + len);
    if (!msg)
        return -ENOMEM;
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    unsigned char mac[32];
    int r = gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, strlen(secret), msg, tl + 1 + len, mac);
    free(msg);
    if (r < 0)
        return -EIO;
    memcpy(out, "sha256=", 7);
    hex(mac, sizeof(mac), out + 7);
    return 0;
}

int64_t bv_notify_backoff_ms(int64_t base_ms, int64_t attempts)
{
    if (base_ms <= 0)
        base_ms = 1;
    int64_t d = base_ms;
    for (int64_t i = 1; i < attempts && d < BV_NOTIFY_BACKOFF_MAX_MS; i++)
        d *= 2;
    return d < BV_NOTIFY_BACKOFF_MAX_MS ? d : BV_NOTIFY_BACKOFF_MAX_MS;
}

int bv_notify_check_url(const char *url, bv_error **errp)
{
    size_t n = url ? strlen(url) : 0;
    if (n == 0 || n > BV_NOTIFY_URL_MAX)
        return bv_error_setf(errp, EINVAL, "url: 1 to %d characters", BV_NOTIFY_URL_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f)
            return bv_error_setf(errp, EINVAL, "url: no spaces or control characters");
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        return bv_error_setf(errp, EINVAL, "url: must start with http:// or https://");
    const char *authority = strstr(url, "://") + 3;
    if (*authority == '/' || *authority == '\0' || *authority == '?' || *authority == '#')
        return bv_error_setf(errp, EINVAL, "url: '%s' names no host", url);
    CURLU *u = curl_url();
    char *host = NULL;
    int r = 0;
    if (!u)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (rc != CURLUE_OK)
        r = bv_error_setf(errp, EINVAL, "url: '%s' is not a URL (%s)", url, curl_url_strerror(rc));
    else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !host[0])
        r = bv_error_setf(errp, EINVAL, "url: '%s' names no host", url);
    curl_free(host);
    curl_url_cleanup(u);
    return r;
}

/* ---- the secret file ---------------------------------------------------------------- */

/* 0 with the secret, -errno when it cannot be read. */
static int read_secret(struct bv_app *app, const char *name, char out[BV_NOTIFY_SECRET_MAX + 1])
{
    return bv_secret_read(app, "notifications", name, out, BV_NOTIFY_SECRET_MAX + 1);
}

/* ---- create and delete -------------------------------------------------------------- */

static int check_name(const char *name, bv_error **errp)
{
    return bv_secret_name_check(name, BV_NOTIFY_NAME_MAX, errp);
}

static int check_spec(const struct bv_notify_spec *s, uint32_t *events, bv_error **errp)
{
    int r = check_name(s->name, errp);
    if (r == 0)
        r = bv_notify_check_url(s->url, errp);
    if (r == 0)
        r = bv_notify_events_parse(s->events, s->nevents, events, errp);
    if (r == 0 && s->secret && (strlen(s->secret) < BV_NOTIFY_SECRET_MIN ||
                                strlen(s->secret) > BV_NOTIFY_SECRET_MAX))
        r = bv_error_setf(errp, EINVAL, "secret: %d to %d characters", BV_NOTIFY_SECRET_MIN,
                          BV_NOTIFY_SECRET_MAX);
    return r;
}

static int count_cb(const struct bvdb_notification *n, void *opaque)
{
    (void)n; (void)opaque;
    return 0;
}

static void exists_cb(const struct bvdb_notification *n, void *opaque)
{
    (void)n;
    *(bool *)opaque = true;
}

int bv_notify_create(struct bv_app *app, const struct bv_notify_spec *s, bv_error **errp)
{
    uint32_t events = 0;
    int r = check_spec(s, &events, errp);
    if (r < 0)
        return r;
    int n = bvdb_notification_list(app->db, count_cb, NULL);
    if (n < 0)
        return bv_error_setf(errp, EIO, "cannot read notifications from the catalog");
    if (n >= BV_NOTIFY_MAX)
        return bv_error_setf(errp, E2BIG, "at most %d notifications; delete one first",
                             BV_NOTIFY_MAX);
    bool exists = false;
    bvdb_notification_get(app->db, s->name, exists_cb, &exists);
    if (exists)
        return bv_error_setf(errp, EEXIST, "Notification '%s' already exists", s->name);
    char now[32];
    bvdb_now(now);
    struct bvdb_notification row = { .name = s->name, .url = s->url, .events = events,
                                     .has_secret = s->secret != NULL, .created_at = now };
    if (s->secret && (r = bv_secret_write(app, "notifications", s->name, s->secret, errp)) < 0)
        return r;
    r = bvdb_notification_insert(app->db, &row);
    if (r < 0 && s->secret)
        bv_secret_remove(app, "notifications", s->name);
    if (r == -EEXIST)
        return bv_error_setf(errp, EEXIST, "Notification '%s' already exists", s->name);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot record notification '%s'", s->name);
    struct bv_notifier *nt = app->notifier;
    if (nt && (events & (1u << BV_NOTIFY_SPACE_LOW))) {
        pthread_mutex_lock(&nt->lock);
        nt->space_recheck = true;
        nt->kicked = true;
        pthread_cond_broadcast(&nt->cond);
        pthread_mutex_unlock(&nt->lock);
    }
    return 0;
}

int bv_notify_delete(struct bv_app *app, const char *name, bv_error **errp)
{
    int r = bvdb_notification_delete(app->db, name);
    if (r == -ENOENT)
        return bv_error_setf(errp, ENOENT, "Notification '%s' not found", name);
    if (r < 0)
        return bv_error_setf(errp, EIO, "cannot delete notification '%s'", name);
    if (check_name(name, NULL) == 0)
        bv_secret_remove(app, "notifications", name);
    return 0;
}

/* ---- events into deliveries ------------------------------------------------------- */

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kick(struct bv_app *app)
{
    struct bv_notifier *n = app->notifier;
    if (!n)
        return;
    pthread_mutex_lock(&n->lock);
    n->kicked = true;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

/* One event: a pending delivery per notification that wants it.  Takes data.
 * Returns how many were made. */
static int emit(struct bv_app *app, enum bv_notify_event ev, cJSON *data)
{
    unsigned char rnd[8];
    char id[20] = "ev-", now[32];
    if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, sizeof(rnd)) < 0)
        memset(rnd, 0, sizeof(rnd));
    hex(rnd, sizeof(rnd), id + 3);
    bvdb_now(now);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", bv_notify_event_names[ev]);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "created_at", now);
    cJSON_AddItemToObject(o, "data", data ? data : cJSON_CreateObject());
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!body) {
        log_error("notification '%s' lost: out of memory", bv_notify_event_names[ev]);
        return 0;
    }
    int64_t due = real_ms();
    char due_at[32];
    bv_time_str(due, due_at);
    struct bvdb_delivery d = { .event = bv_notify_event_names[ev], .event_id = id, .body = body,
                               .created_at = now, .next_attempt_ms = due,
                               .next_attempt_at = due_at };
    int r = bvdb_delivery_fan_out(app->db, 1u << ev, &d, BV_NOTIFY_KEEP);
    if (r < 0)
        log_error("cannot record %s notification %s in the catalog", bv_notify_event_names[ev],
                  id);
    free(body);
    if (r > 0)
        kick(app);
    return r > 0 ? r : 0;
}

void bv_notify_job_failed(struct bv_app *app, const char *job_id, const char *type,
                          const char *device, const char *error)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "job_id", job_id);
    cJSON_AddStringToObject(d, "type", type ? type : "");
    if (device && device[0])
        cJSON_AddStringToObject(d, "device", device);
    else
        cJSON_AddNullToObject(d, "device");
    cJSON_AddStringToObject(d, "error", error);
    emit(app, BV_NOTIFY_JOB_FAILED, d);
}

void bv_notify_job_concluded(struct bv_app *app, const struct bv_job_info *j)
{
    if (j->error[0] && !j->cancelled)
        bv_notify_job_failed(app, j->id, j->type, j->device, j->error);
}

void bv_notify_corruption(struct bv_app *app, const char *data_json)
{
    cJSON *d = data_json ? cJSON_Parse(data_json) : NULL;
    if (!cJSON_IsObject(d)) {
        cJSON_Delete(d);
        d = NULL;                  /* emit sends {} */
    }
    emit(app, BV_NOTIFY_CORRUPTION, d);
}

/* ---- protection_stale ---------------------------------------------------------------- */

static int newest_cb(const struct bvdb_backup *b, void *opaque)
{
    int64_t *t = opaque;
    if (strcmp(b->status, "complete") == 0) {
        int64_t ms = bv_tokens_parse_time(b->completed_at ? b->completed_at : b->created_at);
        if (ms > *t)
            *t = ms;
    }
    return 0;
}

static void created_cb(const struct bvdb_policy *p, void *opaque)
{
    *(int64_t *)opaque = bv_tokens_parse_time(p->created_at);
}

/* The episode entry of (policy, drive), or NULL; n->lock held. */
static struct stale *stale_find_locked(struct bv_notifier *n, const char *policy,
                                       const char *drive)
{
    for (size_t i = 0; i < n->nstale; i++)
        if (strcmp(n->stale[i].policy, policy) == 0 && strcmp(n->stale[i].drive, drive) == 0)
            return &n->stale[i];
    return NULL;
}

/* Is this a new episode?  Records it (n->lock held). */
static bool stale_begin_locked(struct bv_notifier *n, const char *policy, const char *drive)
{
    struct stale *s = stale_find_locked(n, policy, drive);
    if (s)
        return false;
    if (n->nstale == n->capstale) {
        size_t cap = n->capstale ? n->capstale * 2 : 16;
        struct stale *v = realloc(n->stale, cap * sizeof(*v));
        if (!v)
            return false;
        n->stale = v;
        n->capstale = cap;
    }
    s = &n->stale[n->nstale++];
    snprintf(s->policy, sizeof(s->policy), "%s", policy);
    snprintf(s->drive, sizeof(s->drive), "%s", drive);
    return true;
}

static void stale_end_locked(struct bv_notifier *n, const char *policy, const char *drive)
{
    struct stale *s = stale_find_locked(n, policy, drive);
    if (s)
        *s = n->stale[--n->nstale];
}

static void stale_one(struct bv_app *app, const char *policy, const char *drive,
                      int64_t interval_s, int64_t now_s, int64_t created_ms)
{
    struct bv_notifier *n = app->notifier;
    int64_t newest = 0;
    bvdb_backup_list(app->db, drive, NULL, newest_cb, &newest);
    int64_t since = newest > 0 ? newest / 1000 : created_ms > 0 ? created_ms / 1000 : now_s;
    bool stale = now_s - since > 2 * interval_s;
    pthread_mutex_lock(&n->lock);
    bool fresh = stale ? stale_begin_locked(n, policy, drive) : false;
    if (!stale)
        stale_end_locked(n, policy, drive);
    pthread_mutex_unlock(&n->lock);
    if (!fresh)
        return;
    log_warn("policy '%s': drive '%s' has no complete backup in the last %" PRId64 " s "
             "(two intervals)", policy, drive, 2 * interval_s);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "policy", policy);
    cJSON_AddStringToObject(d, "drive", drive);
    if (newest > 0) {
        char t[32];
        bv_time_str(newest, t);
        cJSON_AddStringToObject(d, "newest_backup_at", t);
    } else {
        cJSON_AddNullToObject(d, "newest_backup_at");
    }
    cJSON_AddNumberToObject(d, "interval_s", (double)interval_s);
    cJSON_AddNumberToObject(d, "age_s", (double)(now_s - since));
    emit(app, BV_NOTIFY_PROTECTION_STALE, d);
}

void bv_notify_check_stale(struct bv_app *app, const char *policy, char *const *drives,
                           size_t ndrives, int64_t interval_s, int64_t now_s)
{
    if (!app->notifier || interval_s <= 0)
        return;
    int64_t created_ms = 0;
    bvdb_policy_get(app->db, policy, created_cb, &created_ms);
    for (size_t i = 0; i < ndrives; i++)
        if (drives[i])
            stale_one(app, policy, drives[i], interval_s, now_s, created_ms);
}

/* ---- space_low ----------------------------------------------------------------------- */

void bv_notify_space_checked(struct bv_app *app, bool ok, uint64_t need, uint64_t free)
{
    struct bv_notifier *n = app->notifier;
    if (!n)
        return;
    pthread_mutex_lock(&n->lock);
    if (ok) {
        n->refused_episode = false;
    } else if (!n->refused_episode) {
        n->refused_episode = true;
        n->refused_due = true;
        n->refused_need = need;
        n->refused_free = free;
        n->kicked = true;
        pthread_cond_broadcast(&n->cond);
    }
    pthread_mutex_unlock(&n->lock);
}

/* The notifier's own checks: a refusal to announce, the threshold. */
static void check_space(struct bv_notifier *n)
{
    struct bv_app *app = n->app;
    pthread_mutex_lock(&n->lock);
    bool refused = n->refused_due;
    uint64_t need = n->refused_need, rfree = n->refused_free;
    n->refused_due = false;
    pthread_mutex_unlock(&n->lock);
    if (refused) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "cause", "refused");
        cJSON_AddNumberToObject(d, "need", (double)need);
        cJSON_AddNumberToObject(d, "free", (double)rfree);
        emit(app, BV_NOTIFY_SPACE_LOW, d);
    }
    unsigned pct = app->cfg.space_low_percent;
    struct bv_space sp;
    if (pct == 0 || bv_capacity_space(app, &sp, NULL) < 0 || sp.total == 0)
        return;
    bool low = (double)sp.free * 100.0 < (double)sp.total * pct;
    pthread_mutex_lock(&n->lock);
    bool fresh = low && !n->threshold_episode, log = low && !n->threshold_logged;
    n->threshold_logged = low;
    if (!low)
        n->threshold_episode = false;
    pthread_mutex_unlock(&n->lock);
    if (log)
        log_warn("storage directory: %" PRIu64 " of %" PRIu64 " bytes free, below %u%%",
                 sp.free, sp.total, pct);
    if (!fresh)
        return;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "cause", "threshold");
    cJSON_AddNumberToObject(d, "free", (double)sp.free);
    cJSON_AddNumberToObject(d, "total", (double)sp.total);
    cJSON_AddNumberToObject(d, "threshold_percent", pct);
    /* the episode begins once someone was told (a notification made later
     * hears of a low space that is still low) */
    bool told = emit(app, BV_NOTIFY_SPACE_LOW, d) > 0;
    pthread_mutex_lock(&n->lock);
    n->threshold_episode = told;
    pthread_mutex_unlock(&n->lock);
}

/* ---- delivery ------------------------------------------------------------------------ */

struct answer {
    size_t len;                    /* bytes of the receiver's answer (dropped) */
};

static size_t discard(char *p, size_t size, size_t nmemb, void *opaque)
{
    struct answer *a = opaque;
    (void)p;
    size_t n = size * nmemb;
    a->len += n;
    return n;                      /* dropped: only the status matters (bounded by the timeout) */
}

static int progress(void *opaque, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct bv_app *app = opaque;
    (void)dt; (void)dn; (void)ut; (void)un;
    return atomic_load(&app->stopping) ? 1 : 0;
}

struct attempt {
    long status;                   /* 0: no answer */
    char error[ERROR_MAX];
    bool aborted;                  /* cut short by shutdown: not counted */
};

static struct curl_slist *headers_of(const struct bvdb_delivery *d, const char *secret,
                                     struct attempt *out)
{
    char h[512], ts[24];
    snprintf(ts, sizeof(ts), "%" PRId64, real_ms() / 1000);
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    snprintf(h, sizeof(h), "User-Agent: blockvault/%s", BV_VERSION);
    l = curl_slist_append(l, h);
    snprintf(h, sizeof(h), "X-Blockvault-Event: %s", d->event);
    l = curl_slist_append(l, h);
    snprintf(h, sizeof(h), "X-Blockvault-Delivery: %" PRId64, d->id);
    l = curl_slist_append(l, h);
    snprintf(h, sizeof(h), "X-Blockvault-Timestamp: %s", ts);
    l = curl_slist_append(l, h);
    l = curl_slist_append(l, "Expect:");
    if (secret) {
        char sig[BV_NOTIFY_SIG_SIZE];
        if (bv_notify_sign(secret, ts, d->body, strlen(d->body), sig) < 0) {
            snprintf(out->error, sizeof(out->error), "cannot compute the signature");
            curl_slist_free_all(l);
            return NULL;
        }
        snprintf(h, sizeof(h), "X-Blockvault-Signature: %s", sig);
        l = curl_slist_append(l, h);
    }
    return l;
}

static void post(struct bv_app *app, const char *url, const struct bvdb_delivery *d,
                 const char *secret, struct attempt *out)
{
    memset(out, 0, sizeof(*out));
    struct curl_slist *hdrs = headers_of(d, secret, out);
    CURL *c = hdrs ? curl_easy_init() : NULL;
    if (!c) {
        if (!out->error[0])
            snprintf(out->error, sizeof(out->error), "out of memory");
        curl_slist_free_all(hdrs);
        return;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    struct answer a = { 0 };
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, app);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
        if (out->status < 200 || out->status > 299)
            snprintf(out->error, sizeof(out->error), "HTTP %ld", out->status);
    } else if (rc == CURLE_ABORTED_BY_CALLBACK) {
        out->aborted = true;
    } else {
        snprintf(out->error, sizeof(out->error), "%s", errbuf[0] ? errbuf
                                                                : curl_easy_strerror(rc));
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
}

struct target {
    bool found;
    char url[BV_NOTIFY_URL_MAX + 1];
    bool has_secret;
};

static void target_cb(const struct bvdb_notification *n, void *opaque)
{
    struct target *t = opaque;
    t->found = true;
    snprintf(t->url, sizeof(t->url), "%s", n->url);
    t->has_secret = n->has_secret;
}

/* One attempt of d and its outcome in the catalog. */
static void deliver(struct bv_app *app, const struct bvdb_delivery *d)
{
    struct target t = { 0 };
    char secret[BV_NOTIFY_SECRET_MAX + 1];
    struct attempt a;
    bvdb_notification_get(app->db, d->notification, target_cb, &t);
    if (!t.found)
        return;                                  /* deleted meanwhile: its rows went too */
    if (t.has_secret && read_secret(app, d->notification, secret) < 0) {
        memset(&a, 0, sizeof(a));
        snprintf(a.error, sizeof(a.error), "cannot read the notification's secret");
    } else {
        post(app, t.url, d, t.has_secret ? secret : NULL, &a);
    }
    explicit_bzero(secret, sizeof(secret));
    if (a.aborted)
        return;
    int64_t now = real_ms();
    char now_s[32] = "", next_s[32] = "";
    struct bvdb_delivery u = *d;
    u.attempts = d->attempts + 1;
    u.last_status = a.status;
    u.last_error = a.error[0] ? a.error : NULL;
    u.delivered_at = NULL;
    u.next_attempt_ms = 0;
    u.next_attempt_at = NULL;
    if (!a.error[0]) {
        u.state = "delivered";
        bv_time_str(now, now_s);
        u.delivered_at = now_s;
    } else if (u.attempts >= (int64_t)app->cfg.notify_attempts) {
        u.state = "failed";
        log_warn("notification '%s': %s %s failed after %" PRId64 " attempts: %s",
                 d->notification, d->event, d->event_id, u.attempts, a.error);
    } else {
        u.state = "pending";
        u.next_attempt_ms = now + bv_notify_backoff_ms(app->cfg.notify_retry_ms, u.attempts);
        bv_time_str(u.next_attempt_ms, next_s);
        u.next_attempt_at = next_s;
    }
    int r = bvdb_delivery_update(app->db, &u);
    if (r < 0 && r != -ENOENT)             /* ENOENT: the notification was deleted meanwhile */
        log_error("cannot record delivery %" PRId64 " in the catalog", d->id);
}

/* Copies of due rows: the attempts run with no statement open. */
struct due {
    struct bvdb_delivery v[BATCH];
    char *strs[BATCH][6];
    size_t n;
};

static int due_cb(const struct bvdb_delivery *d, void *opaque)
{
    struct due *q = opaque;
    if (q->n == BATCH)
        return 1;
    struct bvdb_delivery *c = &q->v[q->n];
    char **s = q->strs[q->n];
    *c = *d;
    const char *src[6] = { d->notification, d->event, d->event_id, d->body, d->created_at,
                           d->state };
    for (int i = 0; i < 6; i++)
        s[i] = strdup(src[i] ? src[i] : "");
    c->notification = s[0];
    c->event = s[1];
    c->event_id = s[2];
    c->body = s[3];
    c->created_at = s[4];
    c->state = s[5];
    c->last_error = c->delivered_at = c->next_attempt_at = NULL;
    for (int i = 0; i < 6; i++)
        if (!s[i])
            return 1;
    q->n++;
    return 0;
}

/* Attempt every due delivery (a batch at a time); stops early at shutdown. */
static void deliver_due(struct bv_notifier *n)
{
    struct bv_app *app = n->app;
    for (int round = 0; round < 64 && !atomic_load(&app->stopping); round++) {
        struct due *q = calloc(1, sizeof(*q));
        if (!q)
            return;
        bvdb_delivery_due(app->db, real_ms(), BATCH, due_cb, q);
        size_t got = q->n;
        for (size_t i = 0; i < got && !atomic_load(&app->stopping); i++)
            deliver(app, &q->v[i]);
        for (size_t i = 0; i < BATCH; i++)
            for (int k = 0; k < 6; k++)
                free(q->strs[i][k]);
        free(q);
        if (got < BATCH)
            return;
    }
}

/* ---- the thread ---------------------------------------------------------------------- */

static void *notifier_main(void *opaque)
{
    struct bv_notifier *n = opaque;
    struct bv_app *app = n->app;
    int64_t space_due = 0;
    for (;;) {
        pthread_mutex_lock(&n->lock);
        bool stop = n->stop, refused = n->refused_due || n->space_recheck;
        n->kicked = false;
        n->space_recheck = false;
        pthread_mutex_unlock(&n->lock);
        if (stop)
            break;
        int64_t now = real_ms();
        if (now >= space_due || refused) {
            check_space(n);
            if (now >= space_due)
                space_due = now + SPACE_CHECK_MS;
        }
        deliver_due(n);
        now = real_ms();
        int64_t next = bvdb_delivery_next_ms(app->db);
        int64_t wake = next > 0 && next < space_due ? next : space_due;
        int64_t wait_ms = wake - now;
        if (wait_ms < 10)
            wait_ms = 10;
        if (wait_ms > SPACE_CHECK_MS)
            wait_ms = SPACE_CHECK_MS;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += wait_ms / 1000;
        dl.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&n->lock);
        while (!n->kicked && !n->stop)
            if (pthread_cond_timedwait(&n->cond, &n->lock, &dl) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&n->lock);
    }
    return NULL;
}

int bv_notify_start(struct bv_app *app)
{
    struct bv_notifier *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->app = app;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->cond, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    app->notifier = n;
    if (pthread_create(&n->thread, NULL, notifier_main, n) != 0)
        return -EAGAIN;
    n->running = true;
    return 0;
}

void bv_notify_stop(struct bv_app *app)
{
    struct bv_notifier *n = app->notifier;
    if (!n)
        return;
    pthread_mutex_lock(&n->lock);
    n->stop = true;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    if (n->running)
        pthread_join(n->thread, NULL);
    app->notifier = NULL;
    free(n->stale);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

/* ---- metrics ------------------------------------------------------------------------- */

void bv_notify_metrics(struct bv_app *app, FILE *f)
{
    int64_t c[3];
    if (bvdb_delivery_counts(app->db, NULL, c) < 0)
        return;
    fprintf(f, "# HELP blockvault_notification_deliveries Notification deliveries in the "
               "log, by state.\n# TYPE blockvault_notification_deliveries gauge\n"
               "blockvault_notification_deliveries{state=\"pending\"} %" PRId64 "\n"
               "blockvault_notification_deliveries{state=\"delivered\"} %" PRId64 "\n"
               "blockvault_notification_deliveries{state=\"failed\"} %" PRId64 "\n",
            c[0], c[1], c[2]);
}
