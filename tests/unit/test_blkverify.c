/* blkverify: the seed document's example, mirrored writes, exact mismatch reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bv/blkdebug.h"
#include "bv/blkverify.h"
#include "bv/image.h"

#define MIB (1024 * 1024)

static char dir[64];
static const enum bv_format fmt_raw = BV_FMT_RAW, fmt_qcow2 = BV_FMT_QCOW2;

static const char *path_of(const char *name)
{
    static char p[4][160];
    static unsigned next;
    char *s = p[next++ % 4];
    snprintf(s, sizeof(p[0]), "%s/%s", dir, name);
    return s;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/bvblkverifyXXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---------------- fixtures ---------------- */

/* A plain file of size bytes, all `fill`. */
static void make_raw_file(const char *name, uint64_t size, uint8_t fill)
{
    int fd = open(path_of(name), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    memset(buf, fill, size);
    assert_int_equal(pwrite(fd, buf, size, 0), (ssize_t)size);
    free(buf);
    close(fd);
}

/* Overwrite bytes of a plain file behind everyone's back. */
static void poke(const char *name, uint64_t off, uint64_t len, uint8_t val)
{
    int fd = open(path_of(name), O_WRONLY);
    assert_true(fd >= 0);
    for (uint64_t i = 0; i < len; i++)
        assert_int_equal(pwrite(fd, &val, 1, (off_t)(off + i)), 1);
    close(fd);
}

/* A fresh (all-zero) test image. */
static void make_test_image(const char *name, enum bv_format fmt, uint64_t size)
{
    struct bv_create_opts o = { .path = path_of(name), .format = fmt, .size = size };
    assert_int_equal(bv_image_create(&o, NULL), 0);
}

struct capture {
    int count;
    struct bv_blkverify_report last;
    char test_name[PATH_MAX], raw_name[PATH_MAX];
};

static void on_report(void *opaque, const struct bv_blkverify_report *r)
{
    struct capture *c = opaque;
    c->count++;
    c->last = *r;
    snprintf(c->test_name, sizeof(c->test_name), "%s", r->test_filename);
    snprintf(c->raw_name, sizeof(c->raw_name), "%s", r->raw_filename);
    c->last.test_filename = c->test_name;
    c->last.raw_filename = c->raw_name;
}

static bv_node *open_verify(const char *test, enum bv_format fmt, const char *raw,
                            struct capture *cap)
{
    struct bv_blkverify_opts o = {
        .test = { .path = path_of(test), .format = fmt },
        .raw = { .path = path_of(raw) },
        .report = on_report, .opaque = cap,
    };
    bv_node *n = NULL;
    bv_error *err = NULL;
    int r = bv_blkverify_open(&o, &n, &err);
    if (err)
        fprintf(stderr, "blkverify open: %s\n", err->msg);
    assert_int_equal(r, 0);
    memset(cap, 0, sizeof(*cap));
    return n;
}

static void read_ok(bv_node *n, uint64_t off, uint64_t len)
{
    uint8_t *buf = malloc(len);
    bv_error *err = NULL;
    int r = bv_node_pread(n, buf, len, off, &err);
    if (err)
        fprintf(stderr, "read: %s\n", err->msg);
    assert_int_equal(r, 0);
    free(buf);
}

/* The read must fail with EIO, a mismatch error at bad_off, and exactly msg. */
static void read_mismatch(bv_node *n, uint64_t off, uint64_t len, uint64_t bad_off,
                          const char *msg)
{
    uint8_t *buf = malloc(len);
    bv_error *err = NULL;
    int r = bv_node_pread(n, buf, len, off, &err);
    free(buf);
    assert_int_equal(r, -EIO);
    assert_non_null(err);
    assert_int_equal(err->err, EIO);
    assert_int_equal(err->kind, BV_ERR_MISMATCH);
    assert_int_equal(err->offset, bad_off);
    assert_string_equal(err->msg, msg);
    bv_error_free(err);
}

static void hex_of(char *out, uint8_t first, unsigned nfirst, unsigned total)
{
    for (unsigned i = 0; i < total; i++)
        snprintf(out + 2 * i, 3, "%02x", i < nfirst ? first : 0);
}

/* ---------------- the document's example ---------------- */

static void test_doc_example(void **state)
{
    enum bv_format fmt = *(const enum bv_format *)*state;
    make_raw_file("doc.raw", MIB, 0xcd);
    make_test_image("doc.test", fmt, MIB);
    struct capture cap;
    bv_node *n = open_verify("doc.test", fmt, "doc.raw", &cap);
    read_mismatch(n, 0, 4096, 0,
                  "blkverify: read offset=0 bytes=4096 contents mismatch in sector 0");
    assert_int_equal(cap.count, 1);
    const struct bv_blkverify_report *r = &cap.last;
    assert_int_equal(r->kind, BV_BLKVERIFY_CONTENTS);
    assert_int_equal(r->op, BV_BLKVERIFY_OP_READ);
    assert_int_equal(r->offset, 0);
    assert_int_equal(r->length, 4096);
    assert_int_equal(r->first_mismatch_offset, 0);
    assert_int_equal(r->first_mismatch_sector, 0);
    assert_int_equal(r->mismatched_bytes, 4096);
    assert_int_equal(r->extents_total, 1);
    assert_int_equal(r->nextents, 1);
    assert_int_equal(r->extents[0].offset, 0);
    assert_int_equal(r->extents[0].length, 4096);
    assert_int_equal(r->nsamples, 1);
    assert_int_equal(r->samples[0].offset, 0);
    assert_int_equal(r->samples[0].length, 16);
    assert_string_equal(r->samples[0].test_hex, "00000000000000000000000000000000");
    assert_string_equal(r->samples[0].raw_hex, "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    char real[PATH_MAX];
    assert_non_null(realpath(path_of("doc.test"), real));
    assert_string_equal(r->test_filename, real);
    assert_non_null(realpath(path_of("doc.raw"), real));
    assert_string_equal(r->raw_filename, real);
    /* QEMU 7.2's request: 64 KiB from 0 */
    read_mismatch(n, 0, 65536, 0,
                  "blkverify: read offset=0 bytes=65536 contents mismatch in sector 0");
    assert_int_equal(cap.count, 2);
    assert_int_equal(cap.last.mismatched_bytes, 65536);
    /* the node keeps serving: every request is checked again */
    read_mismatch(n, 1024, 512, 1024,
                  "blkverify: read offset=1024 bytes=512 contents mismatch in sector 2");
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_write_reaches_both(void **state)
{
    enum bv_format fmt = *(const enum bv_format *)*state;
    make_raw_file("w.raw", MIB, 0xcd);
    make_test_image("w.test", fmt, MIB);
    struct capture cap;
    bv_node *n = open_verify("w.test", fmt, "w.raw", &cap);
    uint8_t buf[8192];
    memset(buf, 0x11, sizeof(buf));
    assert_int_equal(bv_node_pwrite(n, buf, sizeof(buf), 0, 0, NULL), 0);
    read_ok(n, 0, 8192);
    read_ok(n, 512, 4096);
    read_mismatch(n, 0, 8192 + 512, 8192,
                  "blkverify: read offset=0 bytes=8704 contents mismatch in sector 16");
    assert_int_equal(cap.last.mismatched_bytes, 512);
    /* zeroes and discards are mirrored too (the raw side was 0xcd) */
    assert_int_equal(bv_node_write_zeroes(n, 65536, 65536, 0, NULL), 0);
    read_ok(n, 65536, 65536);
    assert_int_equal(bv_node_discard(n, 65536, 131072, NULL), 0);
    read_ok(n, 131072, 65536);
    assert_int_equal(bv_node_flush(n, NULL), 0);
    assert_int_equal(bv_node_flush(n, NULL), 0);
    assert_int_equal(cap.count, 1);
    assert_int_equal(bv_node_close(n, NULL), 0);

    /* each child on its own holds the write */
    const char *names[2] = { "w.test", "w.raw" };
    enum bv_format fmts[2] = { fmt, BV_FMT_RAW };
    for (int i = 0; i < 2; i++) {
        struct bv_open_opts o = { .path = path_of(names[i]), .format = fmts[i],
                                  .read_only = true };
        bv_node *c = NULL;
        uint8_t got[8192];
        assert_int_equal(bv_node_open(&o, &c, NULL), 0);
        assert_int_equal(bv_node_pread(c, got, sizeof(got), 0, NULL), 0);
        assert_memory_equal(got, buf, sizeof(got));
        bv_node_close(c, NULL);
    }
}

static void test_mismatch_in_sector_8(void **state)
{
    enum bv_format fmt = *(const enum bv_format *)*state;
    make_raw_file("s8.raw", MIB, 0);
    make_test_image("s8.test", fmt, MIB);
    poke("s8.raw", 4096 + 7, 1, 0xff);
    struct capture cap;
    bv_node *n = open_verify("s8.test", fmt, "s8.raw", &cap);
    read_mismatch(n, 0, 65536, 4103,
                  "blkverify: read offset=0 bytes=65536 contents mismatch in sector 8");
    const struct bv_blkverify_report *r = &cap.last;
    assert_int_equal(cap.count, 1);
    assert_int_equal(r->first_mismatch_offset, 4103);
    assert_int_equal(r->first_mismatch_sector, 8);
    assert_int_equal(r->mismatched_bytes, 1);
    assert_int_equal(r->extents_total, 1);
    assert_int_equal(r->nextents, 1);
    assert_int_equal(r->extents[0].offset, 4103);
    assert_int_equal(r->extents[0].length, 1);
    assert_int_equal(r->nsamples, 1);
    assert_int_equal(r->samples[0].offset, 4103);
    assert_int_equal(r->samples[0].length, 16);
    assert_string_equal(r->samples[0].test_hex, "00000000000000000000000000000000");
    assert_string_equal(r->samples[0].raw_hex, "ff000000000000000000000000000000");
    /* reads that avoid the bad byte succeed */
    read_ok(n, 0, 4096);
    read_ok(n, 4096, 7);
    read_ok(n, 4104, 65536);
    read_ok(n, 8192, MIB - 8192);
    assert_int_equal(cap.count, 1);
    /* a request of that byte alone: the sample stops at the request's end */
    read_mismatch(n, 4103, 1, 4103,
                  "blkverify: read offset=4103 bytes=1 contents mismatch in sector 8");
    assert_int_equal(cap.last.samples[0].length, 1);
    assert_string_equal(cap.last.samples[0].raw_hex, "ff");
    assert_string_equal(cap.last.samples[0].test_hex, "00");
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_extents_and_samples(void **state)
{
    enum bv_format fmt = *(const enum bv_format *)*state;
    make_raw_file("ex.raw", 2 * MIB, 0);
    make_test_image("ex.test", fmt, 2 * MIB);
    for (unsigned i = 0; i < 70; i++)                /* 70 separate 3-byte extents */
        poke("ex.raw", i * 128 + 5, 3, (uint8_t)(0xa0 + i % 16));
    poke("ex.raw", 20000, 1000, 0x77);               /* one long one */
    poke("ex.raw", MIB - 10, 20, 0x55);              /* across the 1 MiB compare chunk */
    struct capture cap;
    bv_node *n = open_verify("ex.test", fmt, "ex.raw", &cap);
    read_mismatch(n, 0, 2 * MIB, 5,
                  "blkverify: read offset=0 bytes=2097152 contents mismatch in sector 0");
    const struct bv_blkverify_report *r = &cap.last;
    assert_int_equal(r->mismatched_bytes, 70 * 3 + 1000 + 20);
    assert_int_equal(r->extents_total, 72);
    assert_int_equal(r->nextents, BV_BLKVERIFY_MAX_EXTENTS);
    for (unsigned i = 0; i < r->nextents; i++) {
        assert_int_equal(r->extents[i].offset, i * 128 + 5);
        assert_int_equal(r->extents[i].length, 3);
    }
    assert_int_equal(r->nsamples, BV_BLKVERIFY_MAX_SAMPLES);
    char want[33];
    for (unsigned i = 0; i < r->nsamples; i++) {
        assert_int_equal(r->samples[i].offset, i * 128 + 5);
        assert_int_equal(r->samples[i].length, 16);
        hex_of(want, (uint8_t)(0xa0 + i), 3, 16);
        assert_string_equal(r->samples[i].raw_hex, want);
        hex_of(want, 0, 0, 16);
        assert_string_equal(r->samples[i].test_hex, want);
    }
    /* later extents, seen through smaller requests */
    read_mismatch(n, 16384, 8192, 20000,
                  "blkverify: read offset=16384 bytes=8192 contents mismatch in sector 39");
    assert_int_equal(r->extents_total, 1);
    assert_int_equal(r->extents[0].offset, 20000);
    assert_int_equal(r->extents[0].length, 1000);
    assert_int_equal(r->mismatched_bytes, 1000);
    read_mismatch(n, MIB - 65536, 131072, MIB - 10,
                  "blkverify: read offset=983040 bytes=131072 contents mismatch in sector 2047");
    assert_int_equal(r->extents_total, 1);
    assert_int_equal(r->extents[0].offset, MIB - 10);
    assert_int_equal(r->extents[0].length, 20);
    hex_of(want, 0x55, 16, 16);
    assert_string_equal(r->samples[0].raw_hex, want);
    assert_int_equal(cap.count, 3);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

/* The whole 2 MiB read crosses the compare chunk inside one extent: merged. */
static void test_extent_merged_across_chunks(void **state)
{
    enum bv_format fmt = *(const enum bv_format *)*state;
    make_raw_file("mg.raw", 2 * MIB, 0);
    make_test_image("mg.test", fmt, 2 * MIB);
    poke("mg.raw", MIB - 10, 20, 0x55);
    struct capture cap;
    bv_node *n = open_verify("mg.test", fmt, "mg.raw", &cap);
    read_mismatch(n, 0, 2 * MIB, MIB - 10,
                  "blkverify: read offset=0 bytes=2097152 contents mismatch in sector 2047");
    assert_int_equal(cap.last.extents_total, 1);
    assert_int_equal(cap.last.extents[0].offset, MIB - 10);
    assert_int_equal(cap.last.extents[0].length, 20);
    assert_int_equal(cap.last.mismatched_bytes, 20);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

/* ---------------- return values, open errors, node API ---------------- */

static void test_return_value_mismatch(void **state)
{
    (void)state;
    make_raw_file("rv.raw", MIB, 0);
    make_raw_file("rv.test", MIB, 0);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO)->once = true;
    assert_int_equal(bv_blkdebug_config_validate(&cfg, NULL), 0);
    struct capture cap = { 0 };
    struct bv_blkverify_opts o = {
        .test = { .path = path_of("rv.test"), .format = BV_FMT_RAW,
                  .filters = BV_FILTERS_BLKDEBUG(&cfg) },
        .raw = { .path = path_of("rv.raw") },
        .report = on_report, .opaque = &cap,
    };
    bv_node *n = NULL;
    assert_int_equal(bv_blkverify_open(&o, &n, NULL), 0);
    uint8_t buf[4096];
    bv_error *err = NULL;
    assert_int_equal(bv_node_pread(n, buf, sizeof(buf), 0, &err), -EIO);
    assert_int_equal(err->kind, BV_ERR_MISMATCH);
    assert_string_equal(err->msg,
                        "blkverify: read offset=0 bytes=4096 return value mismatch -5 != 0");
    bv_error_free(err);
    assert_int_equal(cap.count, 1);
    assert_int_equal(cap.last.kind, BV_BLKVERIFY_RETURN_VALUE);
    assert_int_equal(cap.last.op, BV_BLKVERIFY_OP_READ);
    assert_int_equal(cap.last.test_ret, -5);
    assert_int_equal(cap.last.raw_ret, 0);
    assert_int_equal(cap.last.mismatched_bytes, 0);
    read_ok(n, 0, 4096);                             /* once: gone */
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void expect_open_error(const struct bv_blkverify_opts *o, int e, const char *msg)
{
    bv_node *n = (bv_node *)1;
    bv_error *err = NULL;
    int r = bv_blkverify_open(o, &n, &err);
    assert_int_equal(r, -e);
    assert_null(n);
    assert_non_null(err);
    if (strcmp(err->msg, msg) != 0)
        fail_msg("got '%s', want '%s'", err->msg, msg);
    bv_error_free(err);
}

static void test_open_errors(void **state)
{
    (void)state;
    make_raw_file("big.test", MIB, 0);
    make_raw_file("small.raw", MIB / 2, 0);
    char t[PATH_MAX], s[PATH_MAX], msg[3 * PATH_MAX];
    assert_non_null(realpath(path_of("big.test"), t));
    assert_non_null(realpath(path_of("small.raw"), s));
    struct bv_blkverify_opts o = {
        .test = { .path = path_of("big.test"), .format = BV_FMT_RAW },
        .raw = { .path = path_of("small.raw") },
    };
    snprintf(msg, sizeof(msg), "blkverify: raw image '%s' (524288 bytes) is smaller than the "
             "test image '%s' (1048576 bytes)", s, t);
    expect_open_error(&o, EINVAL, msg);

    o.raw.format = BV_FMT_QCOW2;
    expect_open_error(&o, EINVAL,
                      "blkverify: raw: the raw child must be a raw image, not qcow2");
    o.raw.format = BV_FMT_RAW;
    struct bv_blkdebug_config cfg = { 0 };
    o.raw.filters = BV_FILTERS_BLKDEBUG(&cfg);
    expect_open_error(&o, EINVAL,
                      "blkverify: raw: the raw child cannot have a blkdebug filter");
    o.raw.filters = NULL;

    o.test.path = path_of("missing.test");
    bv_error *err = NULL;
    bv_node *n = NULL;
    assert_int_equal(bv_blkverify_open(&o, &n, &err), -ENOENT);
    assert_null(n);
    assert_true(strncmp(err->msg, "blkverify: test: ", 17) == 0);
    bv_error_free(err);
    assert_int_equal(bv_blkverify_open(NULL, &n, NULL), -EINVAL);
}

static void test_node_api(void **state)
{
    enum bv_format fmt = *(const enum bv_format *)*state;
    make_raw_file("api.raw", 2 * MIB, 0);               /* bigger raw is fine */
    make_test_image("api.test", fmt, MIB);
    struct capture cap;
    bv_node *n = open_verify("api.test", fmt, "api.raw", &cap);
    assert_int_equal(bv_node_size(n), MIB);
    char real[PATH_MAX];
    assert_non_null(realpath(path_of("api.test"), real));
    assert_string_equal(bv_node_filename(n), real);
    assert_null(bv_node_backing(n));
    struct bv_image_info info;
    assert_int_equal(bv_node_info(n, &info, NULL), 0);
    assert_int_equal(info.format, fmt);
    assert_int_equal(info.virtual_size, MIB);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, 0, MIB, &bs, NULL), 0);
    assert_true(bs.pnum > 0);
    bv_error *err = NULL;
    assert_int_equal(bv_node_truncate(n, 2 * MIB, false, &err), -ENOTSUP);
    bv_error_free(err);
    err = NULL;
    uint8_t b[512] = { 0 };
    assert_int_equal(bv_node_pread(n, b, 512, MIB, &err), -EINVAL);   /* past the test's end */
    bv_error_free(err);
    read_ok(n, 0, MIB);
    assert_int_equal(cap.count, 0);
    assert_string_equal(bv_blkverify_op_name(BV_BLKVERIFY_OP_WRITE_ZEROES), "write_zeroes");
    assert_null(bv_blkverify_op_name((enum bv_blkverify_op)99));
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_read_only(void **state)
{
    (void)state;
    make_raw_file("ro.raw", MIB, 0);
    make_raw_file("ro.test", MIB, 0);
    struct bv_blkverify_opts o = {
        .test = { .path = path_of("ro.test"), .format = BV_FMT_RAW },
        .raw = { .path = path_of("ro.raw"), .read_only = true },
    };
    bv_node *n = NULL;
    assert_int_equal(bv_blkverify_open(&o, &n, NULL), 0);
    uint8_t b[512] = { 1 };
    assert_int_equal(bv_node_pwrite(n, b, 512, 0, 0, NULL), -EROFS);
    read_ok(n, 0, 4096);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

/* Each case on a raw and on a qcow2 test image. */
#define BOTH(fn)                                                               \
    { #fn "/raw", fn, NULL, NULL, (void *)&fmt_raw },                          \
    { #fn "/qcow2", fn, NULL, NULL, (void *)&fmt_qcow2 }

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_doc_example),
        BOTH(test_write_reaches_both),
        BOTH(test_mismatch_in_sector_8),
        BOTH(test_extents_and_samples),
        BOTH(test_extent_merged_across_chunks),
        BOTH(test_node_api),
        cmocka_unit_test(test_return_value_mismatch),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_read_only),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
