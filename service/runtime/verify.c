/*
 * Verify jobs: see verify.h for what is checked and how damage heals.
 *
 * A verify runs as a service job (bv_jobs_task, type "verify", id
 * "verify-N"): validation here, on the caller's thread, so a bad reference
 * is a 400 before any job exists; the work on a worker (run_compare,
 * run_checksum), which files the report before the job completes, so a
 * client that read BLOCK_JOB_COMPLETED finds it (its id is in the job's
 * "report_id" from the start).
 *
 * Recording a corrupt checksum verify is one catalog transaction: the
 * damaged links' status (corrupt), their damaged extents, and the report
 * with the points that depend on them (affected_backups).  The event
 * follows the commit (events_lock comes before the catalog's lock).
 * Healing runs after that, under app->backups_lock (no chain change, no new
 * backup meanwhile).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "app.h"
#include "bv/path.h"
#include "bv/verify.h"
#include "bvdb/backups.h"
#include "bvdb/reports.h"
#include "log.h"
#include "model/reports.h"
#include "runtime/backups.h"
#include "runtime/jobs.h"
#include "runtime/notify.h"
#include "runtime/linkread.h"
#include "runtime/registry.h"
#include "runtime/reports.h"
#include "runtime/verify.h"
#include "runtime/workers.h"

#define REPORT_EXTENTS   64          /* extents listed in a report (all counted) */
#define REPORT_SAMPLES   8
#define MAX_LINKS        100000
#define PARAMS_LINKS     64          /* links named in the job's fields */

static const double hist_le[BV_VERIFY_HIST_BUCKETS] = {
    0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400,
};

struct verify_task {
    struct bv_app *app;
    struct bv_verify_request rq;     /* strings owned */
    char device[129];                /* the drive it concerns ("" for none) */
    char **links;                    /* checksum: link ids, each after its parent */
    size_t n_links;
    char report_id[40];
    char job_id[129];
};

/* ---- the task ----------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void task_free(void *opaque)
{
    struct verify_task *t = opaque;
    if (!t)
        return;
    free((char *)t->rq.test.name);
    free((char *)t->rq.test.format);
    free((char *)t->rq.reference.name);
    free((char *)t->rq.reference.format);
    free((char *)t->rq.backup);
    free((char *)t->rq.drive);
    for (size_t i = 0; i < t->n_links; i++)
        free(t->links[i]);
    free(t->links);
    free(t);
}

static struct verify_task *task_new(struct bv_app *app, const struct bv_verify_request *rq)
{
    struct verify_task *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->app = app;
    t->rq = *rq;
    t->rq.test.name = dup_or_null(rq->test.name);
    t->rq.test.format = dup_or_null(rq->test.format);
    t->rq.reference.name = dup_or_null(rq->reference.name);
    t->rq.reference.format = dup_or_null(rq->reference.format);
    t->rq.backup = dup_or_null(rq->backup);
    t->rq.drive = dup_or_null(rq->drive);
    return t;
}

static int add_link(struct verify_task *t, const char *id)
{
    if (t->n_links >= MAX_LINKS)
        return -E2BIG;
    char **v = realloc(t->links, (t->n_links + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    t->links = v;
    if (!(v[t->n_links] = strdup(id)))
        return -ENOMEM;
    t->n_links++;
    return 0;
}

/* ---- validation --------------------------------------------------------------- */

struct link_row {
    char id[BV_BACKUP_ID_MAX], parent[BV_BACKUP_ID_MAX], status[16], drive[129];
    bool found;
};

static void link_row_cb(const struct bvdb_backup *b, void *opaque)
{
    struct link_row *l = opaque;
    snprintf(l->id, sizeof(l->id), "%s", b->id);
    snprintf(l->parent, sizeof(l->parent), "%s", b->parent_id ? b->parent_id : "");
    snprintf(l->status, sizeof(l->status), "%s", b->status);
    snprintf(l->drive, sizeof(l->drive), "%s", b->drive_id);
    l->found = true;
}

static bool has_data(const char *status)
{
    return strcmp(status, "complete") == 0 || strcmp(status, "corrupt") == 0;
}

/* A backup named in the body: ENOENT (400) if unknown, EBUSY if it has no data. */
static int backup_ref(struct bv_app *app, const char *id, struct link_row *l, bv_error **errp)
{
    memset(l, 0, sizeof(*l));
    if (bvdb_backup_get(app->db, id, link_row_cb, l) < 0 || !l->found)
        return bv_error_setf(errp, ENOENT, "Backup '%s' not found", id);
    if (!has_data(l->status))
        return bv_error_setf(errp, EBUSY, "Backup '%s' is %s: it has no data to verify", id,
                             l->status);
    return 0;
}

/* The chain from the full up to id, in that order. */
static int plan_chain(struct bv_app *app, struct verify_task *t, const char *id)
{
    char *stack[4096];
    size_t n = 0;
    struct link_row l;
    char cur[BV_BACKUP_ID_MAX];
    snprintf(cur, sizeof(cur), "%s", id);
    int r = 0;
    while (cur[0] && r == 0) {
        memset(&l, 0, sizeof(l));
        if (n == 4096 || bvdb_backup_get(app->db, cur, link_row_cb, &l) < 0 || !l.found)
            r = -ENOENT;
        else if (!(stack[n++] = strdup(cur)))
            r = -ENOMEM;
        snprintf(cur, sizeof(cur), "%s", l.parent);
    }
    for (size_t i = n; i-- > 0;) {
        if (r == 0)
            r = add_link(t, stack[i]);
        free(stack[i]);
    }
    return r;
}

static int plan_checksum(struct bv_app *app, struct verify_task *t, bv_error **errp)
{
    const struct bv_verify_request *rq = &t->rq;
    if (rq->backup) {
        struct link_row l;
        int r = backup_ref(app, rq->backup, &l, errp);
        if (r < 0)
            return r;
        snprintf(t->device, sizeof(t->device), "%s", l.drive);
        r = rq->link_only ? add_link(t, rq->backup) : plan_chain(app, t, rq->backup);
        return r < 0 ? bv_error_setf(errp, -r, "cannot read the chain of backup '%s'",
                                     rq->backup) : 0;
    }
    struct bv_backup_rec *v = NULL;
    int n = bv_backups_list(app, rq->drive, &v);
    int r = n < 0 ? n : 0;
    for (int i = 0; i < n && r == 0; i++)
        if (has_data(v[i].status))
            r = add_link(t, v[i].id);
    free(v);
    if (r < 0)
        return bv_error_setf(errp, -r, "cannot list the backups of drive '%s'", rq->drive);
    snprintf(t->device, sizeof(t->device), "%s", rq->drive);
    if (t->n_links)
        return 0;
    struct bv_drive_entry *e = bv_registry_get(app, rq->drive);
    if (!e)
        return bv_error_setf(errp, ENOENT, "Cannot find device='%s' nor node-name='%s'",
                             rq->drive, rq->drive);
    bv_registry_put(app, e);
    return bv_error_setf(errp, EINVAL, "Drive '%s' has no complete backup to verify",
                         rq->drive);
}

static int side_ref(struct bv_app *app, const struct bv_verify_side *s, char *device,
                    bv_error **errp)
{
    struct link_row l;
    struct stat st;
    int r = 0;
    switch (s->kind) {
    case BV_VSIDE_DRIVE: {
        struct bv_drive_entry *e = bv_registry_get(app, s->name);
        if (!e)
            return bv_error_setf(errp, ENOENT, "Cannot find device='%s' nor node-name='%s'",
                                 s->name, s->name);
        bv_registry_put(app, e);
        if (!device[0])
            snprintf(device, 129, "%s", s->name);
        break;
    }
    case BV_VSIDE_BACKUP:
        r = backup_ref(app, s->name, &l, errp);
        if (r == 0 && !device[0])
            snprintf(device, 129, "%s", l.drive);
        break;
    case BV_VSIDE_FILE:
        r = bv_path_stat(app->root, s->name, &st, errp);
        if (r == 0 && !S_ISREG(st.st_mode))
            r = bv_error_setf(errp, EINVAL, "'%s' is not a regular file", s->name);
        if (r < 0 && r != -EINVAL)
            r = -ENOENT;                 /* a bad name in the body: 400 */
        break;
    }
    return r;
}

/* ---- opening sides ------------------------------------------------------------ */

struct side_node {
    bv_node *node;
    struct bv_drive_entry *drive;    /* a reference when the node is a drive's */
};

static void side_close(struct bv_app *app, struct side_node *s)
{
    if (s->drive)
        bv_registry_put(app, s->drive);
    else
        bv_node_close(s->node, NULL);
    s->node = NULL;
    s->drive = NULL;
}

static int side_open(struct bv_app *app, const struct bv_verify_side *s, struct side_node *out,
                     bv_error **errp)
{
    memset(out, 0, sizeof(*out));
    if (s->kind == BV_VSIDE_DRIVE) {
        out->drive = bv_registry_get(app, s->name);
        if (!out->drive)
            return bv_error_setf(errp, ENOENT, "Cannot find device='%s' nor node-name='%s'",
                                 s->name, s->name);
        out->node = bv_drive_node(out->drive->drive);
        return 0;
    }
    if (s->kind == BV_VSIDE_BACKUP)
        return bv_backups_open_point(app, s->name, &out->node, errp);
    enum bv_format fmt = s->format ? bv_format_parse(s->format) : BV_FMT_NONE;
    struct stat st;
    if (bv_path_stat(app->root, s->name, &st, NULL) == 0) {
        /* a file a drive has open reads through the drive (unwritten metadata) */
        struct bv_file_id id = { (uint64_t)st.st_dev, (uint64_t)st.st_ino };
        struct bv_drive_entry *e = bv_registry_get_by_image(app, &id);
        if (e && (fmt == BV_FMT_NONE || bv_node_format(bv_drive_node(e->drive)) == fmt)) {
            out->drive = e;
            out->node = bv_drive_node(e->drive);
            return 0;
        }
        if (e)
            bv_registry_put(app, e);
    }
    struct bv_open_opts o = { .path = s->name, .format = fmt, .root = app->root,
                              .read_only = true };
    return bv_node_open(&o, &out->node, errp);
}

static void side_text(const struct bv_verify_side *s, char *out, size_t n)
{
    static const char *const kinds[] = { "drive", "backup", "file" };
    snprintf(out, n, "%s %s", kinds[s->kind], s->name);
}

/* ---- reports ------------------------------------------------------------------ */

struct report_in {
    const char *kind;
    bool corrupt;
    bool has_mismatch;
    uint64_t first_offset, mismatched;
    const struct bv_verify_extent *ext;
    size_t n_ext;
    uint64_t ext_total;
    const struct bv_model_sample *samples;
    size_t n_samples;
    const char *test, *reference;
    char *const *affected;
    size_t n_affected;
};

/* Insert the report row (inside the caller's transaction, if any). */
static int insert_report(struct verify_task *t, const struct report_in *in)
{
    char now[32];
    bvdb_now(now);
    char *ext = bv_model_verify_extents(in->ext, in->n_ext, REPORT_EXTENTS);
    char *smp = bv_model_verify_samples(in->samples, in->n_samples);
    char *aff = bv_model_id_array(in->affected, in->n_affected);
    struct bvdb_report rec = {
        .id = t->report_id, .job_id = t->job_id, .drive_id = t->device[0] ? t->device : NULL,
        .kind = in->kind, .status = in->corrupt ? "corrupt" : "clean",
        .test = in->test, .reference = in->reference, .has_mismatch = in->has_mismatch,
        .first_mismatch_sector = in->first_offset / 512,
        .first_mismatch_offset = in->first_offset, .mismatched_bytes = in->mismatched,
        .extents = ext, .extents_total = in->ext_total, .samples = smp, .affected = aff,
        .created_at = now,
    };
    int r = ext && smp && aff ? bvdb_report_insert(t->app->db, &rec) : -ENOMEM;
    free(ext);
    free(smp);
    free(aff);
    return r;
}

/* After the commit: the event, the counter, the log line. */
static void announce(struct verify_task *t, const struct report_in *in)
{
    if (!in->corrupt)
        return;
    atomic_fetch_add(&t->app->corruption_reports, 1);
    char *text = bv_model_verify_event(t->report_id, t->job_id, t->device, in->first_offset);
    if (text) {
        bv_app_emit(t->app, "CORRUPTION_DETECTED", text);
        bv_notify_corruption(t->app, text);
    }
    free(text);
    log_warn("verify '%s': %s corruption, first at offset %" PRIu64 " (report %s)", t->job_id,
             in->kind, in->first_offset, t->report_id);
}

/* ---- compare ------------------------------------------------------------------ */

static int run_compare(struct bv_job *job, struct verify_task *t, uint64_t *bytes,
                       bv_error **errp)
{
    struct side_node a, b;
    int r = side_open(t->app, &t->rq.test, &a, errp);
    if (r < 0)
        return r;
    r = side_open(t->app, &t->rq.reference, &b, errp);
    if (r < 0) {
        side_close(t->app, &a);
        return r;
    }
    struct bv_compare_report rep;
    r = bv_verify_compare(job, a.node, b.node, REPORT_EXTENTS, &rep, errp);
    side_close(t->app, &a);
    side_close(t->app, &b);
    *bytes = rep.bytes_read;
    if (r == 0) {
        char test[1100], ref[1100];
        side_text(&t->rq.test, test, sizeof(test));
        side_text(&t->rq.reference, ref, sizeof(ref));
        struct bv_verify_extent *ext = calloc(rep.n_extents ? rep.n_extents : 1, sizeof(*ext));
        for (size_t i = 0; ext && i < rep.n_extents; i++)
            ext[i] = (struct bv_verify_extent){ rep.extents[i].offset, rep.extents[i].length };
        struct bv_model_sample smp = { .offset = rep.first_diff_byte,
                                       .len = rep.sample_len, .has_ref = true };
        memcpy(smp.test, rep.sample_a, rep.sample_len);
        memcpy(smp.ref, rep.sample_b, rep.sample_len);
        bool diff = !rep.identical && rep.first_diff_byte != UINT64_MAX;
        struct report_in in = {
            .kind = "compare", .corrupt = !rep.identical, .has_mismatch = diff,
            .first_offset = diff ? rep.first_diff_byte : 0, .mismatched = rep.mismatched_bytes,
            .ext = ext, .n_ext = ext ? rep.n_extents : 0, .ext_total = rep.total_extents,
            .samples = &smp, .n_samples = diff && rep.sample_len ? 1 : 0,
            .test = test, .reference = ref,
        };
        r = insert_report(t, &in);
        if (r < 0)
            r = bv_error_setf(errp, EIO, "cannot record the verify report in the catalog");
        else
            announce(t, &in);
        free(ext);
    }
    bv_compare_report_free(&rep);
    return r;
}

/* ---- checksum: one link ------------------------------------------------------- */

struct link_res {
    struct bv_backup_rec rec;
    bool bad_structure;
    char why[300];
    bool checked_data;
    struct bv_verify_blocks_result blocks;
    struct bv_model_sample sample;   /* at the first bad block */
};

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Presence, qcow2 check, backing name and size of one link file. */
static void check_structure(struct bv_app *app, struct link_res *lr, const char *parent_file)
{
    if (!bv_linkread_is_local(app, &lr->rec) && !bv_linkread_on_remote(app, lr->rec.id, NULL)) {
        lr->bad_structure = true;
        snprintf(lr->why, sizeof(lr->why), "link file '%.200s' is missing", lr->rec.file);
        return;
    }
    /* the link alone, from its file or (tiered) its remote object */
    bv_node *n = NULL;
    bv_error *e = NULL;
    struct bv_image_info info;
    struct bv_check_result cr;
    memset(&cr, 0, sizeof(cr));
    int r = bv_linkread_open(app, lr->rec.id, BV_LINKREAD_ALONE | BV_LINKREAD_SPARSE, &n, &e);
    if (r == 0)
        r = bv_node_info(n, &info, &e);
    if (r == 0) {
        const char *want = parent_file ? base_name(parent_file) : "";
        if (strcmp(info.backing, want) != 0)
            snprintf(lr->why, sizeof(lr->why), "backing file '%.100s' is not the parent "
                     "link '%.100s'", info.backing, want);
        else if (info.virtual_size != lr->rec.virtual_size)
            snprintf(lr->why, sizeof(lr->why), "virtual size %" PRIu64 " is not the recorded "
                     "%" PRIu64, info.virtual_size, lr->rec.virtual_size);
        else if ((r = bv_image_check(n, false, &cr, &e)) == 0 && (cr.corruptions ||
                                                                  cr.check_errors))
            snprintf(lr->why, sizeof(lr->why), "qcow2 check: %" PRIu64 " errors, %" PRIu64
                     " check errors%s%.150s", cr.corruptions, cr.check_errors,
                     cr.nmessages ? ": " : "", cr.nmessages ? cr.messages[0] : "");
    }
    if (r < 0)
        snprintf(lr->why, sizeof(lr->why), "%.290s", e ? e->msg : strerror(-r));
    lr->bad_structure = lr->why[0] != 0;
    bv_check_result_free(&cr);
    bv_error_free(e);
    bv_node_close(n, NULL);
}

/* Is the drive's data in [off, off+len) still what link l recorded?  The
 * link must be the newest of its drive's open chain, whose bitmap (not busy)
 * does not mark the range; the drive is quiesced while the bitmap is tested
 * and the data read, and the data's CRC must equal l's.  buf gets it. */
struct drive_view {
    struct bv_drive_entry *e;
    struct bv_dirty_bitmap *bm;
};

struct chain_row {
    char bitmap[256];
    bool closed, found;
};

static void chain_row_cb(const struct bvdb_chain *c, void *opaque)
{
    struct chain_row *cr = opaque;
    snprintf(cr->bitmap, sizeof(cr->bitmap), "%s", c->bitmap ? c->bitmap : "");
    cr->closed = c->closed;
    cr->found = true;
}

struct newest_acc {
    char id[BV_BACKUP_ID_MAX];
    bool running;
};

static int newest_cb(const struct bvdb_backup *b, void *opaque)
{
    struct newest_acc *n = opaque;
    if (strcmp(b->status, "running") == 0)
        n->running = true;
    else if (has_data(b->status))
        snprintf(n->id, sizeof(n->id), "%s", b->id);
    return 0;
}

/* The drive and its chain bitmap if l is the newest link of the drive's open
 * chain and no backup of the chain runs; else false. */
static bool drive_view_of(struct bv_app *app, const struct bv_backup_rec *l,
                          struct drive_view *dv)
{
    memset(dv, 0, sizeof(*dv));
    struct chain_row cr = { .found = false };
    struct newest_acc na = { "", false };
    if (bvdb_chain_get(app->db, l->chain, chain_row_cb, &cr) < 0 || !cr.found || cr.closed ||
        !cr.bitmap[0])
        return false;
    bvdb_backup_list(app->db, NULL, l->chain, newest_cb, &na);
    if (na.running || strcmp(na.id, l->id) != 0)
        return false;
    dv->e = bv_registry_get(app, l->drive);
    if (!dv->e)
        return false;
    struct bv_bitmap_set *set = bv_drive_bitmaps(dv->e->drive);
    dv->bm = bv_bitmap_find(set, cr.bitmap);
    struct bv_bitmap_info bi;
    if (dv->bm)
        bv_bitmap_query(set, dv->bm, &bi);
    if (!dv->bm || bi.busy || bi.inconsistent || bv_drive_busy(dv->e->drive) ||
        bv_drive_size(dv->e->drive) != l->virtual_size) {
        bv_registry_put(app, dv->e);
        dv->e = NULL;
        return false;
    }
    return true;
}

static bool drive_block_unchanged(struct drive_view *dv, const struct bv_crcmap *map,
                                  uint64_t block, uint8_t *buf, uint64_t *len)
{
    uint64_t off = block * BV_CRC_BLOCK;
    uint32_t want;
    *len = bv_crc_block_len(bv_crcmap_disk_size(map), block);
    if (!bv_crcmap_get(map, block, &want))
        return false;
    struct bv_bitmap_set *set = bv_drive_bitmaps(dv->e->drive);
    uint64_t ro, rl;
    bv_drive_quiesce(dv->e->drive);
    bool ok = !bv_bitmap_next_dirty(set, dv->bm, off, off + *len, &ro, &rl) &&
              bv_node_pread(bv_drive_node(dv->e->drive), buf, *len, off, NULL) == 0;
    bv_drive_unquiesce(dv->e->drive);
    return ok && (uint32_t)crc32_z(0, buf, (z_size_t)*len) == want;
}

/* The report's sample for a bad link: the point's bytes at the first bad
 * block; with the drive's unchanged data, at the first byte that differs. */
static void link_sample(struct bv_app *app, struct link_res *lr, bv_node *point,
                        const struct bv_crcmap *map)
{
    struct bv_model_sample *s = &lr->sample;
    s->offset = lr->blocks.first_bad;
    s->len = lr->blocks.sample_len;
    memcpy(s->test, lr->blocks.sample, s->len);
    struct drive_view dv;
    if (!drive_view_of(app, &lr->rec, &dv))
        return;
    uint8_t *ref = malloc(BV_CRC_BLOCK), *cur = malloc(BV_CRC_BLOCK);
    uint64_t len = 0;
    if (ref && cur && drive_block_unchanged(&dv, map, s->offset / BV_CRC_BLOCK, ref, &len) &&
        bv_node_pread(point, cur, len, s->offset, NULL) == 0) {
        uint64_t i = 0;
        while (i < len && ref[i] == cur[i])
            i++;
        if (i == len)
            i = 0;
        uint64_t n = len - i < BV_VERIFY_SAMPLE ? len - i : BV_VERIFY_SAMPLE;
        s->offset += i;
        s->len = (unsigned)n;
        memcpy(s->test, cur + i, n);
        memcpy(s->ref, ref + i, n);
        s->has_ref = true;
    }
    free(ref);
    free(cur);
    bv_registry_put(app, dv.e);
}

/* The blocks of map that no newer link of the point rewrote (above: their
 * union; NULL: all of them). */
static int blocks_to_check(const struct bv_crcmap *map, const struct bv_crcmap *above,
                           struct bv_crcmap **out)
{
    struct bv_crcmap *m = NULL;
    int r = bv_crcmap_new(bv_crcmap_disk_size(map), &m, NULL);
    uint64_t b = 0;
    uint32_t crc, x;
    while (r == 0 && bv_crcmap_next(map, &b, &crc)) {
        if (!above || !bv_crcmap_get(above, b, &x))
            bv_crcmap_set(m, b, crc);
        b++;
    }
    if (r == 0)
        *out = m;
    return r;
}

/* above (may be NULL) is the union of the maps of the links newer than this
 * one up to the point verified; this link's map is added to it. */
static int check_link(struct bv_job *job, struct verify_task *t, struct link_res *lr,
                      const char *parent_file, struct bv_crcmap *above, uint64_t *bytes,
                      bv_error **errp)
{
    check_structure(t->app, lr, parent_file);
    struct bv_crcmap *own = NULL, *map = NULL;
    bv_node *point = NULL;
    bv_error *e = NULL;
    int r = bv_backups_link_crcmap(t->app, lr->rec.id, &own, &e);
    if (r == 0 && !lr->bad_structure)
        r = blocks_to_check(own, above, &map);
    if (r == 0 && !lr->bad_structure)     /* remote links: only what the map covers */
        r = bv_linkread_open(t->app, lr->rec.id, BV_LINKREAD_SPARSE, &point, &e);
    if (r == 0 && !lr->bad_structure) {
        bv_job_add_len(job, bv_crcmap_count(map) * BV_CRC_BLOCK);
        struct bv_verify_blocks_opts o = { .point = point, .map = map, .job = job };
        /* Bench-only knobs (bench/bench_verify.sh sweeps them to choose the
         * defaults of bv/verify.h); unset in normal use.  Not part of the API. */
        const char *ev = getenv("BV_VERIFY_THREADS");
        if (ev)
            o.threads = (unsigned)strtoul(ev, NULL, 0);
        if ((ev = getenv("BV_VERIFY_CHUNK")))
            o.chunk = (uint32_t)strtoul(ev, NULL, 0);
        if ((ev = getenv("BV_VERIFY_PIECE")))
            o.piece = (uint32_t)strtoul(ev, NULL, 0);
        r = bv_verify_blocks(&o, &lr->blocks, &e);
        *bytes += lr->blocks.bytes_read;
        lr->checked_data = r == 0;
        if (r == 0 && lr->blocks.bad_blocks)
            link_sample(t->app, lr, point, own);
    }
    if (own && above)
        bv_crcmap_overlay(above, own);
    if (r == -ECANCELED) {
        bv_error_propagate(errp, &e);
    } else if (r < 0) {
        lr->bad_structure = true;        /* unreadable: damage, not a failed job */
        snprintf(lr->why, sizeof(lr->why), "%.290s", e ? e->msg : strerror(-r));
        r = 0;
    }
    bv_error_free(e);
    bv_node_close(point, NULL);
    bv_crcmap_free(map);
    bv_crcmap_free(own);
    return r;
}

/* ---- checksum: recording --------------------------------------------------------- */

static bool link_bad(const struct link_res *lr)
{
    return lr->bad_structure || lr->blocks.bad_blocks;
}

static int cmp_ext(const void *a, const void *b)
{
    const struct bv_verify_extent *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every bad link's extents, sorted and merged. */
static struct bv_verify_extent *merged_extents(const struct link_res *lr, size_t n,
                                               size_t *out_n, uint64_t *total)
{
    size_t cap = 0;
    for (size_t i = 0; i < n; i++)
        cap += lr[i].blocks.n_extents;
    struct bv_verify_extent *v = calloc(cap ? cap : 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; v && i < n; i++)
        for (size_t j = 0; j < lr[i].blocks.n_extents; j++)
            v[k++] = lr[i].blocks.extents[j];
    if (k)
        qsort(v, k, sizeof(*v), cmp_ext);
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m && v[m - 1].offset + v[m - 1].length >= v[i].offset) {
            uint64_t end = v[i].offset + v[i].length;
            if (end > v[m - 1].offset + v[m - 1].length)
                v[m - 1].length = end - v[m - 1].offset;
        } else {
            v[m++] = v[i];
        }
    }
    *out_n = m;
    *total = m;
    for (size_t i = 0; i < n; i++)      /* ranges past a link's cap count too */
        if (lr[i].blocks.extents_total > lr[i].blocks.n_extents)
            *total += lr[i].blocks.extents_total - lr[i].blocks.n_extents;
    return v;
}

/* The points that read a damaged block of a link found bad now. */
static size_t affected_points(struct bv_app *app, const char *drive, const struct link_res *lr,
                              size_t n, char ***out)
{
    struct bv_backup_rec *v = NULL;
    int nb = bv_backups_list(app, drive, &v);
    char **ids = calloc(nb > 0 ? (size_t)nb : 1, sizeof(*ids));
    size_t k = 0;
    for (int i = 0; ids && i < nb; i++) {
        if (!v[i].damaged)
            continue;
        /* walk its parents (within this drive's list) to a link found bad now */
        const struct bv_backup_rec *cur = &v[i];
        bool hit = false;
        for (int depth = 0; cur && !hit && depth <= nb; depth++) {
            for (size_t j = 0; j < n && !hit; j++)
                hit = link_bad(&lr[j]) && strcmp(lr[j].rec.id, cur->id) == 0;
            const struct bv_backup_rec *up = NULL;
            for (int q = 0; cur->parent[0] && q < nb && !up; q++)
                if (strcmp(v[q].id, cur->parent) == 0)
                    up = &v[q];
            cur = up;
        }
        if (hit && (ids[k] = strdup(v[i].id)))
            k++;
    }
    free(v);
    *out = ids;
    return k;
}

/* One transaction: link statuses, damaged extents, the report. */
static int record_checksum(struct verify_task *t, struct link_res *lr, size_t n,
                           struct report_in *in)
{
    struct bv_app *app = t->app;
    int r = bvdb_begin(app->db);
    for (size_t i = 0; i < n && r == 0 && in->corrupt; i++) {
        if (!link_bad(&lr[i]))
            continue;
        r = bvdb_backup_set_status(app->db, lr[i].rec.id, "corrupt");
        for (size_t j = 0; j < lr[i].blocks.n_extents && r == 0; j++)
            r = bvdb_damage_add(app->db, lr[i].rec.id, lr[i].blocks.extents[j].offset,
                                lr[i].blocks.extents[j].length, t->report_id);
    }
    char **aff = NULL;
    size_t n_aff = 0;
    if (r == 0 && in->corrupt)
        n_aff = affected_points(app, t->device, lr, n, &aff);
    in->affected = aff;
    in->n_affected = n_aff;
    if (r == 0)
        r = insert_report(t, in);
    if (r == 0 && !in->corrupt) {
        char now[32];
        bvdb_now(now);
        for (size_t i = 0; i < n && r == 0; i++)
            r = bvdb_backup_set_verified(app->db, lr[i].rec.id, now);
    }
    if (r == 0)
        r = bvdb_commit(app->db);
    else
        bvdb_rollback(app->db);
    for (size_t i = 0; i < n_aff; i++)
        free(aff[i]);
    free(aff);
    in->affected = NULL;
    in->n_affected = 0;
    return r;
}

/* ---- healing ----------------------------------------------------------------- */

/* Rewrite the bad blocks of lr whose drive data is unchanged into the link
 * itself (verify.h, step 1).  Caller holds app->backups_lock. */
static void heal_in_place(struct bv_app *app, struct link_res *lr)
{
    struct drive_view dv;
    if (lr->bad_structure || lr->rec.compress || !bv_linkread_is_local(app, &lr->rec) ||
        !drive_view_of(app, &lr->rec, &dv))
        return;                            /* a remote object is not rewritten in place */
    struct bv_crcmap *map = NULL;
    bv_node *link = NULL;
    uint8_t *buf = malloc(BV_CRC_BLOCK);
    struct bv_open_opts o = { .path = lr->rec.file, .format = BV_FMT_QCOW2, .root = app->root };
    int r = buf ? bv_backups_link_crcmap(app, lr->rec.id, &map, NULL) : -ENOMEM;
    if (r == 0)
        r = bv_node_open(&o, &link, NULL);
    uint64_t healed = 0;
    for (size_t i = 0; r == 0 && i < lr->blocks.n_extents; i++) {
        const struct bv_verify_extent *x = &lr->blocks.extents[i];
        for (uint64_t off = x->offset; r == 0 && off < x->offset + x->length;
             off += BV_CRC_BLOCK) {
            uint64_t len = 0;
            if (!drive_block_unchanged(&dv, map, off / BV_CRC_BLOCK, buf, &len))
                continue;
            r = bv_node_pwrite(link, buf, len, off, 0, NULL);
            if (r == 0)
                healed++;
        }
    }
    if (r == 0 && healed)
        r = bv_node_flush(link, NULL);
    bv_node_close(link, NULL);
    /* read back through the point: only blocks that now verify leave the damage list */
    for (size_t i = 0; r == 0 && healed && i < lr->blocks.n_extents; i++) {
        const struct bv_verify_extent *x = &lr->blocks.extents[i];
        bv_node *point = NULL;
        if (bv_backups_open_point(app, lr->rec.id, &point, NULL) < 0)
            break;
        for (uint64_t off = x->offset; off < x->offset + x->length; off += BV_CRC_BLOCK) {
            uint64_t b = off / BV_CRC_BLOCK, len = bv_crc_block_len(lr->rec.virtual_size, b);
            uint32_t want;
            if (bv_crcmap_get(map, b, &want) && bv_node_pread(point, buf, len, off, NULL) == 0 &&
                (uint32_t)crc32_z(0, buf, (z_size_t)len) == want)
                bvdb_damage_remove(app->db, lr->rec.id, off, len);
        }
        bv_node_close(point, NULL);
    }
    if (healed)
        log_info("verify: rewrote %" PRIu64 " damaged block(s) of backup '%s' from drive '%s'",
                 healed, lr->rec.id, lr->rec.drive);
    bv_crcmap_free(map);
    free(buf);
    bv_registry_put(app, dv.e);
}

static int no_more(uint64_t off, uint64_t len, void *opaque)
{
    (void)off;
    (void)len;
    *(bool *)opaque = true;
    return 1;
}

/* Mark the bad blocks of lr dirty in its open chain's bitmap (step 2). */
static void heal_mark(struct bv_app *app, const struct link_res *lr)
{
    struct chain_row cr = { .found = false };
    if (bvdb_chain_get(app->db, lr->rec.chain, chain_row_cb, &cr) < 0 || !cr.found ||
        cr.closed || !cr.bitmap[0])
        return;
    struct bv_drive_entry *e = bv_registry_get(app, lr->rec.drive);
    if (!e)
        return;
    struct bv_bitmap_set *set = bv_drive_bitmaps(e->drive);
    struct bv_dirty_bitmap *bm = bv_bitmap_find(set, cr.bitmap);
    for (size_t i = 0; bm && i < lr->blocks.n_extents; i++)
        bv_bitmap_mark_range(set, bm, lr->blocks.extents[i].offset,
                             lr->blocks.extents[i].length);
    bv_registry_put(app, e);
}

static void heal(struct bv_app *app, struct link_res *lr, size_t n)
{
    pthread_mutex_lock(&app->backups_lock);
    for (size_t i = 0; i < n; i++) {
        if (!lr[i].blocks.bad_blocks)
            continue;
        heal_in_place(app, &lr[i]);
        heal_mark(app, &lr[i]);
        bool left = false;
        bvdb_damage_list(app->db, lr[i].rec.id, no_more, &left);
        if (!left && !lr[i].bad_structure) {
            bvdb_backup_set_status(app->db, lr[i].rec.id, "complete");
            log_info("verify: backup '%s' healed in place", lr[i].rec.id);
        }
    }
    pthread_mutex_unlock(&app->backups_lock);
}

static void remark_cb(void *opaque, const char *link, uint64_t off, uint64_t len)
{
    struct drive_view *dv = opaque;
    (void)link;
    if (len)
        bv_bitmap_mark_range(bv_drive_bitmaps(dv->e->drive), dv->bm, off, len);
}

void bv_verify_remark_locked(struct bv_app *app, struct bv_drive_entry *e, const char *newest,
                             const char *bitmap)
{
    if (!newest || !newest[0] || !bitmap || !bitmap[0])
        return;
    struct drive_view dv = { e, bv_bitmap_find(bv_drive_bitmaps(e->drive), bitmap) };
    if (dv.bm)
        bv_backups_point_damage(app, newest, remark_cb, &dv);
}

/* ---- checksum: the run ------------------------------------------------------------ */

static void checksum_report(struct verify_task *t, struct link_res *lr, size_t n,
                            struct report_in *in, struct bv_verify_extent **ext,
                            struct bv_model_sample *smp)
{
    bool any_data = false, any_structure = false;
    size_t ns = 0;
    const struct link_res *first = NULL;
    for (size_t i = 0; i < n; i++) {
        any_data |= lr[i].blocks.bad_blocks != 0;
        any_structure |= lr[i].bad_structure;
        in->mismatched += lr[i].blocks.bad_bytes;
        if (lr[i].blocks.bad_blocks && (!first || lr[i].blocks.first_bad <
                                                  first->blocks.first_bad))
            first = &lr[i];
        if (lr[i].blocks.bad_blocks && ns < REPORT_SAMPLES)
            smp[ns++] = lr[i].sample;
    }
    in->kind = any_data || !any_structure ? "checksum" : "structure";
    in->corrupt = any_data || any_structure;
    in->has_mismatch = first != NULL;
    in->first_offset = first ? first->blocks.first_bad : 0;
    *ext = merged_extents(lr, n, &in->n_ext, &in->ext_total);
    in->ext = *ext;
    in->samples = smp;
    in->n_samples = ns;
    in->reference = "recorded checksums";
    for (size_t i = 0; i < n; i++)
        if (lr[i].bad_structure)
            log_warn("verify '%s': backup '%s': %s", t->job_id, lr[i].rec.id, lr[i].why);
}

/* The links in the order they are checked: a point's chain from the point
 * down (each block is checked in the link the point reads it from: cost =
 * the point's data); a drive's links or a single link, each whole. */
static int run_checksum(struct bv_job *job, struct verify_task *t, uint64_t *bytes,
                        bv_error **errp)
{
    struct link_res *lr = calloc(t->n_links ? t->n_links : 1, sizeof(*lr));
    struct bv_crcmap *above = NULL;
    bool point_mode = t->rq.backup && !t->rq.link_only;
    struct bv_backup_rec top;
    if (!lr || (point_mode && (bv_backups_get(t->app, t->rq.backup, &top, NULL) < 0 ||
                               bv_crcmap_new(top.virtual_size, &above, NULL) < 0))) {
        free(lr);
        return bv_error_setf(errp, ENOMEM, "cannot prepare the verify of '%s'",
                             t->rq.backup ? t->rq.backup : t->rq.drive);
    }
    size_t n = 0;
    int r = 0;
    for (size_t k = 0; k < t->n_links && r == 0; k++) {
        size_t i = point_mode ? t->n_links - 1 - k : k;
        if (bv_backups_get(t->app, t->links[i], &lr[n].rec, NULL) < 0)
            continue;                    /* pruned since the job started */
        char parent_file[1024] = "";
        struct bv_backup_rec p;
        if (lr[n].rec.parent[0] && bv_backups_get(t->app, lr[n].rec.parent, &p, NULL) == 0)
            snprintf(parent_file, sizeof(parent_file), "%s", p.file);
        r = check_link(job, t, &lr[n], lr[n].rec.parent[0] ? parent_file : NULL, above, bytes,
                       errp);
        n++;
    }
    bv_crcmap_free(above);
    if (r == 0) {
        char test[300];
        snprintf(test, sizeof(test), t->rq.backup ? "backup %s" : "drive %s",
                 t->rq.backup ? t->rq.backup : t->rq.drive);
        struct report_in in = { .test = test };
        struct bv_verify_extent *ext = NULL;
        struct bv_model_sample smp[REPORT_SAMPLES];
        checksum_report(t, lr, n, &in, &ext, smp);
        r = record_checksum(t, lr, n, &in);
        if (r < 0)
            r = bv_error_setf(errp, EIO, "cannot record the verify report in the catalog");
        else
            announce(t, &in);
        free(ext);
        if (r == 0 && in.corrupt)
            heal(t->app, lr, n);
    }
    for (size_t i = 0; i < n; i++)
        bv_verify_blocks_free(&lr[i].blocks);
    free(lr);
    return r;
}

/* ---- the job ------------------------------------------------------------------ */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void account(struct bv_app *app, uint64_t bytes, int64_t us)
{
    atomic_fetch_add(&app->verify_bytes, bytes);
    atomic_fetch_add(&app->verify_count, 1);
    atomic_fetch_add(&app->verify_us, (uint64_t)(us > 0 ? us : 0));
    size_t b = 0;
    while (b < BV_VERIFY_HIST_BUCKETS && (double)us / 1e6 > hist_le[b])
        b++;
    atomic_fetch_add(&app->verify_hist[b], 1);
}

static int verify_run(struct bv_job *job, void *opaque, bv_error **errp)
{
    struct verify_task *t = opaque;
    snprintf(t->job_id, sizeof(t->job_id), "%s", bv_job_id(job));
    int64_t t0 = now_us();
    uint64_t bytes = 0;
    int r = t->rq.checksum ? run_checksum(job, t, &bytes, errp)
                           : run_compare(job, t, &bytes, errp);
    account(t->app, bytes, now_us() - t0);
    return r;
}

int bv_verify_start(struct bv_app *app, const struct bv_verify_request *rq,
                    struct bv_job_info *info, bv_error **errp)
{
    struct verify_task *t = task_new(app, rq);
    if (!t)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int r;
    if (rq->checksum) {
        r = plan_checksum(app, t, errp);
    } else {
        r = side_ref(app, &rq->test, t->device, errp);
        if (r == 0)
            r = side_ref(app, &rq->reference, t->device, errp);
    }
    if (r < 0) {
        task_free(t);
        return r;
    }
    bv_reports_new_id(t->report_id);
    char *params = bv_model_verify_params(&t->rq, t->links,
                                          t->n_links <= PARAMS_LINKS ? t->n_links : 0,
                                          t->report_id);
    struct bv_task_spec s = {
        .type = "verify", .device = t->device[0] ? t->device : NULL, .params = params,
        .run = verify_run, .release = task_free, .opaque = t,
    };
    r = bv_jobs_task(app, &s, info, errp);      /* t belongs to the job (or was released) */
    free(params);
    return r;
}

/* ---- after a chain backup ----------------------------------------------------------- */

struct after {
    struct bv_app *app;
    char bid[BV_BACKUP_ID_MAX];
};

static void after_run(void *arg)
{
    struct after *a = arg;
    struct bv_verify_request rq = { .checksum = true, .backup = a->bid, .link_only = true };
    struct bv_job_info info;
    bv_error *e = NULL;
    if (bv_verify_start(a->app, &rq, &info, &e) < 0)
        log_error("cannot start the verify of backup '%s': %s", a->bid, e ? e->msg : "?");
    bv_error_free(e);
    free(a);
}

static void after_drop(void *arg)
{
    free(arg);
}

void bv_verify_after_backup(struct bv_app *app, const char *backup_id)
{
    struct after *a = calloc(1, sizeof(*a));
    if (!a)
        return;
    a->app = app;
    snprintf(a->bid, sizeof(a->bid), "%s", backup_id);
    if (bv_workers_submit(app->workers, after_run, after_drop, a) < 0) {
        log_warn("backup '%s': the service is stopping, no verify", backup_id);
        free(a);
    }
}

/* ---- metrics ------------------------------------------------------------------ */

void bv_verify_metrics(struct bv_app *app, FILE *f)
{
    fprintf(f, "# HELP blockvault_verify_bytes_total Bytes read by verify jobs since start.\n"
               "# TYPE blockvault_verify_bytes_total counter\n"
               "blockvault_verify_bytes_total %" PRIu64 "\n",
            (uint64_t)atomic_load(&app->verify_bytes));
    fprintf(f, "# HELP blockvault_verify_duration_seconds Durations of verify jobs.\n"
               "# TYPE blockvault_verify_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t b = 0; b < BV_VERIFY_HIST_BUCKETS; b++) {
        cum += atomic_load(&app->verify_hist[b]);
        fprintf(f, "blockvault_verify_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                hist_le[b], cum);
    }
    cum += atomic_load(&app->verify_hist[BV_VERIFY_HIST_BUCKETS]);
    fprintf(f, "blockvault_verify_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
               "blockvault_verify_duration_seconds_sum %g\n"
               "blockvault_verify_duration_seconds_count %" PRIu64 "\n",
            cum, (double)atomic_load(&app->verify_us) / 1e6,
            (uint64_t)atomic_load(&app->verify_count));
}
