/*
 * qcow2 and node layer: round-trips against a shadow buffer at several
 * cluster sizes, backing chains, malformed headers, check/repair, resize,
 * refcount widths and reftable growth, blkdebug events, concurrent writers
 * and readers, the metadata overlap guard, extended L2 subclusters and
 * zstd compression.  Where qemu-img is
 * installed it is the oracle (check clean, compare identical); without it
 * those assertions are skipped, the rest still runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bv/blkdebug.h"
#include "bv/image.h"
#include "bv/path.h"
#include "util/endian.h"

static char dir[128];
static bool have_qemu;
static unsigned oracle_missed;   /* qemu-img/qemu-io checks not run: the run reports skipped */

/* Whether the qemu-img/qemu-io oracle can run.  Without it the check is
 * counted, and a run that needed it exits 77 (skipped) instead of passing. */
static bool qemu(void)
{
    if (!have_qemu)
        oracle_missed++;
    return have_qemu;
}

static const char *tp(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
    return buf[k];
}

static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void qemu_check_clean(const char *path)
{
    if (qemu())
        assert_int_equal(sh("qemu-img check -q %s", path), 0);
}

static void create(const char *name, uint64_t size, uint32_t cs, const char *backing)
{
    bv_error *err = NULL;
    struct bv_create_opts o = { .path = tp(name), .format = BV_FMT_QCOW2, .size = size,
                                .cluster_size = cs, .backing = backing,
                                .backing_format = backing ? BV_FMT_QCOW2 : BV_FMT_NONE };
    int r = bv_image_create(&o, &err);
    if (r)
        fprintf(stderr, "create: %s\n", err->msg);
    assert_int_equal(r, 0);
}

static bv_node *open_img(const char *name, bool ro)
{
    bv_node *n = NULL;
    bv_error *err = NULL;
    struct bv_open_opts o = { .path = tp(name), .read_only = ro };
    int r = bv_node_open(&o, &n, &err);
    if (r)
        fprintf(stderr, "open: %s\n", err->msg);
    assert_int_equal(r, 0);
    return n;
}

static int open_err(const char *name, bool ro, bv_error **err)
{
    bv_node *n = NULL;
    struct bv_open_opts o = { .path = tp(name), .read_only = ro };
    int r = bv_node_open(&o, &n, err);
    bv_node_close(n, NULL);
    return r;
}

static void fill(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)((i * 131 + seed * 7919) >> 3);
}

static void assert_reads(bv_node *n, const uint8_t *shadow, uint64_t size)
{
    uint8_t *buf = malloc(size);
    assert_int_equal(bv_node_pread(n, buf, size, 0, NULL), 0);
    assert_memory_equal(buf, shadow, size);
    free(buf);
}

static void check_clean(bv_node *n)
{
    struct bv_check_result res;
    assert_int_equal(bv_image_check(n, false, &res, NULL), 0);
    for (unsigned i = 0; i < res.nmessages; i++)
        fprintf(stderr, "check: %s\n", res.messages[i]);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.leaks, 0);
    bv_check_result_free(&res);
}

/* ---- round-trips ---- */

static void roundtrip(uint32_t cs)
{
    const uint64_t size = cs >= (1u << 20) ? 32 << 20 : 8 << 20;
    const uint64_t coff = cs >= (1u << 20) ? 16 << 20 : 7 << 20;
    uint8_t *shadow = calloc(1, size), *data = malloc(size);
    fill(data, size, cs);
    create("rt.qcow2", size, cs, NULL);
    bv_node *n = open_img("rt.qcow2", false);
    assert_int_equal(bv_node_cluster_size(n), cs);
    struct { uint64_t off, len; } w[] = {
        { 0, 1 }, { 1000, 300000 }, { 3 << 20, 2 << 20 }, { size - 777, 777 },
        { 5000, 9 }, { (6 << 20) + 512, cs < 65536 ? cs * 3 + 100 : 100000 },
    };
    for (unsigned i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
        assert_int_equal(bv_node_pwrite(n, data + w[i].off, w[i].len, w[i].off, 0, NULL), 0);
        memcpy(shadow + w[i].off, data + w[i].off, w[i].len);
    }
    assert_int_equal(bv_node_write_zeroes(n, 1 << 20, 3 << 20, 0, NULL), 0);
    memset(shadow + (3 << 20), 0, 1 << 20);
    assert_int_equal(bv_node_discard(n, 100000, 200, NULL), 0);
    memset(shadow + 200, 0, 100000);
    assert_int_equal(bv_node_write_zeroes(n, cs * 2, (4 << 20), BV_ZERO_MAY_UNMAP, NULL), 0);
    memset(shadow + (4 << 20), 0, cs * 2);
    /* compressed: whole unallocated clusters (coff .. coff + 4 clusters) */
    uint8_t *cbuf = malloc(cs * 4);
    memset(cbuf, 0xcd, cs * 2);
    fill(cbuf + cs * 2, cs * 2, 99);
    assert_int_equal(bv_node_pwrite(n, cbuf, cs * 4, coff, BV_WRITE_COMPRESSED, NULL), 0);
    memcpy(shadow + coff, cbuf, cs * 4);
    assert_int_equal(bv_node_pwrite(n, cbuf, cs, coff, BV_WRITE_COMPRESSED, NULL), -EIO);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, coff, cs, &bs, NULL), 0);
    assert_true(bs.flags & BV_BS_COMPRESSED);
    assert_reads(n, shadow, size);
    check_clean(n);
    assert_int_equal(bv_node_close(n, NULL), 0);
    n = open_img("rt.qcow2", true);
    assert_reads(n, shadow, size);
    check_clean(n);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("rt.qcow2"));
    if (qemu()) {
        int fd = open(tp("rt.raw"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
        assert_int_equal(write(fd, shadow, size), (ssize_t)size);
        close(fd);
        assert_int_equal(sh("qemu-img compare -q -f raw -F qcow2 %s %s", tp("rt.raw"),
                            tp("rt.qcow2")), 0);
    }
    free(cbuf);
    free(shadow);
    free(data);
}

static void test_roundtrip_512(void **st) { roundtrip(512); }
static void test_roundtrip_4k(void **st) { roundtrip(4096); }
static void test_roundtrip_64k(void **st) { roundtrip(65536); }
static void test_roundtrip_2m(void **st) { roundtrip(2 << 20); }

static void test_block_status_sparse(void **st)
{
    create("sparse.qcow2", 4ULL << 30, 65536, NULL);
    bv_node *n = open_img("sparse.qcow2", false);
    uint8_t buf[65536];
    memset(buf, 1, sizeof(buf));
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 3ULL << 30, 0, NULL), 0);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, 0, 4ULL << 30, &bs, NULL), 0);
    assert_int_equal(bs.pnum, 3ULL << 30);           /* one coalesced run */
    assert_int_equal(bs.flags, BV_BS_ZERO);
    assert_int_equal(bv_node_block_status(n, 3ULL << 30, 1ULL << 30, &bs, NULL), 0);
    assert_int_equal(bs.pnum, 65536);
    assert_int_equal(bs.flags, BV_BS_DATA | BV_BS_ALLOCATED);
    assert_int_equal(bv_node_block_status(n, 0, 1, &bs, NULL), 0);
    assert_int_equal(bs.pnum, 1);
    bv_error *err = NULL;
    assert_int_equal(bv_node_pread(n, buf, 2, (4ULL << 30) - 1, &err), -EINVAL);
    bv_error_free(err);
    bv_node_close(n, NULL);
}

/* ---- backing chains ---- */

static void test_backing_chain(void **st)
{
    const uint64_t size = 4 << 20;
    uint8_t *shadow = calloc(1, size), *data = malloc(size);
    create("b0.qcow2", size, 65536, NULL);
    bv_node *n = open_img("b0.qcow2", false);
    fill(data, size, 1);
    assert_int_equal(bv_node_pwrite(n, data, size, 0, 0, NULL), 0);
    memcpy(shadow, data, size);
    bv_node_close(n, NULL);
    create("b1.qcow2", 0, 4096, "b0.qcow2");      /* size taken from the backing file */
    create("b2.qcow2", 0, 512, "b1.qcow2");
    n = open_img("b1.qcow2", false);
    assert_int_equal(bv_node_size(n), size);
    fill(data, 10000, 2);
    assert_int_equal(bv_node_pwrite(n, data, 10000, 5000, 0, NULL), 0);  /* partial COW */
    memcpy(shadow + 5000, data, 10000);
    assert_int_equal(bv_node_write_zeroes(n, 65536, 1 << 20, 0, NULL), 0);
    memset(shadow + (1 << 20), 0, 65536);
    assert_int_equal(bv_node_discard(n, 8192, 2 << 20, NULL), 0);
    memset(shadow + (2 << 20), 0, 8192);
    bv_node_close(n, NULL);
    n = open_img("b2.qcow2", false);
    assert_non_null(bv_node_backing(n));
    assert_non_null(bv_node_backing(bv_node_backing(n)));
    fill(data, 700, 3);
    assert_int_equal(bv_node_pwrite(n, data, 700, 100, 0, NULL), 0);
    memcpy(shadow + 100, data, 700);
    assert_reads(n, shadow, size);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, 1 << 20, 4096, &bs, NULL), 0);
    assert_int_equal(bs.flags, 0);                /* decided below this layer */
    struct bv_image_info info;
    assert_int_equal(bv_node_info(n, &info, NULL), 0);
    assert_string_equal(info.backing, "b1.qcow2");
    assert_int_equal(info.backing_format, BV_FMT_QCOW2);
    assert_int_equal(info.cluster_size, 512);
    assert_int_equal(info.qcow2_version, 3);
    check_clean(n);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("b1.qcow2"));
    qemu_check_clean(tp("b2.qcow2"));
    if (qemu()) {
        int fd = open(tp("b.raw"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
        assert_int_equal(write(fd, shadow, size), (ssize_t)size);
        close(fd);
        assert_int_equal(sh("qemu-img compare -q -f raw -F qcow2 %s %s", tp("b.raw"),
                            tp("b2.qcow2")), 0);
    }
    free(shadow);
    free(data);
}

static void test_backing_loop_and_rebase(void **st)
{
    bv_error *err = NULL;
    create("l1.qcow2", 1 << 20, 65536, NULL);
    create("l2.qcow2", 1 << 20, 65536, "l1.qcow2");
    assert_int_equal(bv_image_rebase_unsafe(tp("l1.qcow2"), NULL, "l2.qcow2", BV_FMT_QCOW2,
                                            NULL), 0);
    assert_int_equal(open_err("l2.qcow2", true, &err), -ELOOP);
    assert_non_null(strstr(err->msg, "loop"));
    bv_error_free(err);
    err = NULL;
    /* rebase -u back to no backing: opens again */
    assert_int_equal(bv_image_rebase_unsafe(tp("l1.qcow2"), NULL, NULL, BV_FMT_NONE, NULL), 0);
    bv_node *n = open_img("l2.qcow2", true);
    assert_null(bv_node_backing(bv_node_backing(n)));
    bv_node_close(n, NULL);
    qemu_check_clean(tp("l1.qcow2"));
    /* no recorded backing format: refused, not probed */
    if (qemu()) {
        sh("qemu-img rebase -u -b l1.qcow2 -F qcow2 %s", tp("l2.qcow2"));
        assert_int_equal(bv_image_rebase_unsafe(tp("l2.qcow2"), NULL, "l1.qcow2", BV_FMT_QCOW2,
                                                NULL), 0);
        assert_int_equal(sh("qemu-img info %s | grep -q 'backing file format: qcow2'",
                            tp("l2.qcow2")), 0);
    }
}

static void test_root_confinement(void **st)
{
    bv_error *err = NULL;
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/jail", dir);
    mkdir(sub, 0755);
    create("outside.qcow2", 1 << 20, 65536, NULL);
    create("jail/in.qcow2", 1 << 20, 65536, "../outside.qcow2");
    bv_node *n = NULL;
    struct bv_root *root = NULL;
    assert_int_equal(bv_root_open(sub, &root, NULL), 0);
    struct bv_open_opts o = { .path = "in.qcow2", .root = root, .read_only = true };
    assert_int_equal(bv_node_open(&o, &n, &err), -EACCES);
    bv_error_free(err);
    err = NULL;
    o.no_backing = true;
    assert_int_equal(bv_node_open(&o, &n, &err), 0);
    bv_node_close(n, NULL);
    o.path = tp("jail/in.qcow2");            /* absolute client path */
    assert_int_equal(bv_node_open(&o, &n, &err), -EACCES);
    bv_error_free(err);
    bv_root_close(root);
}

/* ---- malformed images ---- */

static void write_file(const char *name, const void *buf, size_t len)
{
    int fd = open(tp(name), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static void patch(const char *name, uint64_t off, const void *buf, size_t len)
{
    int fd = open(tp(name), O_WRONLY);
    assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
}

static void patch64(const char *name, uint64_t off, uint64_t v)
{
    uint8_t b[8];
    st_be64(b, v);
    patch(name, off, b, 8);
}

static void patch32(const char *name, uint64_t off, uint32_t v)
{
    uint8_t b[4];
    st_be32(b, v);
    patch(name, off, b, 4);
}

static void expect_open_fails(const char *name, int err_no, const char *text)
{
    bv_error *err = NULL;
    assert_int_equal(open_err(name, true, &err), -err_no);
    assert_non_null(err);
    if (text && !strstr(err->msg, text))
        fail_msg("message '%s' lacks '%s'", err->msg, text);
    bv_error_free(err);
}

static void test_malformed_headers(void **st)
{
    write_file("trunc.qcow2", "QFI\xfb\0\0\0\3", 8);
    bv_error *err = NULL;
    bv_node *n = NULL;
    struct bv_open_opts o = { .path = tp("trunc.qcow2"), .format = BV_FMT_QCOW2,
                              .read_only = true };
    assert_int_equal(bv_node_open(&o, &n, &err), -EINVAL);
    bv_error_free(err);
    struct { uint64_t off; int width; uint64_t val; int err_no; const char *text; } cases[] = {
        { 20, 32, 30, EINVAL, "cluster size" },             /* cluster_bits */
        { 20, 32, 8, EINVAL, "cluster size" },
        { 36, 32, 0x7fffffff, EFBIG, "L1 table too large" },
        { 36, 32, 0, EINVAL, "L1 table is too small" },
        { 40, 64, 0x30001, EINVAL, "L1 table offset" },
        { 48, 64, 0x10200, EINVAL, "reference count table" },
        { 48, 64, 1ULL << 50, EINVAL, "reference count table" },
        { 56, 32, 100000, EINVAL, "Reference count table too large" },
        { 72, 64, 1ULL << 5, ENOTSUP, "Unknown incompatible feature: 20" },
        { 72, 64, 1ULL << 2, ENOTSUP, "external data" },
        { 96, 32, 7, EINVAL, "refcount width" },
        { 100, 32, 100, EINVAL, "header length" },
        { 16, 32, 5000, EINVAL, "backing file name" },       /* backing size */
        { 4, 32, 4, ENOTSUP, "version" },
        { 32, 32, 1, ENOTSUP, "encrypted" },
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        create("bad.qcow2", 64 << 20, 65536, NULL);
        if (cases[i].off == 16)
            patch64("bad.qcow2", 8, 0x200);
        if (cases[i].width == 32)
            patch32("bad.qcow2", cases[i].off, (uint32_t)cases[i].val);
        else
            patch64("bad.qcow2", cases[i].off, cases[i].val);
        expect_open_fails("bad.qcow2", cases[i].err_no, cases[i].text);
    }
    /* absurd virtual size */
    create("bad.qcow2", 64 << 20, 65536, NULL);
    patch64("bad.qcow2", 24, 1ULL << 62);
    expect_open_fails("bad.qcow2", EINVAL, "too large");
    /* corrupt bit: read-only fine, read-write refused */
    create("bad.qcow2", 1 << 20, 65536, NULL);
    patch64("bad.qcow2", 72, 2);
    assert_int_equal(open_err("bad.qcow2", true, NULL), 0);
    err = NULL;
    assert_int_equal(open_err("bad.qcow2", false, &err), -EACCES);
    assert_non_null(strstr(err->msg, "Image is corrupt; cannot be opened read/write"));
    bv_error_free(err);
    /* header extension length running off the cluster */
    create("bad.qcow2", 1 << 20, 65536, NULL);
    patch32("bad.qcow2", 112, 0x12345678);
    patch32("bad.qcow2", 116, 0x100000);
    expect_open_fails("bad.qcow2", EINVAL, "extension");
}

static void test_corrupt_tables(void **st)
{
    uint8_t buf[4096];
    bv_error *err = NULL;
    memset(buf, 7, sizeof(buf));
    create("ct.qcow2", 1 << 20, 65536, NULL);
    bv_node *n = open_img("ct.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, NULL), 0);
    bv_node_close(n, NULL);
    /* layout: header 0, reftable 0x10000, refblock 0x20000, L1 0x30000, L2 0x40000 */
    patch64("ct.qcow2", 0x30000, 0x8000000000040200ULL);        /* unaligned L2 */
    n = open_img("ct.qcow2", true);
    assert_int_equal(bv_node_pread(n, buf, 512, 0, &err), -EIO);
    assert_int_equal(err->kind, BV_ERR_CORRUPT);
    bv_error_free(err);
    err = NULL;
    bv_node_close(n, NULL);
    patch64("ct.qcow2", 0x30000, 0x8000000100000000ULL);        /* L2 past EOF */
    n = open_img("ct.qcow2", true);
    assert_int_equal(bv_node_pread(n, buf, 512, 0, &err), -EIO);
    assert_int_equal(err->kind, BV_ERR_CORRUPT);
    bv_error_free(err);
    err = NULL;
    bv_node_close(n, NULL);
    patch64("ct.qcow2", 0x30000, 0x8000000000040000ULL);
    patch64("ct.qcow2", 0x40000, (1ULL << 62) | 0x7000000ULL);  /* compressed past EOF */
    n = open_img("ct.qcow2", true);
    assert_int_equal(bv_node_pread(n, buf, 512, 0, &err), -EIO);
    assert_int_equal(err->kind, BV_ERR_CORRUPT);
    bv_error_free(err);
    bv_node_close(n, NULL);
}

/* ---- check and repair ---- */

static void test_check_leak_and_corruption(void **st)
{
    uint8_t buf[65536];
    memset(buf, 9, sizeof(buf));
    create("ck.qcow2", 1 << 20, 65536, NULL);
    bv_node *n = open_img("ck.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, NULL), 0);
    bv_node_close(n, NULL);
    /* refblock at 0x20000, u16 entries: cluster 6 gets refcount 1 (a leak) */
    uint8_t one[2] = { 0, 1 };
    patch("ck.qcow2", 0x20000 + 2 * 6, one, 2);
    /* ...inside the file: a refcount past its end is no cluster's (qemu-img check agrees) */
    assert_int_equal(truncate(tp("ck.qcow2"), 0x70000), 0);
    n = open_img("ck.qcow2", true);
    struct bv_check_result res;
    assert_int_equal(bv_image_check(n, false, &res, NULL), 0);
    assert_int_equal(res.leaks, 1);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.nmessages, 1);
    assert_string_equal(res.messages[0], "Leaked cluster 6 refcount=1 reference=0");
    assert_int_equal(res.allocated_clusters, 1);
    assert_int_equal(res.total_clusters, 16);
    assert_int_equal(res.image_end_offset, 0x60000);
    bv_check_result_free(&res);
    bv_node_close(n, NULL);
    n = open_img("ck.qcow2", false);
    assert_int_equal(bv_image_check(n, true, &res, NULL), 0);
    assert_int_equal(res.leaks_fixed, 1);
    bv_check_result_free(&res);
    check_clean(n);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("ck.qcow2"));
    /* data cluster 5 with refcount 0: two corruptions, qemu-img's words */
    uint8_t zero[2] = { 0, 0 };
    patch("ck.qcow2", 0x20000 + 2 * 5, zero, 2);
    n = open_img("ck.qcow2", true);
    assert_int_equal(bv_image_check(n, false, &res, NULL), 0);
    assert_int_equal(res.corruptions, 2);
    bool a = false, b = false;
    for (unsigned i = 0; i < res.nmessages; i++) {
        a |= strcmp(res.messages[i], "ERROR cluster 5 refcount=0 reference=1") == 0;
        b |= strcmp(res.messages[i], "ERROR OFLAG_COPIED data cluster: "
                    "l2_entry=8000000000050000 refcount=0") == 0;
    }
    assert_true(a && b);
    bv_check_result_free(&res);
    bv_node_close(n, NULL);
}

/* ---- resize, refcount widths, reftable growth ---- */

static void test_truncate(void **st)
{
    bv_error *err = NULL;
    uint8_t buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    create("tr.qcow2", 1 << 20, 512, NULL);                     /* L1: 32 entries */
    bv_node *n = open_img("tr.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, NULL), 0);
    assert_int_equal(bv_node_truncate(n, 1000, true, &err), -EINVAL);
    assert_non_null(strstr(err->msg, "multiple of 512"));
    bv_error_free(err);
    assert_int_equal(bv_node_truncate(n, 64 << 20, false, NULL), 0);
    assert_int_equal(bv_node_size(n), 64 << 20);
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), (64 << 20) - 4096, 0, NULL), 0);
    check_clean(n);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("tr.qcow2"));
    n = open_img("tr.qcow2", false);
    uint8_t rb[4096];
    assert_int_equal(bv_node_pread(n, rb, 4096, (64 << 20) - 4096, NULL), 0);
    assert_memory_equal(rb, buf, 4096);
    assert_int_equal(bv_node_truncate(n, 512 << 10, true, NULL), 0);
    assert_int_equal(bv_node_pread(n, rb, 4096, 0, NULL), 0);
    assert_memory_equal(rb, buf, 4096);
    check_clean(n);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("tr.qcow2"));
}

/* Growing over a longer backing file: the new area reads as zeros, as
 * QEMU's truncate makes it (found by fuzz_qcow2_write; before, the backing
 * file's bytes showed through, and so did what a COW had copied past the
 * old end into the last cluster). */
static void assert_zeros(bv_node *n, uint64_t off, uint64_t len)
{
    uint8_t *buf = malloc(len), *zero = calloc(1, len);
    assert_int_equal(bv_node_pread(n, buf, len, off, NULL), 0);
    assert_memory_equal(buf, zero, len);
    free(buf);
    free(zero);
}

static void test_truncate_over_longer_backing(void **st)
{
    const uint64_t bsize = 2 << 20, old = 508 << 10;     /* old end inside a 64 KiB cluster */
    uint8_t *data = malloc(bsize);
    memset(data, 0x77, bsize);
    create("trb.qcow2", bsize, 4096, NULL);
    bv_node *n = open_img("trb.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, data, bsize, 0, 0, NULL), 0);
    bv_node_close(n, NULL);
    create("trt.qcow2", old, 65536, "trb.qcow2");
    n = open_img("trt.qcow2", false);
    memset(data, 0x11, 4096);
    assert_int_equal(bv_node_pwrite(n, data, 4096, 448 << 10, 0, NULL), 0);  /* COW of the tail */
    assert_int_equal(bv_node_truncate(n, 1536 << 10, false, NULL), 0);
    assert_zeros(n, old, (1536 << 10) - old);
    assert_int_equal(bv_node_truncate(n, 256 << 10, true, NULL), 0);      /* shrink, regrow */
    assert_int_equal(bv_node_truncate(n, 3 << 20, false, NULL), 0);       /* past the backing */
    assert_zeros(n, 256 << 10, (3 << 20) - (256 << 10));
    uint8_t rb[4096], want[4096];
    memset(want, 0x77, sizeof(want));                 /* below the shrink: still the backing */
    assert_int_equal(bv_node_pread(n, rb, 4096, 0, NULL), 0);
    assert_memory_equal(rb, want, 4096);
    check_clean(n);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("trt.qcow2"));
    n = open_img("trt.qcow2", true);
    assert_zeros(n, 256 << 10, (3 << 20) - (256 << 10));
    bv_node_close(n, NULL);
    free(data);
}

/* Refcounts that call metadata free (found by fuzz_qcow2_write): the
 * header's refcount is 0, so the first allocation, a new L2 table, got host
 * offset 0, the L1 entry then read as "no table" and the write dereferenced
 * NULL.  An allocation that lands on metadata is refused as corruption. */
static void test_alloc_over_metadata(void **st)
{
    uint8_t b[8], buf[512];
    create("ovl.qcow2", 1 << 20, 512, NULL);
    int fd = open(tp("ovl.qcow2"), O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, 8, 48), 8);                  /* refcount_table_offset */
    assert_int_equal(pread(fd, b, 8, (off_t)ld_be64(b)), 8);   /* first refcount block */
    close(fd);
    patch("ovl.qcow2", ld_be64(b), "\0\0", 2);                 /* cluster 0: refcount 0 */
    bv_node *n = open_img("ovl.qcow2", false);
    bv_error *err = NULL;
    memset(buf, 0x3c, sizeof(buf));
    assert_true(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, &err) < 0);
    assert_non_null(err);
    assert_int_equal(err->kind, BV_ERR_CORRUPT);
    assert_non_null(strstr(err->msg, "qcow2_header"));
    bv_error_free(err);
    bv_node_close(n, NULL);
}

/* A write that fails part way has changed metadata for its first part:
 * close must still write it back (found by fuzz_qcow2_write: after a flush,
 * a compressed write that reached an allocated cluster failed, the flush at
 * close was skipped as "nothing written", and the first part's clusters
 * leaked). */
static void test_failed_write_is_flushed(void **st)
{
    const uint64_t clen = 702976;                 /* 1373 clusters, compressed */
    uint8_t *buf = malloc(clen);
    for (uint64_t i = 0; i < clen; i += 512)
        memset(buf + i, (int)(i / 512), 512);
    create("fw.qcow2", 1049088, 512, NULL);
    bv_node *n = open_img("fw.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, buf, 373525, 297997, BV_WRITE_FUA, NULL), 0);
    assert_int_equal(bv_node_pwrite(n, buf, 1037, 847994, 0, NULL), 0);
    assert_int_equal(bv_node_flush(n, NULL), 0);
    /* clusters 0..581 compressed, then the allocated cluster 582 fails it */
    assert_true(bv_node_pwrite(n, buf, clen, 0, BV_WRITE_COMPRESSED, NULL) < 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
    n = open_img("fw.qcow2", false);
    check_clean(n);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("fw.qcow2"));
    free(buf);
}

static void test_refcount_widths_and_growth(void **st)
{
    if (!qemu())
        skip();
    static const int widths[] = { 1, 2, 8, 32, 64 };
    uint8_t *buf = malloc(4 << 20);
    fill(buf, 4 << 20, 5);
    for (unsigned i = 0; i < 5; i++) {
        sh("qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=%d %s 8M",
           widths[i], tp("rw.qcow2"));
        bv_node *n = open_img("rw.qcow2", false);
        /* 4 MiB at 512 B clusters: new refblocks and a grown reftable */
        assert_int_equal(bv_node_pwrite(n, buf, 4 << 20, 1 << 20, 0, NULL), 0);
        assert_int_equal(bv_node_discard(n, 1 << 20, 2 << 20, NULL), 0);
        assert_int_equal(bv_node_pwrite(n, buf, 1 << 20, 6 << 20, 0, NULL), 0);
        check_clean(n);
        bv_node_close(n, NULL);
        qemu_check_clean(tp("rw.qcow2"));
        assert_int_equal(sh("qemu-io -c 'read -P 0 2M 1M' %s >/dev/null", tp("rw.qcow2")), 0);
    }
    free(buf);
}

static void test_qemu_v2_and_compressed_images(void **st)
{
    if (!qemu())
        skip();
    sh("qemu-img create -q -f qcow2 -o compat=0.10 %s 4M", tp("v2.qcow2"));
    sh("qemu-io -c 'write -P 0x11 0 1M' %s >/dev/null", tp("v2.qcow2"));
    sh("qemu-img create -q -f raw %s 4M && qemu-io -f raw -c 'write -P 0x55 1M 2M' %s >/dev/null",
       tp("c.raw"), tp("c.raw"));
    sh("qemu-img convert -c -O qcow2 %s %s", tp("c.raw"), tp("c.qcow2"));
    bv_node *n = open_img("c.qcow2", true);
    uint8_t *b = malloc(4 << 20);
    assert_int_equal(bv_node_pread(n, b, 4 << 20, 0, NULL), 0);
    for (size_t i = 0; i < (4u << 20); i++)
        if (b[i] != ((i >= (1u << 20) && i < (3u << 20)) ? 0x55 : 0))
            fail_msg("byte %zu is %02x", i, b[i]);
    bv_node_close(n, NULL);
    n = open_img("v2.qcow2", false);
    struct bv_image_info info;
    assert_int_equal(bv_node_info(n, &info, NULL), 0);
    assert_int_equal(info.qcow2_version, 2);
    memset(b, 0x77, 100000);
    assert_int_equal(bv_node_pwrite(n, b, 100000, 500000, 0, NULL), 0);
    assert_int_equal(bv_node_discard(n, 65536, 0, NULL), 0);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("v2.qcow2"));
    assert_int_equal(sh("qemu-io -c 'read -P 0 0 64k' -c 'read -P 0x11 64k 400000' "
                        "-c 'read -P 0x77 500000 100000' %s | grep -q fail", tp("v2.qcow2")),
                     256);
    free(b);
}

/* ---- blkdebug events: flush fires only after writes (qemu-semantics §7.4) ---- */

static void test_blkdebug_events(void **st)
{
    uint8_t buf[65536];
    memset(buf, 3, sizeof(buf));
    create("ev.qcow2", 1 << 20, 65536, NULL);
    struct bv_blkdebug_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.n_set_state = 1;
    cfg.set_state[0] = (struct bv_blkdebug_set_state){ BV_EV_FLUSH_TO_DISK, 1, 2 };
    cfg.n_inject_error = 1;
    cfg.inject_error[0] = (struct bv_blkdebug_inject_error){
        .event = BV_EV_READ_AIO, .error = EIO, .state = 2,
        .offset = BV_BLKDEBUG_ANY_OFFSET, .once = true };
    bv_node *n = NULL;
    struct bv_open_opts o = { .path = tp("ev.qcow2"), .filters = BV_FILTERS_BLKDEBUG(&cfg) };
    assert_int_equal(bv_node_open(&o, &n, NULL), 0);
    assert_int_equal(bv_node_flush(n, NULL), 0);             /* nothing written: no event */
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, NULL), 0);
    assert_int_equal(bv_node_pread(n, buf, 512, 0, NULL), 0);
    assert_int_equal(bv_node_pread(n, buf, 512, 65536, NULL), 0);   /* unallocated: no I/O */
    assert_int_equal(bv_node_flush(n, NULL), 0);             /* state 1 -> 2 */
    assert_int_equal(bv_node_pread(n, buf, 512, 65536, NULL), 0);   /* still no read_aio */
    assert_int_equal(bv_node_pread(n, buf, 512, 0, NULL), -EIO);
    assert_int_equal(bv_node_pread(n, buf, 512, 0, NULL), 0);       /* once */
    assert_int_equal(bv_node_close(n, NULL), 0);
}

/* ---- concurrency: writers on shared and adjacent clusters, readers alongside ---- */

#define CC_THREADS   4
#define CC_CS        4096u
#define CC_SIZE      (2u << 20)
#define CC_SLICED    128u            /* clusters [0, 128): each writer owns a slice of each */
#define CC_RUNS_END  384u            /* clusters [128, 384): interleaved unaligned runs */
#define CC_CHUNK     (3 * CC_CS + 1500)

struct cc_phase {
    bv_node *n;
    const uint8_t *before, *after;   /* what the image reads as before / after the phase */
    bool compress;                   /* also write clusters [CC_RUNS_END, end) compressed */
    atomic_bool writers_done;
    atomic_int failures;
};

struct cc_thread {
    struct cc_phase *ph;
    unsigned id;
};

static void cc_fail(struct cc_phase *ph, const char *what, uint64_t off)
{
    if (atomic_fetch_add(&ph->failures, 1) == 0)
        fprintf(stderr, "concurrency: %s at %llu\n", what, (unsigned long long)off);
}

static void cc_write(struct cc_phase *ph, uint64_t off, uint64_t len, int flags)
{
    if (bv_node_pwrite(ph->n, ph->after + off, len, off, flags, NULL) != 0)
        cc_fail(ph, "write failed", off);
}

/* Writer t: its slice of every sliced cluster (odd writers walk backwards),
 * every CC_THREADS-th unaligned run, every CC_THREADS-th compressed cluster. */
static void *cc_writer(void *arg)
{
    struct cc_thread *t = arg;
    struct cc_phase *ph = t->ph;
    const uint64_t slice = CC_CS / CC_THREADS;
    for (unsigned i = 0; i < CC_SLICED; i++) {
        unsigned c = t->id & 1 ? CC_SLICED - 1 - i : i;
        cc_write(ph, (uint64_t)c * CC_CS + t->id * slice, slice, 0);
    }
    const uint64_t start = (uint64_t)CC_SLICED * CC_CS, end = (uint64_t)CC_RUNS_END * CC_CS;
    for (uint64_t off = start + t->id * CC_CHUNK; off < end; off += CC_THREADS * CC_CHUNK)
        cc_write(ph, off, end - off < CC_CHUNK ? end - off : CC_CHUNK, 0);
    for (uint64_t c = CC_RUNS_END + t->id; ph->compress && c < CC_SIZE / CC_CS; c += CC_THREADS)
        cc_write(ph, c * CC_CS, CC_CS, BV_WRITE_COMPRESSED);
    return NULL;
}

/* Readers: every byte must read as its old or its new value, never anything else. */
static void *cc_reader(void *arg)
{
    struct cc_thread *t = arg;
    struct cc_phase *ph = t->ph;
    uint8_t *buf = malloc(5 * CC_CS);
    unsigned seed = t->id;
    while (buf && !atomic_load(&ph->writers_done)) {
        uint64_t len = 1 + rand_r(&seed) % (5 * CC_CS);
        uint64_t off = rand_r(&seed) % (CC_SIZE - len);
        if (bv_node_pread(ph->n, buf, len, off, NULL) != 0) {
            cc_fail(ph, "read failed", off);
            break;
        }
        for (uint64_t i = 0; i < len; i++) {
            if (buf[i] != ph->before[off + i] && buf[i] != ph->after[off + i]) {
                cc_fail(ph, "read neither old nor new data", off + i);
                break;
            }
        }
    }
    free(buf);
    return NULL;
}

static void cc_run_phase(struct cc_phase *ph)
{
    pthread_t w[CC_THREADS], rd[2];
    struct cc_thread wt[CC_THREADS], rt[2];
    atomic_store(&ph->writers_done, false);
    atomic_store(&ph->failures, 0);
    for (unsigned i = 0; i < 2; i++) {
        rt[i] = (struct cc_thread){ ph, i + 100 };
        assert_int_equal(pthread_create(&rd[i], NULL, cc_reader, &rt[i]), 0);
    }
    for (unsigned i = 0; i < CC_THREADS; i++) {
        wt[i] = (struct cc_thread){ ph, i };
        assert_int_equal(pthread_create(&w[i], NULL, cc_writer, &wt[i]), 0);
    }
    for (unsigned i = 0; i < CC_THREADS; i++)
        pthread_join(w[i], NULL);
    atomic_store(&ph->writers_done, true);
    for (unsigned i = 0; i < 2; i++)
        pthread_join(rd[i], NULL);
    assert_int_equal(atomic_load(&ph->failures), 0);
    assert_reads(ph->n, ph->after, CC_SIZE);
}

/* The image's content after a phase: model with the written parts replaced. */
static void cc_model(uint8_t *model, unsigned seed, bool compress)
{
    uint8_t *data = malloc(CC_SIZE);
    fill(data, CC_SIZE, seed);
    for (uint64_t c = CC_RUNS_END; c < CC_SIZE / CC_CS; c += 4)    /* incompressible */
        for (uint64_t i = 0; i < CC_CS; i++)
            data[c * CC_CS + i] = (uint8_t)((c * 2654435761u + i * 40503u) >> 7 ^ i);
    uint64_t written = compress ? CC_SIZE : (uint64_t)CC_RUNS_END * CC_CS;
    memcpy(model, data, written);
    free(data);
}

static void test_concurrent_writes(void **st)
{
    uint8_t *before = calloc(1, CC_SIZE), *after = calloc(1, CC_SIZE);
    create("ccb.qcow2", CC_SIZE, 65536, NULL);
    bv_node *n = open_img("ccb.qcow2", false);
    fill(before, CC_SIZE * 3 / 4, 40);                    /* the last quarter stays zeros */
    assert_int_equal(bv_node_pwrite(n, before, CC_SIZE * 3 / 4, 0, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
    create("cct.qcow2", 0, CC_CS, "ccb.qcow2");
    n = open_img("cct.qcow2", false);
    /* phase 1: allocating writes (COW over the backing file) and compressed writes */
    memcpy(after, before, CC_SIZE);
    cc_model(after, 41, true);
    struct cc_phase ph = { .n = n, .before = before, .after = after, .compress = true };
    cc_run_phase(&ph);
    /* phase 2: the same clusters again, now owned: in place */
    memcpy(before, after, CC_SIZE);
    cc_model(after, 42, false);
    ph.compress = false;
    cc_run_phase(&ph);
    check_clean(n);
    assert_int_equal(bv_node_close(n, NULL), 0);
    qemu_check_clean(tp("cct.qcow2"));
    n = open_img("cct.qcow2", true);
    assert_reads(n, after, CC_SIZE);
    bv_node_close(n, NULL);
    free(before);
    free(after);
}

/* The same writers and readers over an extended-L2 image (16 KiB clusters,
 * 512-byte subclusters): writers share clusters and, at unaligned run ends,
 * subclusters.  Every cluster first gets one allocated subcluster, so phase 1
 * writes into owned clusters with unallocated subclusters (the fill path),
 * phase 2 in place. */
static void test_concurrent_writes_extl2(void **st)
{
    uint8_t *before = calloc(1, CC_SIZE), *after = calloc(1, CC_SIZE);
    create("ccxb.qcow2", CC_SIZE, 65536, NULL);
    bv_node *n = open_img("ccxb.qcow2", false);
    fill(before, CC_SIZE * 3 / 4, 50);
    assert_int_equal(bv_node_pwrite(n, before, CC_SIZE * 3 / 4, 0, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
    bv_error *err = NULL;
    struct bv_create_opts o = { .path = tp("ccxt.qcow2"), .format = BV_FMT_QCOW2,
                                .cluster_size = 16384, .backing = "ccxb.qcow2",
                                .backing_format = BV_FMT_QCOW2, .extended_l2 = true };
    assert_int_equal(bv_image_create(&o, &err), 0);
    n = open_img("ccxt.qcow2", false);
    for (uint64_t off = 0; off < CC_SIZE; off += 16384)
        assert_int_equal(bv_node_pwrite(n, before + off + 1024, 512, off + 1024, 0, NULL), 0);
    memcpy(after, before, CC_SIZE);
    cc_model(after, 51, false);
    struct cc_phase ph = { .n = n, .before = before, .after = after, .compress = false };
    cc_run_phase(&ph);
    memcpy(before, after, CC_SIZE);
    cc_model(after, 52, false);
    cc_run_phase(&ph);
    check_clean(n);
    assert_int_equal(bv_node_close(n, NULL), 0);
    qemu_check_clean(tp("ccxt.qcow2"));
    n = open_img("ccxt.qcow2", true);
    assert_reads(n, after, CC_SIZE);
    bv_node_close(n, NULL);
    free(before);
    free(after);
}

/* A data write that would land on metadata fails and marks the image corrupt. */
static void test_overlap_guard(void **st)
{
    uint8_t buf[4096], b8[8];
    memset(buf, 0x5a, sizeof(buf));
    create("ov.qcow2", 1 << 20, 65536, NULL);
    bv_node *n = open_img("ov.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
    /* point guest cluster 0 (COPIED) at the L1 table's cluster */
    int fd = open(tp("ov.qcow2"), O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b8, 8, 40), 8);
    uint64_t l1 = ld_be64(b8);
    assert_int_equal(pread(fd, b8, 8, (off_t)l1), 8);
    uint64_t l2 = ld_be64(b8) & 0x00fffffffffffe00ULL;
    st_be64(b8, l1 | (1ULL << 63));
    assert_int_equal(pwrite(fd, b8, 8, (off_t)l2), 8);
    close(fd);
    n = open_img("ov.qcow2", false);
    bv_error *err = NULL;
    assert_int_equal(bv_node_pwrite(n, buf, 512, 0, 0, &err), -EIO);
    assert_non_null(strstr(err->msg, "overlaps with active L1 table"));
    bv_error_free(err);
    assert_int_equal(bv_node_pwrite(n, buf, 512, 65536, 0, NULL), -EIO);   /* failed node */
    bv_node_close(n, NULL);
    err = NULL;
    assert_int_equal(open_err("ov.qcow2", false, &err), -EACCES);         /* corrupt bit */
    bv_error_free(err);
}

/* ---- extended L2 (subclusters) and zstd ---- */

static void create_ext(const char *name, uint64_t size, uint32_t cs, const char *backing,
                       bool extl2, bool zstd)
{
    bv_error *err = NULL;
    struct bv_create_opts o = { .path = tp(name), .format = BV_FMT_QCOW2, .size = size,
                                .cluster_size = cs, .backing = backing,
                                .backing_format = backing ? BV_FMT_QCOW2 : BV_FMT_NONE,
                                .extended_l2 = extl2, .compression_zstd = zstd };
    int r = bv_image_create(&o, &err);
    if (r)
        fprintf(stderr, "create: %s\n", err->msg);
    assert_int_equal(r, 0);
}

/* The 128-bit L2 entry of guest cluster ci (first L2 table) read from the file. */
static void raw_l2_entry(const char *name, uint64_t ci, uint64_t *ent, uint64_t *bm)
{
    uint8_t b[16];
    int fd = open(tp(name), O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, 8, 40), 8);
    assert_int_equal(pread(fd, b, 8, (off_t)ld_be64(b)), 8);
    uint64_t l2 = ld_be64(b) & 0x00fffffffffffe00ULL;
    assert_int_equal(pread(fd, b, 16, (off_t)(l2 + 16 * ci)), 16);
    *ent = ld_be64(b);
    *bm = ld_be64(b + 8);
    close(fd);
}

static void assert_status(bv_node *n, uint64_t off, uint64_t len, uint64_t pnum, int flags)
{
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, off, len, &bs, NULL), 0);
    assert_int_equal(bs.pnum, pnum);
    assert_int_equal(bs.flags, flags);
}

static void qemu_compare_shadow(const char *img, const uint8_t *shadow, uint64_t size)
{
    if (!qemu())
        return;
    int fd = open(tp("shadow.raw"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_int_equal(write(fd, shadow, size), (ssize_t)size);
    close(fd);
    assert_int_equal(sh("qemu-img compare -q -f raw -F qcow2 %s %s", tp("shadow.raw"), tp(img)),
                     0);
}

/* 64 KiB clusters, 2 KiB subclusters over a backing file: untouched
 * subclusters read from the backing file, written ones from this layer, and
 * only the touched subcluster is filled (from the backing file) and marked. */
static void test_extl2_subclusters(void **st)
{
    const uint64_t size = 1 << 20;
    uint8_t *shadow = malloc(size), buf[4096];
    fill(shadow, size, 7);
    create("xb.qcow2", size, 65536, NULL);
    bv_node *n = open_img("xb.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, shadow, size, 0, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
    create_ext("xt.qcow2", 0, 65536, "xb.qcow2", true, false);
    n = open_img("xt.qcow2", false);
    struct bv_image_info info;
    assert_int_equal(bv_node_info(n, &info, NULL), 0);
    assert_true(info.extended_l2);
    assert_int_equal(info.incompatible_features, 1u << 4);

    /* a fresh cluster: only subcluster 2 ([4096, 6144)) is written */
    memset(buf, 0xa1, 100);
    assert_int_equal(bv_node_pwrite(n, buf, 100, 4196, 0, NULL), 0);
    memcpy(shadow + 4196, buf, 100);
    assert_status(n, 0, size, 4096, 0);
    assert_status(n, 4096, size - 4096, 2048, BV_BS_DATA | BV_BS_ALLOCATED);
    assert_status(n, 6144, size - 6144, size - 6144, 0);   /* backing until the end */
    /* the owned cluster: an unallocated subcluster partly written is filled */
    memset(buf, 0xb2, 10);
    assert_int_equal(bv_node_pwrite(n, buf, 10, 10000, 0, NULL), 0);
    memcpy(shadow + 10000, buf, 10);
    /* zeroing whole subclusters sets their zero bits: owned cluster 0 (10, 11) and
     * unallocated cluster 5 over the backing file (1); the odd bytes are written */
    assert_int_equal(bv_node_write_zeroes(n, 4096, 20480, 0, NULL), 0);
    memset(shadow + 20480, 0, 4096);
    assert_status(n, 20480, 8192, 4096, BV_BS_ZERO | BV_BS_ALLOCATED);
    assert_int_equal(bv_node_write_zeroes(n, 2048, 5 * 65536 + 2048, 0, NULL), 0);
    memset(shadow + 5 * 65536 + 2048, 0, 2048);
    assert_status(n, 5 * 65536 + 2048, 4096, 2048, BV_BS_ZERO | BV_BS_ALLOCATED);
    assert_int_equal(bv_node_write_zeroes(n, 100, 5 * 65536 + 30000, 0, NULL), 0);
    memset(shadow + 5 * 65536 + 30000, 0, 100);
    /* whole unallocated cluster zeroed over a backing file: all zero bits, no host */
    assert_int_equal(bv_node_write_zeroes(n, 65536, 65536, 0, NULL), 0);
    memset(shadow + 65536, 0, 65536);
    assert_status(n, 65536, 65536, 65536, BV_BS_ZERO | BV_BS_ALLOCATED);
    /* a discard past the write falls back to zeros too, reads stay right */
    assert_int_equal(bv_node_discard(n, 131072, 131072, NULL), 0);
    memset(shadow + 131072, 0, 131072);
    assert_reads(n, shadow, size);
    check_clean(n);
    assert_int_equal(bv_node_close(n, NULL), 0);

    uint64_t ent, bm;
    raw_l2_entry("xt.qcow2", 0, &ent, &bm);
    assert_int_equal(bm, (1u << 2) | (1u << 4) | (3ULL << 42));   /* 2, 4 data; 10, 11 zero */
    assert_true(ent & (1ULL << 63));                    /* COPIED, with a host cluster */
    assert_int_not_equal(ent & 0x00fffffffffffe00ULL, 0);
    raw_l2_entry("xt.qcow2", 1, &ent, &bm);
    assert_int_equal(ent, 0);
    assert_int_equal(bm, 0xffffffff00000000ULL);
    raw_l2_entry("xt.qcow2", 5, &ent, &bm);
    assert_int_not_equal(ent, 0);             /* the 100 bytes allocated the cluster */
    assert_int_equal(bm, (1ULL << 33) | (1u << 14));
    n = open_img("xt.qcow2", true);
    assert_reads(n, shadow, size);
    bv_node_close(n, NULL);
    qemu_check_clean(tp("xt.qcow2"));
    qemu_compare_shadow("xt.qcow2", shadow, size);

    /* zeroing an owned cluster keeps its host cluster and sets every zero bit */
    n = open_img("xt.qcow2", false);
    assert_int_equal(bv_node_write_zeroes(n, 65536, 0, 0, NULL), 0);
    memset(shadow, 0, 65536);
    assert_status(n, 0, 65536, 65536, BV_BS_ZERO | BV_BS_ALLOCATED);
    assert_reads(n, shadow, size);
    assert_int_equal(bv_node_close(n, NULL), 0);
    raw_l2_entry("xt.qcow2", 0, &ent, &bm);
    assert_int_not_equal(ent & 0x00fffffffffffe00ULL, 0);
    assert_int_equal(bm, 0xffffffff00000000ULL);
    qemu_check_clean(tp("xt.qcow2"));
    qemu_compare_shadow("xt.qcow2", shadow, size);
    free(shadow);
}

/* A subcluster both allocated and zero is corruption, named as such. */
static void test_extl2_bad_bitmap(void **st)
{
    uint8_t buf[512], b8[8];
    memset(buf, 3, sizeof(buf));
    create_ext("xc.qcow2", 1 << 20, 65536, NULL, true, false);
    bv_node *n = open_img("xc.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
    uint64_t ent, bm;
    raw_l2_entry("xc.qcow2", 0, &ent, &bm);
    assert_int_equal(bm, 1);
    int fd = open(tp("xc.qcow2"), O_RDWR);
    assert_int_equal(pread(fd, b8, 8, 40), 8);
    assert_int_equal(pread(fd, b8, 8, (off_t)ld_be64(b8)), 8);
    uint64_t l2 = ld_be64(b8) & 0x00fffffffffffe00ULL;
    st_be64(b8, 1 | (1ULL << 32));
    assert_int_equal(pwrite(fd, b8, 8, (off_t)(l2 + 8)), 8);
    close(fd);
    n = open_img("xc.qcow2", true);
    bv_error *err = NULL;
    assert_int_equal(bv_node_pread(n, buf, 512, 0, &err), -EIO);
    assert_non_null(strstr(err->msg, "Invalid cluster entry found"));
    bv_error_free(err);
    bv_node_close(n, NULL);
}

/* zstd: header byte 104 and incompatible bit 3; compressed clusters round-trip. */
static void test_zstd_compressed(void **st)
{
    const uint32_t cs = 65536;
    uint8_t *data = malloc(cs * 4), *back = malloc(cs * 4), b[112];
    memset(data, 0x5e, cs * 2);
    fill(data + cs * 2, cs * 2, 12);
    create_ext("z.qcow2", 1 << 20, cs, NULL, false, true);
    bv_node *n = open_img("z.qcow2", false);
    assert_int_equal(bv_node_pwrite(n, data, cs * 4, 0, BV_WRITE_COMPRESSED, NULL), 0);
    assert_status(n, 0, cs, cs, BV_BS_DATA | BV_BS_ALLOCATED | BV_BS_COMPRESSED);
    assert_int_equal(bv_node_pread(n, back, cs * 4, 0, NULL), 0);
    assert_memory_equal(back, data, cs * 4);
    struct bv_image_info info;
    assert_int_equal(bv_node_info(n, &info, NULL), 0);
    assert_true(info.compression_zstd);
    check_clean(n);
    assert_int_equal(bv_node_close(n, NULL), 0);
    int fd = open(tp("z.qcow2"), O_RDWR);
    assert_int_equal(pread(fd, b, sizeof(b), 0), (ssize_t)sizeof(b));
    assert_int_equal(b[104], 1);
    assert_int_equal(ld_be64(b + 72), 1u << 3);
    /* the type without its feature bit is refused, with why */
    st_be64(b + 72, 0);
    assert_int_equal(pwrite(fd, b + 72, 8, 72), 8);
    close(fd);
    bv_error *err = NULL;
    assert_int_equal(open_err("z.qcow2", true, &err), -EINVAL);
    assert_string_equal(err->msg, "qcow2: compression type 1 does not match the compression "
                                  "type incompatible feature bit");
    bv_error_free(err);
    if (qemu()) {        /* qemu's own zstd clusters read back the same */
        fd = open(tp("z.raw"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
        assert_int_equal(write(fd, data, cs * 4), (ssize_t)cs * 4);
        close(fd);
        assert_int_equal(sh("qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd %s %s",
                            tp("z.raw"), tp("zq.qcow2")), 0);
        n = open_img("zq.qcow2", true);
        assert_int_equal(bv_node_pread(n, back, cs * 4, 0, NULL), 0);
        assert_memory_equal(back, data, cs * 4);
        bv_node_close(n, NULL);
    }
    free(data);
    free(back);
}

/* Where qemu-img refuses the variants, with its words. */
static void test_extl2_zstd_create_refusals(void **st)
{
    bv_error *err = NULL;
    struct bv_create_opts o = { .path = tp("r.qcow2"), .format = BV_FMT_QCOW2, .size = 1 << 20,
                                .cluster_size = 8192, .extended_l2 = true };
    assert_int_equal(bv_image_create(&o, &err), -EINVAL);
    assert_string_equal(err->msg, "Extended L2 entries are only supported with cluster sizes "
                                  "of at least 16384 bytes");
    bv_error_free(err);
    err = NULL;
    o = (struct bv_create_opts){ .path = tp("r.qcow2"), .format = BV_FMT_QCOW2, .size = 1 << 20,
                                 .compat_v2 = true, .compression_zstd = true };
    assert_int_equal(bv_image_create(&o, &err), -EINVAL);
    assert_non_null(strstr(err->msg, "Non-zlib compression type is only supported with "
                                     "compatibility level 1.1"));
    bv_error_free(err);
}

static int setup(void **st)
{
    snprintf(dir, sizeof(dir), "/tmp/bvq2XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    have_qemu = system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") == 0;
    return 0;
}

static int teardown(void **st)
{
    return sh("rm -rf %s", dir) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_512),
        cmocka_unit_test(test_roundtrip_4k),
        cmocka_unit_test(test_roundtrip_64k),
        cmocka_unit_test(test_roundtrip_2m),
        cmocka_unit_test(test_block_status_sparse),
        cmocka_unit_test(test_backing_chain),
        cmocka_unit_test(test_backing_loop_and_rebase),
        cmocka_unit_test(test_root_confinement),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_corrupt_tables),
        cmocka_unit_test(test_check_leak_and_corruption),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_truncate_over_longer_backing),
        cmocka_unit_test(test_alloc_over_metadata),
        cmocka_unit_test(test_failed_write_is_flushed),
        cmocka_unit_test(test_refcount_widths_and_growth),
        cmocka_unit_test(test_qemu_v2_and_compressed_images),
        cmocka_unit_test(test_blkdebug_events),
        cmocka_unit_test(test_concurrent_writes),
        cmocka_unit_test(test_overlap_guard),
        cmocka_unit_test(test_extl2_subclusters),
        cmocka_unit_test(test_extl2_bad_bitmap),
        cmocka_unit_test(test_zstd_compressed),
        cmocka_unit_test(test_extl2_zstd_create_refusals),
        cmocka_unit_test(test_concurrent_writes_extl2),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    if (failed == 0 && oracle_missed) {
        fprintf(stderr, "qemu-img/qemu-io not installed: %u checks against them not run, "
                "reporting skipped\n", oracle_missed);
        return 77;
    }
    return failed;
}
