/*
 * Power-loss simulation for the qcow2 write path: does the engine order its
 * metadata writes and syncs so that a crash at any moment leaves an image
 * that `qemu-img check` finds free of corruption, and does every write that
 * a completed flush acknowledged read back?
 *
 * Why not kill -9: the page cache survives a killed process, so a missing
 * fdatasync between two dependent writes never shows.  Here the file layer
 * itself is recorded instead.  This executable is linked with
 * -Wl,--wrap=pwrite64,fdatasync,fsync,fallocate64,ftruncate64 (see
 * tests/CMakeLists.txt), so every write the engine's file driver issues to
 * the image under test passes through the recorder below on its way to the
 * real call.  The recorder keeps the file as it was when recording started
 * (the durable base) and an ordered log of writes, zero/punch ranges,
 * truncations and syncs.
 *
 * The crash model: after the k-th sync everything logged before it is
 * durable; of the operations logged between sync k and sync k+1 a power loss
 * may have persisted any subset, in any order (disks reorder volatile
 * writes).  For every sync point k of the workload the test builds the
 * images for several subsets of that interval — none, all, all but the last
 * 1..2, each written byte range lost alone (every write to it dropped: a
 * page the kernel never wrote back, while later writes elsewhere survived),
 * and two random ones — writes each to a file, runs `qemu-img check`
 * (corruptions fail the test, leaks are allowed: the engine's crash-safety
 * promise is "at worst a leak"), then opens it with our engine and reads
 * every sector.  Each workload write fills whole sectors with one pattern
 * byte, so a sector's content is one byte: it must equal the value as of the
 * last completed bv_node_flush before the crash, or a value written after
 * that flush (or zero, for such a sector whose data write was lost while its
 * mapping survived).  A sector nobody wrote since that flush must read back
 * exactly.
 *
 * The engine's caches are shrunk after open (through the private qcow2
 * header) to a few entries, so that a workload of a few dozen writes makes
 * L2 tables and refcount blocks get evicted between flushes.  512-byte
 * clusters (and refcount_bits=64 images made by qemu-img) give many L2
 * tables and refblocks per MiB; scripted workloads reach the orders random
 * ones rarely do (a new L2 table on a freed data cluster, reftable growth).
 * Orders this test caught: a new refblock's reftable entry durable before
 * the block itself, and an L1 entry durable before its new L2 table.
 * BV_CRASH_SCALE=N runs N times as many random operations.
 *
 * Needs qemu-img; skipped without it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/qcow2/qcow2-int.h"
#include "util/endian.h"
#include "bv/image.h"

#define SECTOR 512u
#define MAX_STEP (64u << 10)        /* largest write or discard of a workload */
#define PREFILL_PAT 0xcc

/* ---------------- the recording file layer ---------------- */

enum op_kind { OP_WRITE, OP_ZERO, OP_TRUNC, OP_GROW, OP_SYNC };

struct op {
    enum op_kind kind;
    uint64_t off, len;       /* OP_TRUNC: len is the new size, OP_GROW: the least size */
    uint8_t *data;           /* OP_WRITE */
};

#define MAX_OPS 200000

static struct {
    pthread_mutex_t lock;
    bool on;
    dev_t dev;
    ino_t ino;
    struct op *ops;
    size_t nops;
    size_t nsyncs;
    uint8_t *base;
    size_t base_len;
    bool overflow;
    size_t scan_k, scan_pos;   /* sync_pos() resumes here: the test walks k upwards */
} rec = { .lock = PTHREAD_MUTEX_INITIALIZER };

ssize_t __real_pwrite64(int fd, const void *buf, size_t n, off_t off);
int __real_fdatasync(int fd);
int __real_fsync(int fd);
int __real_fallocate64(int fd, int mode, off_t off, off_t len);
int __real_ftruncate64(int fd, off_t len);
ssize_t __wrap_pwrite64(int fd, const void *buf, size_t n, off_t off);
int __wrap_fdatasync(int fd);
int __wrap_fsync(int fd);
int __wrap_fallocate64(int fd, int mode, off_t off, off_t len);
int __wrap_ftruncate64(int fd, off_t len);

static bool tracked(int fd)
{
    struct stat st;
    return rec.on && fstat(fd, &st) == 0 && st.st_dev == rec.dev && st.st_ino == rec.ino;
}

static void log_op(enum op_kind kind, uint64_t off, uint64_t len, const void *data)
{
    pthread_mutex_lock(&rec.lock);
    if (rec.nops >= MAX_OPS) {
        rec.overflow = true;
    } else {
        struct op *o = &rec.ops[rec.nops++];
        o->kind = kind;
        o->off = off;
        o->len = len;
        o->data = NULL;
        if (data) {
            o->data = malloc(len ? len : 1);
            if (o->data)
                memcpy(o->data, data, len);
            else
                rec.overflow = true;
        }
        if (kind == OP_SYNC)
            rec.nsyncs++;
    }
    pthread_mutex_unlock(&rec.lock);
}

ssize_t __wrap_pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    ssize_t r = __real_pwrite64(fd, buf, n, off);
    if (r > 0 && tracked(fd))
        log_op(OP_WRITE, (uint64_t)off, (uint64_t)r, buf);
    return r;
}

int __wrap_fdatasync(int fd)
{
    int r = __real_fdatasync(fd);
    if (r == 0 && tracked(fd))
        log_op(OP_SYNC, 0, 0, NULL);
    return r;
}

int __wrap_fsync(int fd)
{
    int r = __real_fsync(fd);
    if (r == 0 && tracked(fd))
        log_op(OP_SYNC, 0, 0, NULL);
    return r;
}

int __wrap_fallocate64(int fd, int mode, off_t off, off_t len)
{
    int r = __real_fallocate64(fd, mode, off, len);
    if (r == 0 && tracked(fd)) {
        if (!(mode & FALLOC_FL_KEEP_SIZE))
            log_op(OP_GROW, 0, (uint64_t)(off + len), NULL);
        log_op(OP_ZERO, (uint64_t)off, (uint64_t)len, NULL);
    }
    return r;
}

int __wrap_ftruncate64(int fd, off_t len)
{
    int r = __real_ftruncate64(fd, len);
    if (r == 0 && tracked(fd))
        log_op(OP_TRUNC, 0, (uint64_t)len, NULL);
    return r;
}

static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long sz = ftell(f);
    assert_true(sz >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)sz + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *len = (size_t)sz;
    return b;
}

static uint64_t rec_reftable_offset;   /* the header's, when recording started */

static void rec_start(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    rec.base = read_whole(path, &rec.base_len);
    rec.ops = calloc(MAX_OPS, sizeof(*rec.ops));
    assert_non_null(rec.ops);
    rec.nops = rec.nsyncs = 0;
    rec.overflow = false;
    rec.scan_k = rec.scan_pos = 0;
    rec_reftable_offset = ld_be64(rec.base + 48);
    rec.dev = st.st_dev;
    rec.ino = st.st_ino;
    rec.on = true;
}

static void rec_stop(void)
{
    rec.on = false;
    for (size_t i = 0; i < rec.nops; i++)
        free(rec.ops[i].data);
    free(rec.ops);
    free(rec.base);
    rec.ops = NULL;
    rec.base = NULL;
    rec.nops = rec.nsyncs = 0;
}

/* ---------------- rebuilding a crash image ---------------- */

struct img {
    uint8_t *b;
    size_t len, cap;
};

static void img_resize(struct img *im, size_t len)
{
    if (len > im->cap) {
        size_t cap = im->cap ? im->cap : 65536;
        while (cap < len)
            cap *= 2;
        im->b = realloc(im->b, cap);
        assert_non_null(im->b);
        im->cap = cap;
    }
    if (len > im->len)
        memset(im->b + im->len, 0, len - im->len);
    im->len = len;
}

static void apply(struct img *im, const struct op *o)
{
    switch (o->kind) {
    case OP_WRITE:
        if (o->off + o->len > im->len)
            img_resize(im, o->off + o->len);
        memcpy(im->b + o->off, o->data, o->len);
        break;
    case OP_ZERO:
        if (o->off < im->len)
            memset(im->b + o->off, 0, (o->off + o->len > im->len ? im->len : o->off + o->len) -
                                          o->off);
        break;
    case OP_TRUNC:
        img_resize(im, o->len);
        break;
    case OP_GROW:
        if (o->len > im->len)
            img_resize(im, o->len);
        break;
    case OP_SYNC:
        break;
    }
}

/* Index in rec.ops just past sync number k (1-based); 0 stands for "the start". */
static size_t sync_pos(size_t k)
{
    size_t seen = 0, i = 0;
    if (k == 0)
        return 0;
    if (rec.scan_k && rec.scan_k <= k) {
        seen = rec.scan_k;
        i = rec.scan_pos;
    }
    if (seen == k)
        return i;
    for (; i < rec.nops; i++)
        if (rec.ops[i].kind == OP_SYNC && ++seen == k) {
            rec.scan_k = k;
            rec.scan_pos = i + 1;
            return i + 1;
        }
    fail_msg("sync %zu not in the log", k);
    return 0;
}

/* The image after sync k plus the ops of interval k that keep[] selects. */
static void build(struct img *im, size_t k, const bool *keep, size_t *ops_in_interval)
{
    im->len = 0;
    img_resize(im, rec.base_len);
    memcpy(im->b, rec.base, rec.base_len);
    size_t start = sync_pos(k), i;
    for (i = 0; i < start; i++)
        apply(im, &rec.ops[i]);
    size_t j = 0;
    for (; i < rec.nops && rec.ops[i].kind != OP_SYNC; i++, j++)
        if (!keep || keep[j])
            apply(im, &rec.ops[i]);
    *ops_in_interval = j;
}

static size_t interval_len(size_t k)
{
    size_t j = 0;
    for (size_t i = sync_pos(k); i < rec.nops && rec.ops[i].kind != OP_SYNC; i++)
        j++;
    return j;
}

/* ---------------- the guest-side model ---------------- */

struct wlog {
    uint64_t first, nsec;    /* sectors */
    uint8_t pat;
    size_t syncs_at_issue;   /* rec.nsyncs when the write was issued (it may sync itself) */
};

struct frec {
    size_t syncs_after;      /* rec.nsyncs when bv_node_flush returned */
    size_t log_pos;          /* writes logged before it */
    uint8_t *snap;           /* sector values at that point */
};

struct model {
    uint64_t nsec;
    uint8_t *cur, *initial;
    struct wlog *log;
    size_t nlog;
    struct frec *fl;
    size_t nfl;
};

static void model_init(struct model *m, uint64_t size, uint8_t backing_pat, uint64_t backing_len)
{
    memset(m, 0, sizeof(*m));
    m->nsec = size / SECTOR;
    m->cur = calloc(m->nsec, 1);
    m->initial = calloc(m->nsec, 1);
    m->log = calloc(100000, sizeof(*m->log));
    m->fl = calloc(10000, sizeof(*m->fl));
    assert_true(m->cur && m->initial && m->log && m->fl);
    for (uint64_t s = 0; s < backing_len / SECTOR && s < m->nsec; s++)
        m->cur[s] = m->initial[s] = backing_pat;
}

static void model_free(struct model *m)
{
    for (size_t i = 0; i < m->nfl; i++)
        free(m->fl[i].snap);
    free(m->cur);
    free(m->initial);
    free(m->log);
    free(m->fl);
}

static void model_write(struct model *m, uint64_t off, uint64_t len, uint8_t pat,
                        size_t syncs_at_issue)
{
    assert_true(m->nlog < 100000);
    struct wlog *w = &m->log[m->nlog++];
    w->first = off / SECTOR;
    w->nsec = len / SECTOR;
    w->pat = pat;
    w->syncs_at_issue = syncs_at_issue;
    memset(m->cur + w->first, pat, w->nsec);
}

static void model_flushed(struct model *m)
{
    assert_true(m->nfl < 10000);
    struct frec *f = &m->fl[m->nfl++];
    f->syncs_after = rec.nsyncs;
    f->log_pos = m->nlog;
    f->snap = malloc(m->nsec);
    assert_non_null(f->snap);
    memcpy(f->snap, m->cur, m->nsec);
}

/*
 * Is content p allowed for sector s after a crash in interval k?  Untouched
 * since the last completed flush: exactly its value then.  Written since:
 * anything — the write may have been lost after its mapping reached the disk,
 * and a reused host cluster then shows whatever it held before (qcow2, like
 * QEMU, does not sync data before its L2 entry when there is nothing to copy).
 */
static bool allowed(const struct model *m, size_t k, uint64_t s, const uint8_t *p)
{
    const struct frec *f = NULL;
    for (size_t i = 0; i < m->nfl && m->fl[i].syncs_after <= k; i++)
        f = &m->fl[i];
    for (size_t i = f ? f->log_pos : 0; i < m->nlog && m->log[i].syncs_at_issue <= k; i++)
        if (s >= m->log[i].first && s < m->log[i].first + m->log[i].nsec)
            return true;
    uint8_t durable = f ? f->snap[s] : m->initial[s];
    for (unsigned i = 0; i < SECTOR; i++)
        if (p[i] != durable)
            return false;
    return true;
}

/* ---------------- checking one crash image ---------------- */

static char dir[64];

static const char *tp(const char *name)
{
    static char p[4][192];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
    return p[i];
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* qemu-img check, output to log; its exit status (posix_spawn: no shell per image). */
static int qemu_img_check(const char *path, const char *log)
{
    extern char **environ;
    posix_spawn_file_actions_t fa;
    char *argv[] = { "qemu-img", "check", "-f", "qcow2", (char *)path, NULL };
    pid_t pid;
    int st;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC,
                                                      0644), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, 1, 2), 0);
    int r = posix_spawnp(&pid, "qemu-img", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(r, 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *path, const struct img *im)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(im->b, 1, im->len, f), im->len);
    assert_int_equal(fclose(f), 0);
}

struct stats {
    unsigned images, leaky;
};

static void verify_image(const struct model *m, size_t k, const char *what, struct stats *st)
{
    const char *path = tp("crash.qcow2");
    int rc = qemu_img_check(path, tp("check.log"));
    if (rc != 0 && rc != 3) {
        sh("head -n 12 %s >&2", tp("check.log"));
        fail_msg("crash after sync %zu (%s): qemu-img check status %d", k, what, rc);
    }
    st->images++;
    st->leaky += rc == 3;
    bv_node *n = NULL;
    bv_error *err = NULL;
    struct bv_open_opts o = { .path = path, .format = BV_FMT_QCOW2, .read_only = true };
    int r = bv_node_open(&o, &n, &err);
    if (r < 0)
        fail_msg("crash after sync %zu (%s): open: %s", k, what, err ? err->msg : "?");
    uint64_t bytes = m->nsec * SECTOR;
    uint8_t *buf = malloc(bytes);
    assert_non_null(buf);
    r = bv_node_pread(n, buf, bytes, 0, &err);
    if (r < 0)
        fail_msg("crash after sync %zu (%s): read: %s", k, what, err ? err->msg : "?");
    for (uint64_t s = 0; s < m->nsec; s++)
        if (!allowed(m, k, s, buf + s * SECTOR))
            fail_msg("crash after sync %zu (%s): sector %" PRIu64 " reads 0x%02x..., lost a "
                     "flushed write", k, what, s, buf[s * SECTOR]);
    free(buf);
    bv_node_close(n, NULL);
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Every subset the test tries for interval k. */
static void crash_interval(const struct model *m, size_t k, struct img *im, struct stats *st)
{
    size_t len = interval_len(k), got;
    bool *keep = calloc(len + 1, 1);
    assert_non_null(keep);
    char what[64];
    if (k == 0) {             /* none of them (for k > 0: "all" of interval k - 1) */
        build(im, k, keep, &got);
        write_file(tp("crash.qcow2"), im);
        verify_image(m, k, "no unsynced write", st);
    }
    for (size_t drop = 0; drop <= 2 && drop < len; drop++) {  /* all, all but the last 1..2 */
        for (size_t j = 0; j < len; j++)
            keep[j] = j + drop < len;
        build(im, k, keep, &got);
        write_file(tp("crash.qcow2"), im);
        snprintf(what, sizeof(what), "all but the last %zu of %zu", drop, len);
        verify_image(m, k, what, st);
    }
    for (size_t d = 0; d < len; d++) {                        /* one written range lost */
        size_t base = sync_pos(k);
        const struct op *od = &rec.ops[base + d];
        bool first = od->kind == OP_WRITE;
        for (size_t j = 0; j < d && first; j++) {     /* once per range: its first write */
            const struct op *oj = &rec.ops[base + j];
            first = !(oj->kind == OP_WRITE && oj->off == od->off && oj->len == od->len);
        }
        if (!first)
            continue;
        for (size_t j = 0; j < len; j++) {
            const struct op *oj = &rec.ops[base + j];
            keep[j] = !(oj->kind == OP_WRITE && oj->off < od->off + od->len &&
                        od->off < oj->off + oj->len);
        }
        build(im, k, keep, &got);
        write_file(tp("crash.qcow2"), im);
        snprintf(what, sizeof(what), "bytes 0x%" PRIx64 "+%" PRIu64 " lost, of %zu ops",
                 od->off, od->len, len);
        verify_image(m, k, what, st);
    }
    for (int t = 0; len > 1 && t < 2; t++) {                  /* random subsets */
        for (size_t j = 0; j < len; j++)
            keep[j] = rnd() & 1;
        build(im, k, keep, &got);
        write_file(tp("crash.qcow2"), im);
        snprintf(what, sizeof(what), "random subset %d of %zu", t, len);
        verify_image(m, k, what, st);
    }
    free(keep);
}

/* ---------------- workloads ---------------- */

/* One step of a scripted workload: write (pattern = step number), discard or flush. */
struct step {
    char op;                        /* 'w', 'd' or 'f' */
    uint64_t off, len;              /* bytes, sector multiples */
};

struct workload {
    const char *name;
    uint32_t cluster_size;
    uint64_t size;
    bool backing;
    unsigned writes, flush_every;
    unsigned discard_every;         /* 0: writes only; else every Nth op discards clusters */
    unsigned l2_cap, rb_cap;        /* cache entries after open */
    uint64_t seed;
    unsigned refcount_bits;         /* 0: bv_image_create's 16; else qemu-img creates the image */
    uint64_t prefill;               /* with refcount_bits: bytes qemu-io writes (PREFILL_PAT)
                                       before the workload, so it starts near a boundary */
    const struct step *script;      /* instead of random ops: these, `writes` of them */
    bool grows_reftable;            /* assert that the reftable moved */
};

static void shrink_caches(bv_node *n, unsigned l2_cap, unsigned rb_cap)
{
    struct qcow2_state *s = q_state(n);
    bv_mutex_lock(&s->lock);
    assert_false(qcow2_cache_has_dirty(&s->l2));
    assert_false(qcow2_cache_has_dirty(&s->rb));
    qcow2_cache_destroy(&s->l2);
    qcow2_cache_destroy(&s->rb);
    assert_int_equal(qcow2_cache_init(&s->l2, true, l2_cap, NULL), 0);
    assert_int_equal(qcow2_cache_init(&s->rb, false, rb_cap, NULL), 0);
    bv_mutex_unlock(&s->lock);
}

static void make_backing(uint64_t size, uint8_t pat)
{
    assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=4k %s %" PRIu64,
                        tp("base.qcow2"), size), 0);
    assert_int_equal(sh("qemu-io -f qcow2 -c 'write -P %u 0 %" PRIu64 "' %s >/dev/null", pat,
                        size, tp("base.qcow2")), 0);
}

/* BV_CRASH_SCALE=N runs N times the random ops (a longer, slower search). */
static unsigned scaled(const struct workload *w)
{
    const char *e = getenv("BV_CRASH_SCALE");
    unsigned long f = e ? strtoul(e, NULL, 10) : 1;
    return w->script ? w->writes : w->writes * (unsigned)(f >= 1 && f <= 100 ? f : 1);
}

static void run_workload(struct model *m, const struct workload *w)
{
    bv_node *n = NULL;
    bv_error *err = NULL;
    struct bv_open_opts o = { .path = tp("top.qcow2"), .format = BV_FMT_QCOW2 };
    assert_int_equal(bv_node_open(&o, &n, &err), 0);
    shrink_caches(n, w->l2_cap, w->rb_cap);
    rec_start(o.path);
    uint8_t *buf = malloc(MAX_STEP);
    assert_non_null(buf);
    rng_state = w->seed;
    for (unsigned i = 0, nops = scaled(w); i < nops; i++) {
        uint64_t nsec = 1 + rnd() % 8;
        uint64_t first = rnd() % (m->nsec - nsec);
        uint8_t pat = (uint8_t)(1 + i % 250);
        size_t syncs_at_issue = rec.nsyncs;
        int r;
        if (w->script) {
            const struct step *sp = &w->script[i];
            assert_true(sp->len <= MAX_STEP && sp->off + sp->len <= m->nsec * SECTOR);
            first = sp->off / SECTOR;
            nsec = sp->len / SECTOR;
            if (sp->op == 'f') {
                assert_int_equal(bv_node_flush(n, &err), 0);
                model_flushed(m);
                continue;
            }
            if (sp->op == 'd')
                pat = 0;
            memset(buf, pat, nsec * SECTOR);
            r = sp->op == 'd' ? bv_node_discard(n, nsec * SECTOR, first * SECTOR, &err)
                              : bv_node_pwrite(n, buf, nsec * SECTOR, first * SECTOR, 0, &err);
        } else if (w->discard_every && i % w->discard_every == w->discard_every - 1) {
            uint64_t spc = w->cluster_size / SECTOR;     /* whole clusters: frees host space */
            first = first / spc * spc;
            nsec = spc * (1 + rnd() % 4);
            if (first + nsec > m->nsec)
                nsec = m->nsec - first;
            pat = 0;
            r = bv_node_discard(n, nsec * SECTOR, first * SECTOR, &err);
        } else {
            memset(buf, pat, nsec * SECTOR);
            r = bv_node_pwrite(n, buf, nsec * SECTOR, first * SECTOR, 0, &err);
        }
        if (r < 0)
            fail_msg("op %u: %s", i, err ? err->msg : "?");
        model_write(m, first * SECTOR, nsec * SECTOR, pat, syncs_at_issue);
        if (!w->script && (i + 1) % w->flush_every == 0) {
            assert_int_equal(bv_node_flush(n, &err), 0);
            model_flushed(m);
        }
    }
    assert_int_equal(bv_node_close(n, NULL), 0);
    model_flushed(m);             /* close flushes: its syncs are the last ones */
    free(buf);
    assert_false(rec.overflow);
}

static void crash_every_sync_point(const struct workload *w)
{
    if (sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0)
        skip();
    uint8_t backing_pat = 0xbb, init_pat = w->backing ? backing_pat : PREFILL_PAT;
    uint64_t init_len = w->backing ? w->size / 2 : w->prefill;
    struct bv_create_opts c = { .path = tp("top.qcow2"), .format = BV_FMT_QCOW2,
                                .size = w->size, .cluster_size = w->cluster_size };
    if (w->backing) {
        make_backing(w->size / 2, backing_pat);
        c.backing = tp("base.qcow2");
        c.backing_format = BV_FMT_QCOW2;
    }
    if (w->refcount_bits) {
        assert_false(w->backing);
        assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=%u,refcount_bits=%u "
                            "%s %" PRIu64, w->cluster_size, w->refcount_bits, c.path, w->size),
                         0);
        if (w->prefill)
            assert_int_equal(sh("qemu-io -f qcow2 -c 'write -P %u 0 %" PRIu64 "' %s >/dev/null",
                                PREFILL_PAT, w->prefill, c.path), 0);
    } else {
        assert_false(w->prefill);
        assert_int_equal(bv_image_create(&c, NULL), 0);
    }
    struct model m;
    model_init(&m, w->size, init_pat, init_len);
    run_workload(&m, w);
    if (w->grows_reftable) {      /* the workload must still reach what it is there for */
        size_t len;
        uint8_t *b = read_whole(c.path, &len);
        assert_true(len >= 64);
        assert_int_not_equal(ld_be64(b + 48), rec_reftable_offset);
        free(b);
    }
    struct img im = { 0 };
    struct stats st = { 0 };
    rng_state = w->seed * 7 + 1;
    size_t syncs = rec.nsyncs;
    print_message("%s: %zu sync points, %zu file ops\n", w->name, syncs, rec.nops);
    assert_true(syncs >= 10);     /* the workload must give the test something to cut */
    for (size_t k = 0; k <= syncs; k++)
        crash_interval(&m, k, &im, &st);
    print_message("%s: %zu sync points, %zu file ops, %u crash images checked (%u leaky)\n",
                  w->name, syncs, rec.nops, st.images, st.leaky);
    free(im.b);
    rec_stop();
    model_free(&m);
    sh("rm -f %s %s %s", tp("top.qcow2"), tp("base.qcow2"), tp("crash.qcow2"));
}

/* 512-byte clusters: an L2 table maps 32 KiB, a refblock counts 256 clusters. */
static void test_alloc_512(void **state)
{
    (void)state;
    const struct workload w = { "alloc-512", 512, 1u << 20, false, 50, 8, 0, 4, 2, 0x1234567 };
    crash_every_sync_point(&w);
}

/* 4 KiB clusters, partial-cluster writes: COW of zeros, L2 tables map 2 MiB. */
static void test_alloc_4k(void **state)
{
    (void)state;
    const struct workload w = { "alloc-4k", 4096, 4u << 20, false, 50, 8, 0, 2, 2, 0xabcdef1 };
    crash_every_sync_point(&w);
}

/* Over a backing file: partial-cluster writes copy the backing data (COW). */
static void test_backing_4k(void **state)
{
    (void)state;
    const struct workload w = { "backing-4k", 4096, 2u << 20, true, 50, 8, 0, 2, 2, 0x5eed5 };
    crash_every_sync_point(&w);
}

/* Discards free clusters that later writes reuse: stale old content behind a lost write. */
static void test_reuse_512(void **state)
{
    (void)state;
    const struct workload w = { "reuse-512", 512, 256u << 10, false, 70, 8, 3, 2, 1, 0x77 };
    crash_every_sync_point(&w);
}

/*
 * Many refcount blocks and a one-entry refblock cache: refcount_bits=64 with
 * 512-byte clusters makes a refblock count 64 clusters (32 KiB of file), so
 * the image keeps allocating new refblocks; discards free clusters in old
 * blocks that later writes reuse, so a dirty refblock is evicted (written,
 * not synced) whenever an allocation moves to another block, between the
 * refcount update and the L2 write that depends on it.
 */
static void test_refblocks_512(void **state)
{
    (void)state;
    const struct workload w = { "refblocks-512", 512, 512u << 10, false, 80, 10, 3, 2, 1, 0x11,
                                64, 0, NULL };
    crash_every_sync_point(&w);
}

/*
 * Reftable growth: refcount_bits=64 with 512-byte clusters gives a
 * one-cluster reftable room for 64 refblocks of 64 clusters (2 MiB of file);
 * the image is filled to just below that before recording, so the workload
 * allocates the last refblocks and then grows the reftable (new table
 * written and synced, header switched, old table freed at a later flush).
 */
static void test_reftable_grow_512(void **state)
{
    (void)state;
    const struct workload w = { "reftable-grow-512", 512, 4u << 20, false, 30, 6, 0, 2, 1, 0x31,
                                64, 1980u << 10, NULL, true };
    crash_every_sync_point(&w);
}

/*
 * A new L2 table on a cluster that held guest data: 512-byte clusters (an
 * L2 table maps 32 KiB), the first 32 KiB written and discarded, so the
 * next L2 tables are allocated on freed data clusters, whose old content
 * reads as garbage L2 entries if the table's write is lost while the L1
 * entry pointing to it survives.
 */
static const struct step l2_reuse_script[] = {
    { 'w', 0, 16384 }, { 'w', 16384, 16384 }, { 'f', 0, 0 },
    { 'd', 0, 32768 }, { 'f', 0, 0 },
    { 'w', 65536, 512 }, { 'w', 131072, 4096 }, { 'f', 0, 0 },
    { 'w', 196608, 1024 }, { 'w', 98304, 512 }, { 'w', 70000 / 512 * 512, 2048 }, { 'f', 0, 0 },
    { 'w', 163840, 512 }, { 'd', 131072, 4096 }, { 'w', 229376, 8192 }, { 'f', 0, 0 },
};

static void test_l2_reuse_512(void **state)
{
    (void)state;
    const struct workload w = { "l2-reuse-512", 512, 256u << 10, false,
                                sizeof(l2_reuse_script) / sizeof(l2_reuse_script[0]), 0, 0, 8,
                                1, 0x99, 0, 0, l2_reuse_script };
    crash_every_sync_point(&w);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/bvcrashXXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return sh("rm -rf '%s'", dir) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_512),
        cmocka_unit_test(test_alloc_4k),
        cmocka_unit_test(test_backing_4k),
        cmocka_unit_test(test_reuse_512),
        cmocka_unit_test(test_refblocks_512),
        cmocka_unit_test(test_l2_reuse_512),
        cmocka_unit_test(test_reftable_grow_512),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
