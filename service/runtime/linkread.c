/*
 * Opening backup links from local disk or a remote: see linkread.h.
 *
 * bv_linkread_open resolves the chain (the link and its parents) to layers first, each
 * local or remote with its object key and size from remote_links; with no remote layer it is
 * a plain open.  Otherwise the engine's layer resolver (bv/remote.h) is asked for each layer
 * by its storage-relative name (the link files' names, which the qcow2 backing names resolve
 * to): a remote layer gets an S3 client of its own and a read callback doing ranged GETs.
 */
#include "runtime/linkread.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "app.h"
#include "bv/path.h"
#include "bv/remote.h"
#include "bvdb/backups.h"
#include "bvdb/remotes.h"
#include "log.h"
#include "runtime/backups.h"
#include "runtime/remotes.h"
#include "s3/s3.h"

#define MAX_LAYERS BV_MAX_CHAIN_DEPTH

struct layer {
    char id[BV_BACKUP_ID_MAX];
    char file[1024];
    bool remote;
    char remote_name[BV_REMOTE_NAME_MAX + 1];
    char key[1200];
    uint64_t size;
};

struct resolve_ctx {
    struct bv_app *app;
    struct layer *v;
    size_t n;
};

/* one remote layer's object: its own client (freed with the node) */
struct object {
    struct bv_s3 *s3;
    char key[1200];
    _Atomic uint64_t gets, bytes, ns;   /* ranged GETs done, their bytes and time */
};

bool bv_linkread_is_local(struct bv_app *app, const struct bv_backup_rec *b)
{
    struct stat st;
    return b->local && bv_path_stat(app->root, b->file, &st, NULL) == 0;
}

struct present_q {
    struct layer *l;
    bool found;
};

static int present_cb(const struct bvdb_remote_link *row, void *opaque)
{
    struct present_q *q = opaque;
    if (q->found || strcmp(row->state, "present") != 0)
        return 0;
    q->found = true;
    snprintf(q->l->remote_name, sizeof(q->l->remote_name), "%s", row->remote);
    snprintf(q->l->key, sizeof(q->l->key), "%s", row->key);
    q->l->size = row->size > 0 ? (uint64_t)row->size : 0;
    return 0;
}

static bool find_remote(struct bv_app *app, const char *bid, struct layer *l)
{
    struct present_q q = { l, false };
    bvdb_remote_link_list(app->db, NULL, bid, present_cb, &q);
    return q.found;
}

bool bv_linkread_on_remote(struct bv_app *app, const char *bid, char *remote)
{
    struct layer l;
    memset(&l, 0, sizeof(l));
    bool found = find_remote(app, bid, &l);
    if (found && remote)
        snprintf(remote, BV_REMOTE_NAME_MAX + 1, "%s", l.remote_name);
    return found;
}

struct row {
    struct layer *l;
    char parent[BV_BACKUP_ID_MAX];
    bool local, found;
};

static void row_cb(const struct bvdb_backup *b, void *opaque)
{
    struct row *w = opaque;
    snprintf(w->l->id, sizeof(w->l->id), "%s", b->id);
    snprintf(w->l->file, sizeof(w->l->file), "%s", b->file ? b->file : "");
    snprintf(w->parent, sizeof(w->parent), "%s", b->parent_id ? b->parent_id : "");
    w->local = b->local;
    w->found = true;
}

/* One more layer slot in c (grown as the chain is walked). */
static struct layer *next_layer(struct resolve_ctx *c, size_t *cap)
{
    if (c->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct layer *v = realloc(c->v, ncap * sizeof(*v));
        if (!v)
            return NULL;
        c->v = v;
        *cap = ncap;
    }
    struct layer *l = &c->v[c->n++];
    memset(l, 0, sizeof(*l));
    return l;
}

/* The layers of bid into c (it first, then its parents unless alone); *nremote counts the
 * remote ones. */
static int resolve_chain(struct bv_app *app, const char *bid, bool alone,
                         struct resolve_ctx *c, size_t *nremote, bv_error **errp)
{
    char cur[BV_BACKUP_ID_MAX];
    snprintf(cur, sizeof(cur), "%s", bid);
    size_t cap = 0;
    *nremote = 0;
    while (cur[0]) {
        if (c->n == MAX_LAYERS)
            return bv_error_setf(errp, E2BIG, "chain of '%s' is deeper than %d links", bid,
                                 MAX_LAYERS);
        struct row w = { .l = next_layer(c, &cap) };
        if (!w.l)
            return bv_error_setf(errp, ENOMEM, "out of memory");
        if (bvdb_backup_get(app->db, cur, row_cb, &w) < 0 || !w.found)
            return bv_error_setf(errp, ENODEV, "Backup '%s' not found", cur);
        struct stat st;
        if (!w.local || bv_path_stat(app->root, w.l->file, &st, NULL) < 0) {
            if (!find_remote(app, w.l->id, w.l))
                return bv_error_setf(errp, EIO, "the link of backup '%s' ('%s') is neither on "
                                     "local disk nor present on a remote", w.l->id, w.l->file);
            w.l->remote = true;
            (*nremote)++;
        }
        snprintf(cur, sizeof(cur), "%s", alone ? "" : w.parent);
    }
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int object_pread(void *opaque, void *buf, size_t len, uint64_t off, bv_error **errp)
{
    struct object *o = opaque;
    uint64_t t0 = now_ns();
    int r = bv_s3_get_range(o->s3, o->key, off, len, buf, errp);
    atomic_fetch_add(&o->gets, 1);
    atomic_fetch_add(&o->bytes, r == 0 ? len : 0);
    atomic_fetch_add(&o->ns, now_ns() - t0);
    return r;
}

static void object_release(void *opaque)
{
    struct object *o = opaque;
    uint64_t gets = atomic_load(&o->gets);
    if (gets)
        log_debug("remote read of '%s': %" PRIu64 " bytes in %" PRIu64 " ranged GETs, %.3f s "
                  "in GETs", o->key, atomic_load(&o->bytes), gets,
                  (double)atomic_load(&o->ns) / 1e9);
    bv_s3_free(o->s3);
    free(o);
}

static int resolve(void *opaque, const char *name, struct bv_remote_object *obj,
                   bv_error **errp)
{
    struct resolve_ctx *c = opaque;
    struct layer *l = NULL;
    for (size_t i = 0; i < c->n && !l; i++)
        if (strcmp(c->v[i].file, name) == 0)
            l = &c->v[i];
    if (!l || !l->remote)
        return 1;                           /* a local file (or not a link: opened as is) */
    struct object *o = calloc(1, sizeof(*o));
    if (!o)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    snprintf(o->key, sizeof(o->key), "%s", l->key);
    int r = bv_remotes_client(c->app, l->remote_name, &o->s3, errp);
    if (r == 0 && l->size == 0)
        r = bv_s3_head(o->s3, o->key, &l->size, errp);
    if (r < 0) {
        bv_error_prepend(errp, "reading backup '%s' from remote '%s'", l->id, l->remote_name);
        object_release(o);
        return r;
    }
    *obj = (struct bv_remote_object){ .length = l->size, .pread = object_pread,
                                      .release = object_release, .opaque = o };
    return 0;
}

static int open_remote(struct bv_app *app, struct resolve_ctx *c, const char *file,
                       unsigned flags, bv_node **out, bv_error **errp)
{
    /* Bench-only knobs (bench/bench_s3.sh tuning); unset in normal use, not part of the API. */
    const char *ev;
    struct bv_remote_cache_opts co = {
        .block_size = (ev = getenv("BV_REMOTE_BLOCK_KIB")) ? (uint32_t)atoi(ev) << 10 : 0,
        .max_bytes = (ev = getenv("BV_REMOTE_CACHE_MIB")) ? (uint64_t)atoi(ev) << 20 : 0,
        .readahead = (ev = getenv("BV_REMOTE_READAHEAD")) ? (unsigned)atoi(ev) : 0,
        .fetchers = (ev = getenv("BV_REMOTE_FETCHERS")) ? (unsigned)atoi(ev) : 0,
    };
    if (flags & BV_LINKREAD_SPARSE)
        co = (struct bv_remote_cache_opts){ .block_size = 64 << 10, .max_bytes = 16 << 20,
                                            .readahead = 16 };
    else if ((flags & BV_LINKREAD_STREAM) && !co.block_size && !co.max_bytes)
        co = (struct bv_remote_cache_opts){ .block_size = 8 << 20, .max_bytes = 128 << 20,
                                            .readahead = 12, .fetchers = co.fetchers };
    struct bv_remote_cache *cache = NULL;
    int r = bv_remote_cache_new(&co, &cache, errp);
    if (r < 0)
        return r;
    struct bv_layer_resolver lr = { .resolve = resolve, .opaque = c, .cache = cache };
    struct bv_open_opts o = {
        .path = file, .format = BV_FMT_QCOW2, .root = app->root, .read_only = true,
        .no_backing = (flags & BV_LINKREAD_ALONE) != 0, .layers = &lr,
    };
    r = bv_node_open(&o, out, errp);
    bv_remote_cache_unref(cache);           /* the remote nodes hold it */
    return r;
}

int bv_linkread_open(struct bv_app *app, const char *bid, unsigned flags, bv_node **out,
                     bv_error **errp)
{
    *out = NULL;
    struct resolve_ctx c = { .app = app };
    size_t nremote = 0;
    int r = resolve_chain(app, bid, (flags & BV_LINKREAD_ALONE) != 0, &c, &nremote, errp);
    if (r == 0 && c.n == 0)
        r = bv_error_setf(errp, ENODEV, "Backup '' not found");
    if (r == 0 && nremote == 0) {
        struct bv_open_opts o = {
            .path = c.v[0].file, .format = BV_FMT_QCOW2, .root = app->root, .read_only = true,
            .no_backing = (flags & BV_LINKREAD_ALONE) != 0,
        };
        r = bv_node_open(&o, out, errp);
    } else if (r == 0) {
        r = open_remote(app, &c, c.v[0].file, flags, out, errp);
    }
    free(c.v);
    return r;
}
