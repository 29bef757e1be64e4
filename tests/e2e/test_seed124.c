/*
 * QEMU iotest 124 (incremental drive-backup; ../shared/seeds/001_2a200e40f6a4a572.txt)
 * ported to the REST contract, test by test.  The seed has 13 tests:
 * TestIncrementalBackup (11: simple, small/large granularity, larger
 * cluster target, incremental transaction, transaction failure and its race
 * variant, bitmap missing / not found / bad granularity, growing before
 * backup) and TestIncrementalBackupBlkdebug (2: incremental failure,
 * incremental pause).  Each runs against a fresh daemon, as each seed test
 * launches a fresh VM.
 *
 * Translation (qemu-semantics.md §1, §9, §10): drive-backup → POST /jobs,
 * transaction → POST /transactions, block-job-resume → POST /jobs/{id}/resume,
 * block-dirty-bitmap-add → POST /drives/{id}/bitmaps, block_resize →
 * POST /drives/{id}/resize, HMP qemu-io → POST /drives/{id}/io, blockdev-add
 * over blkdebug → POST /drives with "blkdebug", query-block bitmaps →
 * GET /drives/{id}/bitmaps/{name}, qemu-img create/rebase (while the VM
 * runs) → POST /images, /images/rebase; events come from the long poll and
 * are consumed as python/qemu consumes QMP events (jobs_util.h).  Images
 * made before the VM launches are made as the seed makes them, with
 * qemu-img and qemu-io on the files (the order matters for the blkdebug
 * state machine: the pattern must not be written through the filter).
 * check_backups compares with POST /images/compare while the daemon runs,
 * then, after the shutdown, with `qemu-img compare` on the files.
 *
 * Beyond the seed's own assertions the port checks the numbers that
 * qemu-semantics §9 gives for QEMU 7.2 (bitmap counts before and after each
 * job, job lengths, bitmaps after a failed transaction), each job's event
 * sequence, the exact data of every event, and the contract's promises the
 * seed relies on (no job live once BLOCK_JOB_COMPLETED is read, a refused
 * job leaves no file).  Checks are soft (jobs_util.h): one run lists every
 * mismatch, and the test fails at its end.
 *
 * Needs qemu-img and qemu-io (exit 77 without them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "jobs_util.h"

#define FMT      "qcow2"
#define SIZE_64M 67108864LL
#define SIZE_65M 68157440LL
#define WAIT_S   30.0            /* deadline of one wait for an event */
#define IOERR    "Input/output error"

#define MAX_BACKUPS 8

/* blkdebug as the seed's blockdev-add sets it up (qemu-semantics §7.4). */
#define BLKDEBUG                                                                        \
    "{\"set_state\":[{\"event\":\"flush_to_disk\",\"state\":1,\"new_state\":2}],"     \
    "\"inject_error\":[{\"event\":\"read_aio\",\"errno\":5,\"state\":2,"              \
    "\"immediately\":false,\"once\":true}]}"

/* write patterns: {pattern, offset, length}, as the seed's tuples */
struct pattern {
    const char *pat, *off, *len;
};
static const struct pattern DEFAULT_PATTERN[] = {
    { "0x41", "0", "512" }, { "0xd5", "1M", "32k" }, { "0xdc", "32M", "124k" }, { NULL, NULL, NULL }
};
static const struct pattern DRIVE1_PATTERN[] = {
    { "0x14", "0", "512" }, { "0x5d", "1M", "32k" }, { "0xcd", "32M", "124k" }, { NULL, NULL, NULL }
};
static const struct pattern P1[] = {
    { "0xab", "0", "512" }, { "0xfe", "16M", "256k" }, { "0x64", "32736k", "64k" }, { NULL, NULL, NULL }
};
static const struct pattern P2[] = {
    { "0x9a", "0", "512" }, { "0x55", "8M", "352k" }, { "0x78", "15872k", "1M" }, { NULL, NULL, NULL }
};
static const struct pattern P1_DRIVE1[] = {
    { "0xba", "0", "512" }, { "0xef", "16M", "256k" }, { "0x46", "32736k", "64k" }, { NULL, NULL, NULL }
};

/* The seed's add_node dictionary. */
struct drive {
    char id[16];
    char file[64];       /* relative to <data>/images */
    char backup[64];     /* the anchor: <id>.full.backup.qcow2 */
    long long size;
};

/* The seed's Bitmap class. */
struct bitmap {
    struct drive *drive;
    char name[32];
    int num;
    int nbackups;
    char inc[MAX_BACKUPS][96];
    char ref[MAX_BACKUPS][96];
};

static struct {
    struct bvh h;
    struct ju_events ev;
    bool running;
    struct drive drives[2];
    int ndrives;
    struct bitmap bitmaps[4];
    int nbitmaps;
} T;

/* --- Bitmap --- */

static const char *last_inc(const struct bitmap *bm)
{
    return bm->nbackups ? bm->inc[bm->nbackups - 1] : bm->drive->backup;
}

static const char *last_ref(const struct bitmap *bm)
{
    /* base_target() has no reference: the seed's (backup, None) */
    return bm->nbackups ? bm->ref[bm->nbackups - 1] : NULL;
}

static const char *new_target(struct bitmap *bm)
{
    int num = bm->num++;
    assert_true(bm->nbackups < MAX_BACKUPS);
    snprintf(bm->inc[bm->nbackups], sizeof(bm->inc[0]), "%s.%s.inc%d.%s", bm->drive->id,
             bm->name, num, FMT);
    snprintf(bm->ref[bm->nbackups], sizeof(bm->ref[0]), "%s.%s.ref%d.%s", bm->drive->id,
             bm->name, num, FMT);
    return bm->inc[bm->nbackups++];
}

/* DELETE /images/{file} for the failed target (its reference was never made). */
static void del_target(struct bitmap *bm)
{
    assert_true(bm->nbackups > 0);
    const char *inc = bm->inc[bm->nbackups - 1];
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/images/%s", inc);
    struct bvh_resp r;
    assert_int_equal(ju_call(&T.h, &r, "DELETE", path, NULL), 0);
    ju_check(r.status == 204, "DELETE %s (a failed job's target, job over): expected 204, got "
             "%ld %s", path, r.status, r.body ? r.body : "");
    if (r.status != 204) {
        /* the seed's try_remove(): take the file away so the scenario goes on */
        char file[400];
        snprintf(file, sizeof(file), "%s/%s", T.h.images, inc);
        unlink(file);
    }
    bvh_resp_free(&r);
    bm->nbackups--;
    bm->num--;
}

/* --- setup --- */

static struct drive *add_node(const char *id)
{
    assert_true(T.ndrives < 2);
    struct drive *d = &T.drives[T.ndrives++];
    snprintf(d->id, sizeof(d->id), "%s", id);
    snprintf(d->file, sizeof(d->file), "%s.%s", id, FMT);
    snprintf(d->backup, sizeof(d->backup), "%s.full.backup.%s", id, FMT);
    d->size = SIZE_64M;
    return d;
}

/* qemu-img create before launch, as the seed's img_create. */
static void img_create_offline(const char *file)
{
    int rc = bvh_sh("qemu-img create -q -f %s '%s/%s' 64M", FMT, T.h.images, file);
    assert_int_equal(rc, 0);
}

/* io_write_patterns: one qemu-io per pattern on the file. */
static void io_write_patterns_offline(const char *file, const struct pattern *p)
{
    for (; p->pat; p++) {
        int rc = bvh_sh("qemu-io -f %s -c 'write -P%s %s %s' '%s/%s' >/dev/null", FMT, p->pat,
                        p->off, p->len, T.h.images, file);
        assert_int_equal(rc, 0);
    }
}

/* add_drive + launch, or blockdev-add over blkdebug (blkdebug != NULL). */
static void open_drive(const struct drive *d, const char *blkdebug)
{
    cJSON *j = bvh_json(&T.h, "POST", 201, "/api/v1/drives",
                        "{\"id\":\"%s\",\"format\":\"%s\",\"file\":\"%s\",\"existing\":true%s%s}",
                        d->id, FMT, d->file, blkdebug ? ",\"blkdebug\":" : "",
                        blkdebug ? blkdebug : "");
    ju_check_num_member("opened drive", j, "size", d->size);
    cJSON_Delete(j);
}

static int setup_common(void)
{
    memset(&T, 0, sizeof(T));
    ju_reset();
    if (bvh_start(&T.h, NULL) != 0)
        return -1;
    T.running = true;
    ju_events_init(&T.ev, &T.h, 0);
    struct drive *d0 = add_node("drive0");
    img_create_offline(d0->file);
    io_write_patterns_offline(d0->file, DEFAULT_PATTERN);
    return 0;
}

/* TestIncrementalBackup.setUp: drive0 opened at launch. */
static int setup_base(void **state)
{
    (void)state;
    if (setup_common() != 0)
        return -1;
    open_drive(&T.drives[0], NULL);
    return 0;
}

/* TestIncrementalBackupBlkdebug.setUp: the test opens drive0 itself. */
static int setup_blkdebug(void **state)
{
    (void)state;
    return setup_common();
}

/* vm.shutdown(): stop the daemon, keep the files for qemu-img. */
static void vm_shutdown(void)
{
    if (!T.running)
        return;
    T.h.keep_dir = true;
    int rc = bvh_stop(&T.h);
    T.running = false;
    ju_check_int("daemon exit status after SIGTERM", 0, rc);
}

static int teardown(void **state)
{
    (void)state;
    bool keep = getenv("BV_E2E_KEEP") != NULL;
    if (T.running) {
        T.h.keep_dir = keep;
        bvh_stop(&T.h);
        T.running = false;
    } else if (!keep && T.h.dir[0]) {
        bvh_sh("rm -rf '%s' '%s.log'", T.h.dir, T.h.dir);
    }
    if (keep)
        fprintf(stderr, "kept %s\n", T.h.dir);
    ju_events_free(&T.ev);
    return 0;
}

/* --- REST helpers --- */

static long long event_head(void)
{
    cJSON *j = bvh_json(&T.h, "GET", 200, "/api/v1/events?after=latest", NULL);
    long long n = (long long)bvh_num(j, "next");
    cJSON_Delete(j);
    return n;
}

/* bvh_json with a cJSON body (consumed), freed before the call may fail the test. */
static cJSON *call_json(const char *method, long expect, const char *path, cJSON *body)
{
    char buf[4096];
    char *s = cJSON_PrintUnformatted(body);
    assert_non_null(s);
    snprintf(buf, sizeof(buf), "%s", s);
    free(s);
    cJSON_Delete(body);
    return bvh_json(&T.h, method, expect, path, "%s", buf);
}

/* hmp_io_writes: the writes, then a flush (flush=false: the seed's lone hmp_qemu_io). */
static void io_commands(const char *drive, const char *const *cmds, int n)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(cmds[i]));
    cJSON *body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "commands", arr);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/io", drive);
    cJSON *j = call_json("POST", 200, path, body);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
    ju_check_int("io results", n, cJSON_GetArraySize(res));
    const cJSON *it;
    cJSON_ArrayForEach(it, res) {
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(it, "ok");
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(it, "error");
        ju_check(cJSON_IsTrue(ok), "io on %s: '%s' failed: %s", drive,
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "command")),
                 cJSON_IsString(err) ? err->valuestring : "?");
    }
    cJSON_Delete(j);
}

static void hmp_io_writes(const char *drive, const struct pattern *p)
{
    char buf[8][64];
    const char *cmds[8];
    int n = 0;
    for (; p->pat; p++, n++) {
        snprintf(buf[n], sizeof(buf[n]), "write -P%s %s %s", p->pat, p->off, p->len);
        cmds[n] = buf[n];
    }
    cmds[n++] = "flush";
    io_commands(drive, cmds, n);
}

static struct bitmap *add_bitmap(const char *name, struct drive *d, long long granularity)
{
    assert_true(T.nbitmaps < 4);
    struct bitmap *bm = &T.bitmaps[T.nbitmaps++];
    memset(bm, 0, sizeof(*bm));
    bm->drive = d;
    snprintf(bm->name, sizeof(bm->name), "%s", name);
    char path[128], gran[48] = "";
    snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps", d->id);
    if (granularity)
        snprintf(gran, sizeof(gran), ",\"granularity\":%lld", granularity);
    cJSON *j = bvh_json(&T.h, "POST", 201, path, "{\"name\":\"%s\"%s}", name, gran);
    cJSON_Delete(j);
    return bm;
}

static cJSON *get_bitmap(const char *drive, const char *name)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/drives/%s/bitmaps/%s", drive, name);
    return bvh_json(&T.h, "GET", 200, path, NULL);
}

static void check_count(const struct bitmap *bm, long long want, const char *when)
{
    cJSON *j = get_bitmap(bm->drive->id, bm->name);
    char what[160];
    snprintf(what, sizeof(what), "%s/%s %s", bm->drive->id, bm->name, when);
    ju_check_num_member(what, j, "count", want);
    cJSON_Delete(j);
}

/* vm.check_bitmap_status: the given fields (NULL / -1: not given). */
struct bm_status {
    const char *name;
    long long count, granularity;
    const char *status;
    int busy, recording, persistent;
};

static void check_bool_member(const char *what, const cJSON *o, const char *key, int want)
{
    if (want < 0)
        return;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    ju_check(cJSON_IsBool(it) && cJSON_IsTrue(it) == (want != 0),
             "%s: '%s' expected %s, got %s", what, key, want ? "true" : "false",
             !cJSON_IsBool(it) ? "(missing)" : cJSON_IsTrue(it) ? "true" : "false");
}

static void check_bitmap_status(const char *drive, const char *name, const struct bm_status *s,
                                const char *when)
{
    cJSON *j = get_bitmap(drive, name);
    char what[160];
    snprintf(what, sizeof(what), "bitmap %s/%s %s", drive, name, when);
    if (s->name)
        ju_check_str_member(what, j, "name", s->name);
    ju_check_num_member(what, j, "count", s->count);
    ju_check_num_member(what, j, "granularity", s->granularity);
    if (s->status)
        ju_check_str_member(what, j, "status", s->status);
    check_bool_member(what, j, "busy", s->busy);
    check_bool_member(what, j, "recording", s->recording);
    check_bool_member(what, j, "persistent", s->persistent);
    cJSON_Delete(j);
}

/* qemu-img create while the VM runs → POST /images. */
static void img_create(const char *file, const char *size, long long cluster_size,
                       const char *parent)
{
    char extra[256] = "";
    size_t n = 0;
    if (cluster_size)
        n += (size_t)snprintf(extra + n, sizeof(extra) - n, ",\"cluster_size\":%lld",
                              cluster_size);
    if (parent)
        snprintf(extra + n, sizeof(extra) - n, ",\"backing\":\"%s\",\"backing_format\":\"%s\"",
                 parent, FMT);
    cJSON *j = bvh_json(&T.h, "POST", 201, "/api/v1/images",
                        "{\"file\":\"%s\",\"format\":\"%s\",\"size\":\"%s\"%s}", file, FMT, size,
                        extra);
    cJSON_Delete(j);
}

static const char *prepare_backup(struct bitmap *bm, const char *parent, const char *size)
{
    if (!parent)
        parent = last_inc(bm);
    const char *target = new_target(bm);
    img_create(target, size ? size : "64M", 0, parent);
    return target;
}

static void assert_no_active_block_jobs(const char *when)
{
    cJSON *j = bvh_json(&T.h, "GET", 200, "/api/v1/jobs", NULL);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    char *s = cJSON_PrintUnformatted(jobs);
    ju_check(cJSON_IsArray(jobs) && cJSON_GetArraySize(jobs) == 0,
             "no active jobs %s: GET /jobs gave %s", when, s ? s : "(no jobs array)");
    free(s);
    cJSON_Delete(j);
}

/* assertFalse(vm.get_qmp_events(wait=False)) */
static void assert_no_events(const char *when)
{
    cJSON *left = ju_events_drain(&T.ev);
    char *s = ju_events_text(left);
    ju_check(cJSON_GetArraySize(left) == 0, "no other events %s: got %s", when, s);
    free(s);
    cJSON_Delete(left);
}

/* --- jobs --- */

struct backup_args {
    const char *job_id;  /* NULL: not given (the id is then the device) */
    const char *device, *sync, *bitmap, *target, *mode, *on_source_error;
};

static cJSON *backup_json(const struct backup_args *a, bool with_type)
{
    cJSON *o = cJSON_CreateObject();
    if (with_type)
        cJSON_AddStringToObject(o, "type", "backup");
    if (a->job_id)
        cJSON_AddStringToObject(o, "job_id", a->job_id);
    cJSON_AddStringToObject(o, "device", a->device);
    if (a->sync)
        cJSON_AddStringToObject(o, "sync", a->sync);
    if (a->bitmap)
        cJSON_AddStringToObject(o, "bitmap", a->bitmap);
    cJSON_AddStringToObject(o, "format", FMT);
    cJSON_AddStringToObject(o, "target", a->target);
    if (a->mode)
        cJSON_AddStringToObject(o, "mode", a->mode);
    if (a->on_source_error)
        cJSON_AddStringToObject(o, "on_source_error", a->on_source_error);
    return o;
}

static void post_backup(const struct backup_args *a)
{
    cJSON *j = call_json("POST", 201, "/api/v1/jobs", backup_json(a, true));
    ju_check_str_member("POST /jobs reply", j, "id", a->job_id ? a->job_id : a->device);
    ju_check_str_member("POST /jobs reply", j, "type", "backup");
    cJSON_Delete(j);
}

/* ignore_job_status_change_events: JOB_STATUS_CHANGE of any job up to the first null. */
static void ignore_job_status_change_events(void)
{
    for (;;) {
        cJSON *e = ju_event_wait(&T.ev, "JOB_STATUS_CHANGE", NULL, NULL, WAIT_S);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(e, "data"),
                                                           "status");
        bool null = cJSON_IsString(st) && strcmp(st->valuestring, "null") == 0;
        cJSON_Delete(e);
        if (null)
            break;
    }
}

/* The common checks of BLOCK_JOB_COMPLETED / CANCELLED data. */
static void check_end_data(const char *what, const cJSON *d, const char *job, long long want_len)
{
    ju_check_str_member(what, d, "type", "backup");
    ju_check_str_member(what, d, "device", job);
    ju_check_num_member(what, d, "speed", 0);
    if (want_len >= 0)
        ju_check_num_member(what, d, "len", want_len);
}

/* wait_qmp_backup: true if the job succeeded (offset == len), false if it
 * failed with `error`. */
static bool wait_qmp_backup(const char *job, const char *error, long long want_len,
                            const char *what)
{
    cJSON *e = ju_event_wait(&T.ev, "BLOCK_JOB_COMPLETED", "device", job, WAIT_S);
    ignore_job_status_change_events();
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
    char w[256];
    snprintf(w, sizeof(w), "%s: BLOCK_JOB_COMPLETED", what);
    check_end_data(w, d, job, want_len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(d, "error");
    long long len = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(d, "len"));
    long long off = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(d, "offset"));
    bool ok = err == NULL || cJSON_IsNull(err);   /* a null error is flagged by the shape check */
    if (ok) {
        ju_check_int(w, len, off);   /* assert_qmp(event, 'data/offset', len) */
    } else {
        ju_check_str_member(w, d, "error", error);
        ju_check(off < len, "%s: a failed job's offset %lld should be below len %lld", w, off, len);
    }
    cJSON_Delete(e);
    return ok;
}

static const char *const TRACE_OK[] = {
    "created running waiting pending COMPLETED concluded null", NULL
};
static const char *const TRACE_FAILED[] = {
    "created running ERROR aborting COMPLETED concluded null", NULL
};
static const char *const TRACE_CANCELLED[] = {
    "created running waiting aborting CANCELLED concluded null",
    "created running aborting CANCELLED concluded null",
    "created aborting CANCELLED concluded null", NULL
};

/* do_qmp_backup, plus the job's event sequence and length. */
static bool do_qmp_backup(const struct backup_args *a, long long want_len)
{
    const char *job = a->job_id ? a->job_id : a->device;
    char what[256];
    snprintf(what, sizeof(what), "%s backup of %s to %s", a->sync, a->device, a->target);
    long long start = event_head();
    post_backup(a);
    bool ok = wait_qmp_backup(job, IOERR, want_len, what);
    ju_check_trace(&T.ev, job, start, ok ? TRACE_OK : TRACE_FAILED);
    return ok;
}

static const char *create_anchor_backup(struct drive *d)
{
    struct backup_args a = { .job_id = d->id, .device = d->id, .sync = "full",
                             .target = d->backup };
    ju_check(do_qmp_backup(&a, d->size), "anchor backup of %s should succeed", d->id);
    return d->backup;
}

static void make_reference_backup(struct bitmap *bm)
{
    const char *ref = last_ref(bm);
    assert_non_null(ref);
    struct backup_args a = { .job_id = bm->drive->id, .device = bm->drive->id, .sync = "full",
                             .target = ref };
    ju_check(do_qmp_backup(&a, bm->drive->size), "reference backup %s should succeed", ref);
}

/* create_incremental; want_len is the job's len (qemu-semantics §9). */
static bool create_incremental(struct bitmap *bm, const char *parent, bool validate,
                               const char *target, long long want_len)
{
    if (!target)
        target = prepare_backup(bm, parent, NULL);
    struct backup_args a = { .job_id = bm->drive->id, .device = bm->drive->id,
                             .sync = "incremental", .bitmap = bm->name, .target = target,
                             .mode = "existing" };
    bool res = do_qmp_backup(&a, want_len);
    if (!res) {
        del_target(bm);
        ju_check(!validate, "incremental backup to %s failed", target);
    } else {
        make_reference_backup(bm);
    }
    return res;
}

/* --- comparing images --- */

static void compare_rest(const char *a, const char *b)
{
    cJSON *j = bvh_json(&T.h, "POST", 200, "/api/v1/images/compare",
                        "{\"a\":{\"file\":\"%s\"},\"b\":{\"file\":\"%s\"}}", a, b);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "identical");
    const cJSON *fd = cJSON_GetObjectItemCaseSensitive(j, "first_difference_offset");
    ju_check(cJSON_IsTrue(id) && cJSON_IsNull(fd),
             "POST /images/compare %s %s: expected identical, got identical=%s "
             "first_difference_offset=%.0f", a, b, cJSON_IsTrue(id) ? "true" : "false",
             cJSON_IsNumber(fd) ? fd->valuedouble : -1.0);
    cJSON_Delete(j);
}

static void compare_qemu(const char *a, const char *b)
{
    int rc = bvh_sh("cd '%s' && qemu-img compare -q -f %s -F %s '%s' '%s'", T.h.images, FMT,
                    FMT, a, b);
    if (rc != 0)
        bvh_sh("cd '%s' && qemu-img compare -f %s -F %s '%s' '%s' >&2", T.h.images, FMT, FMT,
               a, b);
    ju_check(rc == 0, "qemu-img compare %s %s: expected identical (0), exit status %d", a, b,
             rc);
}

static void for_each_backup_pair(void (*cmp)(const char *, const char *))
{
    for (int i = 0; i < T.nbitmaps; i++) {
        const struct bitmap *bm = &T.bitmaps[i];
        for (int k = 0; k < bm->nbackups; k++)
            cmp(bm->inc[k], bm->ref[k]);
        cmp(last_inc(bm), bm->drive->file);
    }
}

/* vm.shutdown(); check_backups() — with both comparers. */
static void shutdown_and_check_backups(void)
{
    for_each_backup_pair(compare_rest);
    vm_shutdown();
    for_each_backup_pair(compare_qemu);
}

/* =========================== TestIncrementalBackup =========================== */

/* Counts before the 2nd and 3rd incrementals and those jobs' lens (§3.3, §9). */
struct simple_numbers {
    long long granularity;
    long long count_p1, count_p2;
    long long len_p1, len_p2;
};

static void do_incremental_simple(const struct simple_numbers *n)
{
    struct drive *d0 = &T.drives[0];
    create_anchor_backup(d0);
    struct bitmap *bm = add_bitmap("bitmap0", d0, n->granularity);

    /* Sanity: a "hollow" incremental (len 0) */
    check_count(bm, 0, "before the hollow incremental");
    create_incremental(bm, NULL, true, NULL, 0);
    check_count(bm, 0, "after the hollow incremental");
    /* one complete overwrite, one new segment, one partial overlap */
    hmp_io_writes(d0->id, P1);
    check_count(bm, n->count_p1, "after P1");
    create_incremental(bm, NULL, true, NULL, n->len_p1);
    check_count(bm, 0, "after the second incremental");
    hmp_io_writes(d0->id, P2);
    check_count(bm, n->count_p2, "after P2");
    create_incremental(bm, NULL, true, NULL, n->len_p2);
    check_count(bm, 0, "after the third incremental");
    shutdown_and_check_backups();
}

static void test_incremental_simple(void **state)
{
    (void)state;
    static const struct simple_numbers n = { 0, 458752, 1507328, 458752, 1507328 };
    do_incremental_simple(&n);
    ju_end();
}

static void test_small_granularity(void **state)
{
    (void)state;
    static const struct simple_numbers n = { 32768, 360448, 1441792, 458752, 1507328 };
    do_incremental_simple(&n);
    ju_end();
}

static void test_large_granularity(void **state)
{
    (void)state;
    static const struct simple_numbers n = { 131072, 655360, 1572864, 655360, 1572864 };
    do_incremental_simple(&n);
    ju_end();
}

static void test_larger_cluster_target(void **state)
{
    (void)state;
    struct drive *d0 = &T.drives[0];

    /* a cluster_size=128k full backup / "anchor", mode existing, no job id */
    img_create(d0->backup, "64M", 131072, NULL);
    struct backup_args full = { .device = d0->id, .sync = "full", .target = d0->backup,
                                .mode = "existing" };
    ju_check(do_qmp_backup(&full, SIZE_64M), "full backup to a 128k-cluster target");

    /* overwrite [32736k, 32800k): dirties 32M-64K and 32M, not 32M+64K */
    struct bitmap *bm = add_bitmap("bitmap0", d0, 0);
    hmp_io_writes(d0->id, P1);
    static const struct bm_status st = { .name = "bitmap0", .count = 458752,
                                         .granularity = 65536, .status = "active",
                                         .busy = -1, .recording = -1, .persistent = 0 };
    check_bitmap_status(d0->id, "bitmap0", &st, "after P1");

    /* a cluster_size=128k target without a backing file */
    const char *target = new_target(bm);
    img_create(target, "64M", 131072, NULL);
    struct backup_args inc = { .device = d0->id, .sync = "incremental", .bitmap = bm->name,
                               .target = target, .mode = "existing" };
    ju_check(do_qmp_backup(&inc, 655360), "incremental to a 128k-cluster target");
    make_reference_backup(bm);

    /* add the backing file (qemu-img rebase -u), then compare */
    cJSON *j = bvh_json(&T.h, "POST", 200, "/api/v1/images/rebase",
                        "{\"file\":\"%s\",\"backing\":\"%s\",\"backing_format\":\"%s\","
                        "\"unsafe\":true}", target, d0->backup, FMT);
    cJSON_Delete(j);
    shutdown_and_check_backups();
    ju_end();
}

/* wait_until_completed: every event up to BLOCK_JOB_COMPLETED is taken (the
 * seed's get_qmp_events loop; JOB_STATUS_CHANGE must be this job's, others
 * are dropped); the job must have succeeded with offset == len, and no job
 * may be live once the event is read. */
static void wait_until_completed(const char *job, long long want_len)
{
    for (;;) {
        cJSON *e = ju_event_wait(&T.ev, NULL, NULL, NULL, WAIT_S);
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(e, "event"));
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
        bool done = name && strcmp(name, "BLOCK_JOB_COMPLETED") == 0;
        if (done) {
            check_end_data("wait_until_completed: BLOCK_JOB_COMPLETED", d, job, want_len);
            ju_check_str_member("wait_until_completed: BLOCK_JOB_COMPLETED", d, "error", NULL);
            long long len = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(d, "len"));
            ju_check_num_member("wait_until_completed: BLOCK_JOB_COMPLETED", d, "offset", len);
            assert_no_active_block_jobs("right after BLOCK_JOB_COMPLETED was read");
        } else if (name && strcmp(name, "JOB_STATUS_CHANGE") == 0) {
            ju_check_str_member("wait_until_completed: JOB_STATUS_CHANGE", d, "id", job);
        }
        cJSON_Delete(e);
        if (done)
            break;
    }
    /* not in the seed: take the job's concluded/null too, for its sequence */
    ignore_job_status_change_events();
}

static void test_incremental_transaction(void **state)
{
    (void)state;
    struct drive *d0 = &T.drives[0];
    struct bitmap *bm0 = add_bitmap("bitmap0", d0, 0);
    hmp_io_writes(d0->id, P1);
    struct bitmap *bm1 = add_bitmap("bitmap1", d0, 0);
    check_count(bm0, 458752, "after P1");
    check_count(bm1, 0, "(added after P1)");

    long long start = event_head();
    cJSON *j = bvh_json(&T.h, "POST", 200, "/api/v1/transactions",
                        "{\"actions\":["
                        "{\"type\":\"block-dirty-bitmap-clear\",\"data\":{\"node\":\"%s\",\"name\":\"%s\"}},"
                        "{\"type\":\"block-dirty-bitmap-clear\",\"data\":{\"node\":\"%s\",\"name\":\"%s\"}},"
                        "{\"type\":\"drive-backup\",\"data\":{\"job_id\":\"%s\",\"device\":\"%s\","
                        "\"target\":\"%s\",\"sync\":\"full\",\"format\":\"%s\"}}]}",
                        d0->id, bm0->name, d0->id, bm1->name, d0->id, d0->id, d0->backup, FMT);
    ju_check_json("transaction reply", "{\"jobs\":[\"drive0\"]}", j);
    cJSON_Delete(j);
    check_count(bm0, 0, "right after the transaction");
    check_count(bm1, 0, "right after the transaction");
    wait_until_completed(d0->id, SIZE_64M);
    ju_check_trace(&T.ev, d0->id, start, TRACE_OK);

    hmp_io_writes(d0->id, P2);
    /* both bitmaps are in sync */
    check_count(bm0, 1507328, "after P2");
    check_count(bm1, 1507328, "after P2");
    create_incremental(bm0, NULL, true, NULL, 1507328);
    create_incremental(bm1, NULL, true, NULL, 1507328);
    shutdown_and_check_backups();
    ju_end();
}

static void run_grouped_transaction(const struct drive *d0, const struct bitmap *bm0,
                                    const char *t0, const struct drive *d1,
                                    const struct bitmap *bm1, const char *t1)
{
    struct backup_args a0 = { .job_id = d0->id, .device = d0->id, .sync = "incremental",
                              .bitmap = bm0->name, .target = t0, .mode = "existing" };
    struct backup_args a1 = { .job_id = d1->id, .device = d1->id, .sync = "incremental",
                              .bitmap = bm1->name, .target = t1, .mode = "existing" };
    cJSON *body = cJSON_CreateObject();
    cJSON *actions = cJSON_AddArrayToObject(body, "actions");
    const struct backup_args *args[] = { &a0, &a1 };
    for (int i = 0; i < 2; i++) {
        cJSON *act = cJSON_CreateObject();
        cJSON_AddStringToObject(act, "type", "drive-backup");
        cJSON_AddItemToObject(act, "data", backup_json(args[i], false));
        cJSON_AddItemToArray(actions, act);
    }
    cJSON_AddStringToObject(cJSON_AddObjectToObject(body, "properties"), "completion_mode",
                            "grouped");
    cJSON *j = call_json("POST", 200, "/api/v1/transactions", body);
    ju_check_json("grouped transaction reply", "{\"jobs\":[\"drive0\",\"drive1\"]}", j);
    cJSON_Delete(j);
}

static void do_transaction_failure_test(bool race)
{
    /* a second drive with its own pattern, opened through blkdebug */
    struct drive *d1 = add_node("drive1");
    img_create_offline(d1->file);
    io_write_patterns_offline(d1->file, DRIVE1_PATTERN);
    open_drive(d1, BLKDEBUG);

    /* bitmaps and full backups for both drives */
    struct drive *d0 = &T.drives[0];
    struct bitmap *bm0 = add_bitmap("bitmap0", d0, 0);
    struct bitmap *bm1 = add_bitmap("bitmap0", d1, 0);
    create_anchor_backup(d0);
    create_anchor_backup(d1);
    assert_no_active_block_jobs("after the anchor backups");
    assert_no_events("after the anchor backups");

    if (!race)
        hmp_io_writes(d0->id, P1);
    hmp_io_writes(d1->id, P1_DRIVE1);
    check_count(bm0, race ? 0 : 458752, "before the transaction");
    check_count(bm1, 458752, "before the transaction");

    const char *t0 = prepare_backup(bm0, NULL, NULL);
    const char *t1 = prepare_backup(bm1, NULL, NULL);

    /* drive1's backup fails, so drive0's is cancelled (race: although it has nothing to do) */
    long long start = event_head();
    run_grouped_transaction(d0, bm0, t0, d1, bm1, t1);
    cJSON *c = ju_event_wait(&T.ev, "BLOCK_JOB_CANCELLED", "device", d0->id, WAIT_S);
    ignore_job_status_change_events();
    const cJSON *cd = cJSON_GetObjectItemCaseSensitive(c, "data");
    check_end_data("grouped: drive0 BLOCK_JOB_CANCELLED", cd, d0->id, race ? 0 : 458752);
    long long clen = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(cd, "len"));
    long long coff = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(cd, "offset"));
    if (race)
        ju_check_int("grouped (race): drive0 BLOCK_JOB_CANCELLED offset", 0, coff);
    ju_check(coff <= clen && coff % 65536 == 0,
             "grouped: drive0 BLOCK_JOB_CANCELLED offset %lld: should be a multiple of 64 KiB "
             "and at most len %lld", coff, clen);
    cJSON_Delete(c);
    ju_check(!wait_qmp_backup(d1->id, IOERR, 458752, "grouped: drive1 incremental"),
             "grouped: drive1's incremental should fail");
    cJSON *err = ju_event_wait(&T.ev, "BLOCK_JOB_ERROR", NULL, NULL, WAIT_S);
    ju_check_json("grouped: BLOCK_JOB_ERROR data",
                  "{\"device\":\"drive1\",\"action\":\"report\",\"operation\":\"read\"}",
                  cJSON_GetObjectItem(err, "data"));
    cJSON_Delete(err);
    assert_no_events("after the failed transaction");
    assert_no_active_block_jobs("after the failed transaction");
    ju_check_trace(&T.ev, d0->id, start, TRACE_CANCELLED);
    ju_check_trace(&T.ev, d1->id, start, TRACE_FAILED);
    check_count(bm0, race ? 0 : 458752, "after the failed transaction");
    check_count(bm1, 458752, "after the failed transaction");

    /* delete drive0's successful target and forget the unsuccessful one */
    del_target(bm0);
    del_target(bm1);
    if (race) {
        vm_shutdown();
        return;
    }

    /* the exact same transaction again: both succeed */
    t0 = prepare_backup(bm0, NULL, NULL);
    t1 = prepare_backup(bm1, NULL, NULL);
    start = event_head();
    run_grouped_transaction(d0, bm0, t0, d1, bm1, t1);
    ju_check(wait_qmp_backup(d0->id, IOERR, 458752, "grouped again: drive0 incremental"),
             "grouped again: drive0's incremental should succeed");
    ju_check(wait_qmp_backup(d1->id, IOERR, 458752, "grouped again: drive1 incremental"),
             "grouped again: drive1's incremental should succeed");
    ju_check_trace(&T.ev, d0->id, start, TRACE_OK);
    ju_check_trace(&T.ev, d1->id, start, TRACE_OK);
    check_count(bm0, 0, "after the second transaction");
    check_count(bm1, 0, "after the second transaction");
    make_reference_backup(bm0);
    make_reference_backup(bm1);
    assert_no_events("after the second transaction and the references");
    assert_no_active_block_jobs("after the second transaction and the references");
    shutdown_and_check_backups();
}

static void test_transaction_failure(void **state)
{
    (void)state;
    do_transaction_failure_test(false);
    ju_end();
}

static void test_transaction_failure_race(void **state)
{
    (void)state;
    do_transaction_failure_test(true);
    ju_end();
}

/* A refused request: status, class and desc exactly. */
static void check_error(const struct bvh_resp *r, const char *what, long status,
                        const char *cls, const char *desc)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    char w[256];
    snprintf(w, sizeof(w), "%s: HTTP status", what);
    ju_check_int(w, status, r->status);
    snprintf(w, sizeof(w), "%s: error", what);
    if (!cJSON_IsObject(e)) {
        ju_check(false, "%s: no error envelope in %s", what, r->body ? r->body : "(empty)");
        return;
    }
    static const char *const keys[] = { "class", "desc", NULL };
    ju_check_keys(w, e, keys, NULL);
    ju_check_str_member(w, e, "class", cls);
    ju_check_str_member(w, e, "desc", desc);
}

static void refused_backup(const char *bitmap_member, const char *desc)
{
    assert_no_active_block_jobs("before the backup");
    struct bvh_resp r;
    assert_int_equal(ju_call(&T.h, &r, "POST", "/api/v1/jobs",
                             "{\"type\":\"backup\",\"device\":\"drive0\",\"sync\":\"incremental\""
                             "%s,\"format\":\"%s\",\"target\":\"err.%s\"}",
                             bitmap_member, FMT, FMT), 0);
    check_error(&r, "drive-backup sync=incremental", 400, "GenericError", desc);
    bvh_resp_free(&r);
    char path[400];
    snprintf(path, sizeof(path), "%s/err.%s", T.h.images, FMT);
    ju_check(access(path, F_OK) != 0, "a refused backup left its target err.%s behind", FMT);
    assert_no_active_block_jobs("after the refused backup");
    assert_no_events("after the refused backup");
}

static void test_sync_dirty_bitmap_missing(void **state)
{
    (void)state;
    refused_backup("", "must provide a valid bitmap name for 'incremental' sync mode");
    ju_end();
}

static void test_sync_dirty_bitmap_not_found(void **state)
{
    (void)state;
    refused_backup(",\"bitmap\":\"unknown\"", "Bitmap 'unknown' could not be found");
    ju_end();
}

static void test_sync_dirty_bitmap_bad_granularity(void **state)
{
    (void)state;
    assert_no_active_block_jobs("before the bitmap");
    struct bvh_resp r;
    assert_int_equal(ju_call(&T.h, &r, "POST", "/api/v1/drives/drive0/bitmaps",
                             "{\"name\":\"bitmap0\",\"granularity\":64000}"), 0);
    check_error(&r, "block-dirty-bitmap-add granularity=64000", 400, "GenericError",
                "Granularity must be power of 2 and at least 512");
    bvh_resp_free(&r);
    cJSON *j = bvh_json(&T.h, "GET", 200, "/api/v1/drives/drive0/bitmaps", NULL);
    ju_check_int("bitmaps after the refused add", 0,
                 cJSON_GetArraySize(cJSON_GetObjectItem(j, "bitmaps")));
    cJSON_Delete(j);
    ju_end();
}

static void test_growing_before_backup(void **state)
{
    (void)state;
    struct drive *d0 = &T.drives[0];
    assert_no_active_block_jobs("at the start");
    create_anchor_backup(d0);
    struct bitmap *bm = add_bitmap("bitmap0", d0, 0);

    cJSON *j = bvh_json(&T.h, "POST", 200, "/api/v1/drives/drive0/resize", "{\"size\":%lld}",
                        SIZE_65M);
    ju_check_num_member("resized drive", j, "size", SIZE_65M);
    cJSON_Delete(j);
    d0->size = SIZE_65M;

    /* dirty the image past the old end */
    const char *cmd = "write 64M 64k";
    io_commands(d0->id, &cmd, 1);
    check_count(bm, 65536, "after writing past the old end");

    const char *target = prepare_backup(bm, NULL, "65M");
    create_incremental(bm, NULL, true, target, 65536);
    shutdown_and_check_backups();
    ju_end();
}

/* ======================= TestIncrementalBackupBlkdebug ======================= */

/* The single BLOCK_JOB_ERROR of a job since `start`, from the log. */
static void check_job_error_event(const char *job, long long start, const char *action)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, T.ev.log) {
        if ((long long)bvh_num(e, "seq") <= start ||
            strcmp(bvh_str(e, "event"), "BLOCK_JOB_ERROR") != 0)
            continue;
        n++;
        char want[160];
        snprintf(want, sizeof(want), "{\"device\":\"%s\",\"action\":\"%s\",\"operation\":\"read\"}",
                 job, action);
        ju_check_json("BLOCK_JOB_ERROR data", want, cJSON_GetObjectItem(e, "data"));
    }
    ju_check_int("BLOCK_JOB_ERROR events of the failed job", 1, n);
}

static void test_incremental_failure(void **state)
{
    (void)state;
    struct drive *d0 = &T.drives[0];
    open_drive(d0, BLKDEBUG);
    create_anchor_backup(d0);
    struct bitmap *bm = add_bitmap("bitmap0", d0, 0);
    /* the VM resumes and the guest writes (the flush moves blkdebug to state 2) */
    hmp_io_writes(d0->id, P1);
    check_count(bm, 458752, "after P1");

    long long start = event_head();
    bool res = create_incremental(bm, NULL, false, NULL, 458752);
    ju_check(!res, "the first incremental should fail (blkdebug read error)");
    check_job_error_event(d0->id, start, "report");
    cJSON *job = bvh_json(&T.h, "GET", 200, "/api/v1/jobs/drive0", NULL);
    ju_check_str_member("GET /jobs/drive0 after the failure", job, "status", "null");
    ju_check_str_member("GET /jobs/drive0 after the failure", job, "error", IOERR);
    cJSON_Delete(job);
    check_count(bm, 458752, "after the failed incremental (reclaimed)");

    hmp_io_writes(d0->id, P2);
    check_count(bm, 1638400, "after P2");
    ju_check(create_incremental(bm, NULL, true, NULL, 1638400),
             "the second incremental should succeed");
    check_count(bm, 0, "after the second incremental");
    shutdown_and_check_backups();
    ju_end();
}

/* The status in job's newest JOB_STATUS_CHANGE fetched so far (NULL: none), and its seq. */
static const char *last_status(const char *job, long long *seq)
{
    const char *st = NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, T.ev.log) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
        if (strcmp(bvh_str(e, "event"), "JOB_STATUS_CHANGE") != 0 ||
            !cJSON_IsString(cJSON_GetObjectItem(d, "id")) ||
            strcmp(cJSON_GetObjectItem(d, "id")->valuestring, job) != 0)
            continue;
        st = cJSON_GetStringValue(cJSON_GetObjectItem(d, "status"));
        *seq = (long long)bvh_num(e, "seq");
    }
    return st;
}

static void test_incremental_pause(void **state)
{
    (void)state;
    struct drive *d0 = &T.drives[0];
    /* blkdebug looks for "flush, read": the flush in hmp_io_writes, the read in the job */
    open_drive(d0, BLKDEBUG);
    create_anchor_backup(d0);
    struct bitmap *bm = add_bitmap("bitmap0", d0, 0);
    hmp_io_writes(d0->id, P1);
    static const struct bm_status before = { .count = 458752, .granularity = 65536,
                                             .status = "active", .busy = 0, .recording = 1,
                                             .persistent = -1 };
    check_bitmap_status(d0->id, bm->name, &before, "before the job");

    const char *target = prepare_backup(bm, last_inc(bm), NULL);
    long long start = event_head();
    struct backup_args a = { .job_id = d0->id, .device = d0->id, .sync = "incremental",
                             .bitmap = bm->name, .target = target, .mode = "existing",
                             .on_source_error = "stop" };
    post_backup(&a);

    /* the error */
    cJSON *e = ju_event_wait(&T.ev, "BLOCK_JOB_ERROR", "device", d0->id, WAIT_S);
    long long err_seq = (long long)bvh_num(e, "seq");
    ju_check_json("BLOCK_JOB_ERROR data",
                  "{\"device\":\"drive0\",\"action\":\"stop\",\"operation\":\"read\"}",
                  cJSON_GetObjectItem(e, "data"));
    cJSON_Delete(e);
    static const struct bm_status frozen = { .count = 458752, .granularity = 65536,
                                             .status = "frozen", .busy = 1, .recording = 1,
                                             .persistent = -1 };
    check_bitmap_status(d0->id, bm->name, &frozen, "while the job is stopped");
    cJSON *list = bvh_json(&T.h, "GET", 200, "/api/v1/drives/drive0/bitmaps", NULL);
    ju_check_int("bitmaps listed while the job holds one (anonymous ones are never listed)", 1,
                 cJSON_GetArraySize(cJSON_GetObjectItem(list, "bitmaps")));
    cJSON_Delete(list);

    /* Not in the seed, which resumes at once: wait for the job to be paused
     * (stop → paused, qemu-semantics §4.8) and look at it. */
    long long paused_seq = 0;
    for (;;) {
        const char *st = last_status(d0->id, &paused_seq);
        if (st && strcmp(st, "paused") == 0)
            break;
        if (st && strcmp(st, "null") == 0)
            fail_msg("the stopped job ended without pausing");
        cJSON_Delete(ju_event_wait(&T.ev, "JOB_STATUS_CHANGE", "id", d0->id, WAIT_S));
    }
    ju_check(paused_seq > err_seq, "JOB_STATUS_CHANGE paused (seq %lld) should come after "
             "BLOCK_JOB_ERROR (seq %lld)", paused_seq, err_seq);
    cJSON *job = bvh_json(&T.h, "GET", 200, "/api/v1/jobs/drive0", NULL);
    ju_check_str_member("GET /jobs/drive0 while stopped", job, "status", "paused");
    check_bool_member("GET /jobs/drive0 while stopped", job, "paused", 1);
    check_bool_member("GET /jobs/drive0 while stopped", job, "busy", 0);
    cJSON_Delete(job);

    /* resume; the incremental completes */
    job = bvh_json(&T.h, "POST", 200, "/api/v1/jobs/drive0/resume", NULL);
    ju_check_str_member("POST /jobs/drive0/resume reply", job, "id", "drive0");
    cJSON_Delete(job);
    ju_check(wait_qmp_backup(d0->id, IOERR, 458752, "resumed incremental"),
             "the resumed incremental should succeed");
    static const char *const trace_stop[] = {
        "created running ERROR waiting pending COMPLETED concluded null", NULL
    };
    ju_check_trace(&T.ev, d0->id, start, trace_stop);
    char *raw = ju_job_trace(&T.ev, d0->id, start);
    ju_check(strstr(raw, "ERROR paused running") != NULL,
             "job drive0: expected 'ERROR paused running' (stop, then resume) in '%s'", raw);
    free(raw);
    static const struct bm_status after = { .count = 0, .granularity = 65536,
                                            .status = "active", .busy = 0, .recording = 1,
                                            .persistent = -1 };
    check_bitmap_status(d0->id, bm->name, &after, "after the resumed job");

    make_reference_backup(bm);
    shutdown_and_check_backups();
    ju_end();
}

int main(void)
{
    if (!bvh_have("qemu-img") || !bvh_have("qemu-io")) {
        fprintf(stderr, "qemu-img or qemu-io missing; skipping\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        /* TestIncrementalBackup */
        cmocka_unit_test_setup_teardown(test_incremental_simple, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_small_granularity, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_large_granularity, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_larger_cluster_target, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_incremental_transaction, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_failure, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_failure_race, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_sync_dirty_bitmap_missing, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_sync_dirty_bitmap_not_found, setup_base, teardown),
        cmocka_unit_test_setup_teardown(test_sync_dirty_bitmap_bad_granularity, setup_base,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_growing_before_backup, setup_base, teardown),
        /* TestIncrementalBackupBlkdebug */
        cmocka_unit_test_setup_teardown(test_incremental_failure, setup_blkdebug, teardown),
        cmocka_unit_test_setup_teardown(test_incremental_pause, setup_blkdebug, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
