/*
 * fuzz_qcow2_write: libFuzzer target for the qcow2 write paths over a
 * backing file: writes (plain, FUA, compressed), write-zeroes with and
 * without BV_ZERO_MAY_UNMAP, discards, reads, flush, truncate, block
 * status, check, and close/reopen.
 *
 * Every run works in one scratch directory (made once per process, see
 * fuzz-util.h) opened as a bv_root, so a fuzzed backing name
 * can never reach a file outside it.  The directory holds two backing
 * images with the same known contents (base.raw and base.qcow2, made once)
 * and the top image, top.qcow2, rewritten for every input.
 *
 * Input (byte 0 selects the mode):
 *   even: FRESH.  Bytes 1..4 pick create options (cluster size, v2/v3,
 *         extended L2, zstd, backing none/raw/qcow2, virtual size); the
 *         image is made by bv_image_create and the rest is the operation
 *         script.  A shadow copy of what the image must read as is kept
 *         (the backing's bytes, then every successful write, zeros for
 *         write-zeroes, discard and a grown area), and every read, every
 *         check (no corruption, no leak, no I/O error) and every reopen is
 *         compared with it: a mismatch is a bug, so the target traps.
 *   odd:  FUZZED.  Bytes 1..2 are the script length (little endian), then
 *         the script, then the bytes of top.qcow2 (its backing name may name
 *         base.raw or base.qcow2).  Opening read-write may fail; anything
 *         may fail; nothing may crash, hang or trip a sanitizer.
 *
 * Script: 7 bytes per operation: opcode, 3 bytes offset, 3 bytes length
 * (both scaled into the image and 16 KiB past its end, so out-of-range
 * requests happen too).  The opcode's high bits pick the alignment (byte,
 * 512, cluster).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "bv/image.h"
#include "bv/path.h"
#include "fuzz-util.h"

#define BASE_SIZE   (1536u << 10)      /* backing files: 1.5 MiB */
#define MAX_SIZE    (4u << 20)         /* top image: at most 4 MiB (also after truncate) */
#define MAX_OPS     64
#define OP_BYTES    7

enum backing_kind { BK_NONE, BK_RAW, BK_QCOW2 };

static const char *dir;
static struct bv_root *root;
static uint8_t base[BASE_SIZE];

/* ---- the scratch directory and the backing files (once per process) ---- */

static void base_pattern(void)
{
    for (uint32_t i = 0; i < BASE_SIZE; i++)
        base[i] = (uint8_t)(0x11 + i / 512 * 7 + i % 3);
    memset(base + (256u << 10), 0, 192u << 10);        /* a zero hole inside */
    memset(base + BASE_SIZE - (64u << 10), 0, 64u << 10);
}

static bool write_file(const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    bool ok = write(fd, p, n) == (ssize_t)n;
    close(fd);
    return ok;
}

static bool make_base_qcow2(void)
{
    struct bv_create_opts c = {
        .path = "base.qcow2", .root = root, .format = BV_FMT_QCOW2, .size = BASE_SIZE,
        .cluster_size = 4096,
    };
    struct bv_open_opts o = { .path = "base.qcow2", .root = root, .format = BV_FMT_QCOW2 };
    bv_node *n = NULL;
    if (bv_image_create(&c, NULL) < 0 || bv_node_open(&o, &n, NULL) < 0)
        return false;
    static const uint8_t zero[4096];
    bool ok = true;
    for (uint32_t off = 0; ok && off < BASE_SIZE; off += 4096)
        if (memcmp(base + off, zero, 4096) != 0)
            ok = bv_node_pwrite(n, base + off, 4096, off, 0, NULL) == 0;
    return bv_node_close(n, NULL) == 0 && ok;
}

static bool setup(void)
{
    if (root)
        return true;
    if (!(dir = fuzz_scratch_dir("fuzz-qcow2-write")))
        return false;
    base_pattern();
    if (bv_root_open(dir, &root, NULL) < 0)
        return false;
    if (!write_file("base.raw", base, BASE_SIZE) || !make_base_qcow2()) {
        fprintf(stderr, "fuzz_qcow2_write: cannot make the backing files in %s\n", dir);
        abort();
    }
    return true;
}

/* ---- the shadow: what a FRESH image must read as ---- */

struct shadow {
    uint64_t size;
    uint8_t *data;               /* MAX_SIZE bytes */
    uint8_t *known;              /* 1 where data is what a read must return */
};

static void shadow_fill(struct shadow *sh, uint64_t off, uint64_t len, const uint8_t *src)
{
    if (src)
        memcpy(sh->data + off, src, len);
    else
        memset(sh->data + off, 0, len);
    memset(sh->known + off, 1, len);
}

static void shadow_unknown(struct shadow *sh, uint64_t off, uint64_t len)
{
    if (off < MAX_SIZE)
        memset(sh->known + off, 0, len < MAX_SIZE - off ? len : MAX_SIZE - off);
}

/* ---- one run ---- */

struct run {
    bv_node *n;
    bool fresh;                  /* the shadow is kept and checked */
    bool no_sync;
    struct shadow sh;
    uint32_t cluster;
    uint64_t backing_size;       /* 0 without a backing file */
    uint8_t *buf;                /* MAX_SIZE + 64 KiB: write source / read target */
};

static __attribute__((noreturn)) void fail(const char *what, uint64_t off, uint64_t len,
                                           int r, bv_error *err)
{
    fprintf(stderr, "fuzz_qcow2_write: %s [%llu, +%llu): %d %s\n", what,
            (unsigned long long)off, (unsigned long long)len, r,
            err ? err->msg : "");
    abort();
}

static uint32_t get24(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

/* Offset and length of one operation: scaled to the image plus 16 KiB,
 * aligned as the opcode's high bits say. */
static void op_range(const struct run *rn, const uint8_t *op, uint64_t *off, uint64_t *len)
{
    uint64_t span = bv_node_size(rn->n) + (16u << 10);
    uint64_t a = (op[0] >> 6) == 1 ? 512 : (op[0] >> 6) == 2 ? (rn->cluster ? rn->cluster : 512) : 1;
    *off = get24(op + 1) % span / a * a;
    *len = get24(op + 4) % (span < (1u << 20) ? span : (1u << 20)) / a * a;
}

static bool in_range(const struct run *rn, uint64_t off, uint64_t len)
{
    uint64_t size = bv_node_size(rn->n);
    return off <= size && len <= size - off;
}

/* A result the shadow can judge: out of range must fail and change
 * nothing; in range must succeed, except where `may_fail` says. */
static void judge(struct run *rn, const char *what, uint64_t off, uint64_t len, int r,
                  bv_error *err, bool may_fail)
{
    if (!rn->fresh)
        return;
    bool ok = in_range(rn, off, len);
    if ((r == 0) != ok && !(may_fail && r < 0))
        fail(what, off, len, r, err);
    if (r < 0 && ok)
        shadow_unknown(&rn->sh, off, len);
}

static void op_write(struct run *rn, const uint8_t *op, uint64_t off, uint64_t len)
{
    int flags = (op[0] & 0x30) == 0x10 ? BV_WRITE_FUA : (op[0] & 0x30) == 0x20 ? BV_WRITE_COMPRESSED : 0;
    /* one byte value per 512 (memset: the harness's own loops are traced too) */
    for (uint64_t i = 0; i < len; i += 512)
        memset(rn->buf + i, (uint8_t)(op[3] + op[6] * 3 + i / 512), len - i < 512 ? len - i : 512);
    bv_error *err = NULL;
    int r = bv_node_pwrite(rn->n, rn->buf, len, off, flags, &err);
    judge(rn, "write", off, len, r, err, flags & BV_WRITE_COMPRESSED);
    if (rn->fresh && r == 0 && len)
        shadow_fill(&rn->sh, off, len, rn->buf);
    bv_error_free(err);
}

static void op_zero(struct run *rn, int kind, uint64_t off, uint64_t len)
{
    bv_error *err = NULL;
    int r = kind == 2 ? bv_node_discard(rn->n, len, off, &err)
                      : bv_node_write_zeroes(rn->n, len, off, kind ? BV_ZERO_MAY_UNMAP : 0, &err);
    judge(rn, kind == 2 ? "discard" : "write-zeroes", off, len, r, err, false);
    if (rn->fresh && r == 0 && len)
        shadow_fill(&rn->sh, off, len, NULL);
    bv_error_free(err);
}

/* Every known byte of [off, off+len) reads as the shadow says.  Runs of
 * known bytes are compared with memcmp: the harness's own loops are
 * coverage-traced too, and a byte loop would cost more than the engine. */
static void compare(struct run *rn, const char *what, uint64_t off, uint64_t len)
{
    const uint8_t *want = rn->sh.data + off, *known = rn->sh.known + off, *p, *q;
    uint64_t at = 0;
    while (at < len && (p = memchr(known + at, 1, len - at))) {
        q = memchr(p, 0, len - (uint64_t)(p - known));
        uint64_t a = (uint64_t)(p - known), b = q ? (uint64_t)(q - known) : len;
        if (memcmp(rn->buf + a, want + a, b - a) != 0) {
            while (rn->buf[a] == want[a])
                a++;
            fprintf(stderr, "fuzz_qcow2_write: %s: byte %llu reads 0x%02x, expected 0x%02x\n",
                    what, (unsigned long long)(off + a), rn->buf[a], want[a]);
            abort();
        }
        at = b;
    }
}

static void op_read(struct run *rn, uint64_t off, uint64_t len)
{
    bv_error *err = NULL;
    int r = bv_node_pread(rn->n, rn->buf, len, off, &err);
    judge(rn, "read", off, len, r, err, false);
    if (rn->fresh && r == 0)
        compare(rn, "read", off, len);
    bv_error_free(err);
}

/* A grown area reads as zeros.  Where no longer backing file makes the
 * engine zero it (QEMU's rule), the rest of the old last cluster may still
 * hold what an earlier shrink left there, as in QEMU. */
static void grown(struct run *rn, uint64_t old, uint64_t size)
{
    shadow_fill(&rn->sh, old, size - old, NULL);
    if (rn->backing_size <= old) {
        uint64_t cs = rn->cluster, tail = (old + cs - 1) / cs * cs;
        shadow_unknown(&rn->sh, old, (tail < size ? tail : size) - old);
    }
}

static void op_truncate(struct run *rn, const uint8_t *op)
{
    uint64_t old = bv_node_size(rn->n);
    uint64_t size = get24(op + 1) % MAX_SIZE;
    if (!(op[4] & 1))
        size = size / 512 * 512;
    bool shrink = op[4] & 2;
    bv_error *err = NULL;
    int r = bv_node_truncate(rn->n, size, shrink, &err);
    if (rn->fresh) {
        bool ok = size % 512 == 0 && (shrink || size >= old);
        if ((r == 0) != ok)
            fail("truncate", size, old, r, err);
        if (r == 0 && size > old)
            grown(rn, old, size);
        if (r == 0)
            rn->sh.size = size;
    }
    bv_error_free(err);
}

static void op_status(struct run *rn)
{
    uint64_t size = bv_node_size(rn->n), off = 0;
    for (int steps = 0; steps < 256 && off < size; steps++) {
        struct bv_block_status bs;
        bv_error *err = NULL;
        int r = bv_node_block_status(rn->n, off, size - off, &bs, &err);
        if (rn->fresh && r < 0)
            fail("block status", off, size - off, r, err);
        bv_error_free(err);
        if (r < 0)
            break;
        off += bs.pnum;
    }
}

static void op_check(struct run *rn)
{
    struct bv_check_result res;
    bv_error *err = NULL;
    int r = bv_image_check(rn->n, false, &res, &err);
    if (rn->fresh && (r < 0 || res.corruptions || res.leaks || res.check_errors)) {
        for (unsigned i = 0; i < res.nmessages; i++)
            fprintf(stderr, "  %s\n", res.messages[i]);
        fail("check", res.corruptions, res.leaks, r, err);
    }
    bv_check_result_free(&res);
    bv_error_free(err);
}

static int open_top(struct run *rn, bv_error **errp)
{
    struct bv_open_opts o = {
        .path = "top.qcow2", .root = root, .format = BV_FMT_QCOW2, .no_sync = rn->no_sync,
    };
    return bv_node_open(&o, &rn->n, errp);
}

/* Close and open again: what was flushed must read back the same. */
static void op_reopen(struct run *rn)
{
    bv_error *err = NULL;
    int r = bv_node_close(rn->n, &err);
    rn->n = NULL;
    if (rn->fresh && r < 0)
        fail("close", 0, 0, r, err);
    bv_error_free(err);
    err = NULL;
    r = open_top(rn, &err);
    if (rn->fresh && (r < 0 || bv_node_size(rn->n) != rn->sh.size))
        fail("reopen", bv_node_size(rn->n), rn->sh.size, r, err);
    bv_error_free(err);
}

static void run_op(struct run *rn, const uint8_t *op)
{
    static int trace = -1;
    uint64_t off, len;
    op_range(rn, op, &off, &len);
    if (trace < 0)
        trace = getenv("BV_FUZZ_TRACE") != NULL;
    if (trace)                   /* BV_FUZZ_TRACE=1: replay a reproducer step by step */
        fprintf(stderr, "op 0x%02x [%llu, +%llu) size %llu\n", op[0], (unsigned long long)off,
                (unsigned long long)len, (unsigned long long)bv_node_size(rn->n));
    bv_error *err = NULL;
    switch (op[0] & 0x0f) {
    case 0: case 1: case 2: op_write(rn, op, off, len); break;
    case 3: op_zero(rn, 0, off, len); break;
    case 4: op_zero(rn, 1, off, len); break;
    case 5: op_zero(rn, 2, off, len); break;
    case 6: case 7: op_read(rn, off, len); break;
    case 8:
        if (bv_node_flush(rn->n, &err) < 0 && rn->fresh)
            fail("flush", 0, 0, -1, err);
        bv_error_free(err);
        break;
    case 9: op_truncate(rn, op); break;
    case 10: op_status(rn); break;
    case 11: op_check(rn); break;
    case 12: op_reopen(rn); break;
    default: op_read(rn, 0, bv_node_size(rn->n) < MAX_SIZE ? bv_node_size(rn->n) : MAX_SIZE); break;
    }
}

static void run_script(struct run *rn, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + OP_BYTES <= n && i / OP_BYTES < MAX_OPS && rn->n; i += OP_BYTES)
        run_op(rn, p + i);
    if (!rn->n)
        return;
    /* the end: everything reads as the shadow says, and checks clean */
    uint64_t size = bv_node_size(rn->n);
    op_read(rn, 0, size < MAX_SIZE ? size : MAX_SIZE);
    op_check(rn);
}

/* ---- the two modes ---- */

static int create_fresh(struct run *rn, const uint8_t *p)
{
    static const char *const names[] = { NULL, "base.raw", "base.qcow2" };
    enum backing_kind bk = p[1] % 3;
    bool extl2 = p[1] & 0x10, v2 = (p[1] & 0x20) && !extl2, zstd = (p[1] & 0x40) && !v2;
    uint32_t cs = 512u << (p[2] % 8);                 /* 512 .. 64 KiB */
    if (extl2 && cs < 16384)
        cs = 16384;
    uint64_t size = 512 * (1 + ((uint32_t)p[3] | (uint32_t)p[4] << 8) % 4096);   /* <= 2 MiB */
    struct bv_create_opts c = {
        .path = "top.qcow2", .root = root, .format = BV_FMT_QCOW2, .size = size,
        .cluster_size = cs, .backing = names[bk],
        .backing_format = bk == BK_RAW ? BV_FMT_RAW : bk == BK_QCOW2 ? BV_FMT_QCOW2 : BV_FMT_NONE,
        .compat_v2 = v2, .compression_zstd = zstd, .extended_l2 = extl2,
    };
    bv_error *err = NULL;
    int r = bv_image_create(&c, &err);
    if (r == 0)
        r = open_top(rn, &err);
    if (r < 0)
        fail("create/open", size, cs, r, err);
    rn->cluster = cs;
    rn->sh.size = size;
    shadow_fill(&rn->sh, 0, size, NULL);     /* past the size: filled when it grows */
    rn->backing_size = bk != BK_NONE ? BASE_SIZE : 0;
    if (bk != BK_NONE)
        memcpy(rn->sh.data, base, size < BASE_SIZE ? size : BASE_SIZE);
    return 0;
}

static int open_fuzzed(struct run *rn, const uint8_t *img, size_t n)
{
    if (!write_file("top.qcow2", img, n))
        return -1;
    if (open_top(rn, NULL) < 0)
        return -1;
    rn->cluster = bv_node_cluster_size(rn->n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *buf, *sdata, *known;
    if (size < 5 || !setup())
        return 0;
    if (!buf) {
        buf = malloc(MAX_SIZE + (64u << 10));
        sdata = malloc(MAX_SIZE);
        known = malloc(MAX_SIZE);
        if (!buf || !sdata || !known)
            abort();
    }
    struct run rn = {
        .fresh = !(data[0] & 1), .no_sync = !(data[0] & 2), .buf = buf,
        .sh = { .data = sdata, .known = known },
    };
    char top[512];
    snprintf(top, sizeof(top), "%s/top.qcow2", dir);
    unlink(top);
    if (rn.fresh) {
        create_fresh(&rn, data);
        run_script(&rn, data + 5, size - 5);
    } else {
        size_t slen = (size_t)data[1] | (size_t)data[2] << 8;
        if (slen > size - 3)
            slen = size - 3;
        if (open_fuzzed(&rn, data + 3 + slen, size - 3 - slen) == 0)
            run_script(&rn, data + 3, slen);
    }
    bv_error *err = NULL;
    int r = bv_node_close(rn.n, &err);
    if (rn.fresh && r < 0)
        fail("close", 0, 0, r, err);
    bv_error_free(err);
    return 0;
}
