/* blkdebug: configuration checks, QEMU's rule/state semantics, and iotest 124's scenario. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bv/blkdebug.h"
#include "bv/image.h"

#define MIB (1024 * 1024)

static char dir[64];

static const char *path_of(const char *name)
{
    static char p[160];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return p;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/bvblkdebugXXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void make_image(const char *name, enum bv_format fmt, uint64_t size)
{
    bv_error *err = NULL;
    struct bv_create_opts o = { .path = path_of(name), .format = fmt, .size = size };
    int r = bv_image_create(&o, &err);
    assert_int_equal(r, 0);
    assert_null(err);
}

static bv_node *open_with(const char *name, enum bv_format fmt,
                          const struct bv_blkdebug_config *cfg)
{
    bv_error *err = NULL;
    bv_node *n = NULL;
    struct bv_open_opts o = { .path = path_of(name), .format = fmt,
                              .filters = BV_FILTERS_BLKDEBUG(cfg) };
    int r = bv_node_open(&o, &n, &err);
    if (err)
        fprintf(stderr, "open: %s\n", err->msg);
    assert_int_equal(r, 0);
    return n;
}

static uint32_t state_of(bv_node *n)
{
    struct bv_blkdebug_status st;
    assert_int_equal(bv_blkdebug_query(n, &st, NULL), 0);
    return st.state;
}

static struct bv_blkdebug_status status_of(bv_node *n)
{
    struct bv_blkdebug_status st;
    assert_int_equal(bv_blkdebug_query(n, &st, NULL), 0);
    return st;
}

/* Assert that r/err describe a failure with errno e and message msg, then free err. */
static void expect_error(int r, bv_error *err, int e, const char *msg)
{
    assert_int_equal(r, -e);
    assert_non_null(err);
    assert_int_equal(err->err, e);
    assert_string_equal(err->msg, msg);
    bv_error_free(err);
}

static int do_read(bv_node *n, uint64_t off, uint64_t len, bv_error **err)
{
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    int r = bv_node_pread(n, buf, len, off, err);
    free(buf);
    return r;
}

static int do_write(bv_node *n, uint64_t off, uint64_t len, uint8_t fill, bv_error **err)
{
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    memset(buf, fill, len);
    int r = bv_node_pwrite(n, buf, len, off, 0, err);
    free(buf);
    return r;
}

static void read_ok(bv_node *n, uint64_t off, uint64_t len)
{
    bv_error *err = NULL;
    int r = do_read(n, off, len, &err);
    if (err)
        fprintf(stderr, "read %llu+%llu: %s\n", (unsigned long long)off,
                (unsigned long long)len, err->msg);
    assert_int_equal(r, 0);
}

static void read_fails(bv_node *n, uint64_t off, uint64_t len, int e, const char *msg)
{
    bv_error *err = NULL;
    int r = do_read(n, off, len, &err);
    expect_error(r, err, e, msg);
}

static void write_ok(bv_node *n, uint64_t off, uint64_t len)
{
    assert_int_equal(do_write(n, off, len, 0x5a, NULL), 0);
}

/* ---------------- configuration ---------------- */

static void expect_invalid(const struct bv_blkdebug_config *cfg, const char *msg)
{
    bv_error *err = NULL;
    int r = bv_blkdebug_config_validate(cfg, &err);
    expect_error(r, err, EINVAL, msg);
}

static void test_validate(void **state)
{
    (void)state;
    static struct bv_blkdebug_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(bv_blkdebug_config_validate(&cfg, NULL), 0);
    expect_invalid(NULL, "no blkdebug configuration given");

    struct bv_blkdebug_inject_error *ie = bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO);
    assert_non_null(ie);
    assert_int_equal(ie->error, EIO);
    assert_int_equal(ie->state, 0);
    assert_true(ie->offset == UINT64_MAX);
    assert_int_equal(ie->iotypes, BV_BLKDEBUG_IO_DEFAULT);
    assert_false(ie->once);
    assert_int_equal(bv_blkdebug_config_validate(&cfg, NULL), 0);

    ie->event = BV_EV__MAX;
    expect_invalid(&cfg, "inject_error[0]: unknown event 48");
    ie->event = BV_EV_READ_AIO;
    ie->error = -5;
    expect_invalid(&cfg, "inject_error[0]: errno -5 is outside 1..4095");
    ie->error = 4096;
    expect_invalid(&cfg, "inject_error[0]: errno 4096 is outside 1..4095");
    ie->error = 0;                                /* 0 means EIO */
    assert_int_equal(bv_blkdebug_config_validate(&cfg, NULL), 0);
    ie->iotypes = 0x41;
    expect_invalid(&cfg, "inject_error[0]: unknown iotype bits 0x40");
    ie->iotypes = 0;

    assert_int_equal(bv_blkdebug_add_set_state(&cfg, BV_EV_FLUSH_TO_DISK, 1, 0, NULL), 0);
    expect_invalid(&cfg, "set_state[0]: new_state must be at least 1");
    cfg.set_state[0].new_state = 2;
    cfg.set_state[0].event = (enum bv_block_event)-1;
    expect_invalid(&cfg, "set_state[0]: unknown event -1");
    cfg.set_state[0].event = BV_EV_FLUSH_TO_DISK;
    assert_int_equal(bv_blkdebug_config_validate(&cfg, NULL), 0);

    while (bv_blkdebug_add_inject_error(&cfg, BV_EV_WRITE_AIO))
        ;
    assert_int_equal(cfg.n_inject_error, BV_BLKDEBUG_MAX_RULES);
    cfg.n_inject_error = 65;
    expect_invalid(&cfg, "too many inject_error rules (65, at most 64)");
    cfg.n_inject_error = 0;
    cfg.n_set_state = 64;
    bv_error *err = NULL;
    int r = bv_blkdebug_add_set_state(&cfg, BV_EV_NONE, 0, 1, &err);
    expect_error(r, err, ENOSPC, "too many set_state rules (at most 64)");
    cfg.n_set_state = 100;
    expect_invalid(&cfg, "too many set_state rules (100, at most 64)");
}

static void test_open_refuses_bad_config(void **state)
{
    (void)state;
    make_image("bad.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_set_state(&cfg, BV_EV_READ_AIO, 0, 0, NULL);
    bv_error *err = NULL;
    bv_node *n = NULL;
    struct bv_open_opts o = { .path = path_of("bad.raw"), .format = BV_FMT_RAW,
                              .filters = BV_FILTERS_BLKDEBUG(&cfg) };
    int r = bv_node_open(&o, &n, &err);
    assert_null(n);
    expect_error(r, err, EINVAL, "set_state[0]: new_state must be at least 1");
}

/* The typed filter list of bv_open_opts: kinds checked by the driver table, stacking. */
static void test_filter_list(void **state)
{
    (void)state;
    make_image("list.raw", BV_FMT_RAW, MIB);
    assert_string_equal(bv_filter_name(BV_FILTER_BLKDEBUG), "blkdebug");
    assert_null(bv_filter_name(BV_FILTER_NONE));
    struct bv_filter_list list = { .n = 1 };                     /* kind NONE */
    struct bv_open_opts o = { .path = path_of("list.raw"), .format = BV_FMT_RAW,
                              .filters = &list };
    bv_error *err = NULL;
    bv_node *n = NULL;
    int r = bv_node_open(&o, &n, &err);
    expect_error(r, err, EINVAL, "unknown filter kind 0");
    list.f[0].kind = BV_FILTER_BLKDEBUG;                         /* no configuration */
    err = NULL;
    r = bv_node_open(&o, &n, &err);
    expect_error(r, err, EINVAL, "no blkdebug configuration given");
    list.n = BV_MAX_FILTERS + 1;
    err = NULL;
    r = bv_node_open(&o, &n, &err);
    expect_error(r, err, EINVAL, "too many filters (5, at most 4)");
    assert_null(n);

    /* Two blkdebug layers: f[1] sits under the format node and gets its events. */
    struct bv_blkdebug_config quiet = { 0 }, armed = { 0 };
    bv_blkdebug_add_inject_error(&armed, BV_EV_READ_AIO);
    list = (struct bv_filter_list){ .n = 2, .f = {
        { .kind = BV_FILTER_BLKDEBUG, .blkdebug = &quiet },
        { .kind = BV_FILTER_BLKDEBUG, .blkdebug = &armed } } };
    assert_int_equal(bv_node_open(&o, &n, NULL), 0);
    read_fails(n, 0, 512, EIO, "Input/output error");
    assert_int_equal(status_of(n).failures, 1);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_query_without_blkdebug(void **state)
{
    (void)state;
    make_image("plain.raw", BV_FMT_RAW, MIB);
    bv_node *n = open_with("plain.raw", BV_FMT_RAW, NULL);
    struct bv_blkdebug_status st;
    bv_error *err = NULL;
    int r = bv_blkdebug_query(n, &st, &err);
    expect_error(r, err, ENOENT, "the node has no blkdebug layer");
    assert_int_equal(bv_node_close(n, NULL), 0);
}

/* ---------------- rule semantics (raw: file offset == guest offset) ---------------- */

static void test_armed_rule_fails_everything(void **state)
{
    (void)state;
    make_image("all.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO);
    bv_node *n = open_with("all.raw", BV_FMT_RAW, &cfg);
    /* Not armed until read_aio: writes succeed. */
    write_ok(n, 0, 4096);
    assert_int_equal(status_of(n).active_rules, 0);
    read_fails(n, 0, 512, EIO, "Input/output error");
    read_fails(n, 8192, 512, EIO, "Input/output error");
    /* Armed, and the default iotypes include writes and flushes. */
    bv_error *err = NULL;
    int r = do_write(n, 0, 512, 1, &err);
    expect_error(r, err, EIO, "Input/output error");
    /* ...but not block status. */
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, 0, 4096, &bs, NULL), 0);
    struct bv_blkdebug_status st = status_of(n);
    assert_int_equal(st.state, 1);
    assert_int_equal(st.inject_rules, 1);
    assert_int_equal(st.active_rules, 1);
    assert_int_equal(st.failures, 3);
    err = NULL;
    r = bv_node_close(n, &err);      /* the close-time flush fails too, as in QEMU */
    expect_error(r, err, EIO, "Input/output error");
}

static void test_once(void **state)
{
    (void)state;
    make_image("once.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    struct bv_blkdebug_inject_error *ie = bv_blkdebug_add_inject_error(&cfg, BV_EV_WRITE_AIO);
    ie->once = true;
    ie->error = ENOSPC;
    bv_node *n = open_with("once.raw", BV_FMT_RAW, &cfg);
    bv_error *err = NULL;
    int r = do_write(n, 0, 4096, 1, &err);
    expect_error(r, err, ENOSPC, "No space left on device");
    write_ok(n, 0, 4096);
    read_ok(n, 0, 4096);
    struct bv_blkdebug_status st = status_of(n);
    assert_int_equal(st.inject_rules, 0);
    assert_int_equal(st.active_rules, 0);
    assert_int_equal(st.failures, 1);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_state_applied_after_walk(void **state)
{
    (void)state;
    make_image("walk.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO)->state = 2;
    bv_blkdebug_add_set_state(&cfg, BV_EV_READ_AIO, 1, 2, NULL);
    bv_blkdebug_add_set_state(&cfg, BV_EV_READ_AIO, 1, 7, NULL);   /* first match wins */
    bv_node *n = open_with("walk.raw", BV_FMT_RAW, &cfg);
    assert_int_equal(state_of(n), 1);
    read_ok(n, 0, 512);               /* walked in state 1: nothing armed, then state 2 */
    assert_int_equal(state_of(n), 2);
    read_fails(n, 0, 512, EIO, "Input/output error");
    assert_int_equal(state_of(n), 2);
    assert_int_equal(bv_node_close(n, NULL), 0);   /* nothing written: no flush */
}

static void test_any_state(void **state)
{
    (void)state;
    make_image("any.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    struct bv_blkdebug_inject_error *ie = bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO);
    ie->once = true;
    ie->iotypes = BV_BLKDEBUG_IO_READ;
    bv_blkdebug_add_set_state(&cfg, BV_EV_WRITE_AIO, 0, 3, NULL);
    bv_node *n = open_with("any.raw", BV_FMT_RAW, &cfg);
    write_ok(n, 0, 512);
    assert_int_equal(state_of(n), 3);
    read_fails(n, 0, 512, EIO, "Input/output error");
    read_ok(n, 0, 512);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_active_list_reset_per_event(void **state)
{
    (void)state;
    make_image("reset.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO)->offset = 65536;
    bv_blkdebug_add_inject_error(&cfg, BV_EV_PWRITEV_ZERO)->error = ENOSPC;
    bv_node *n = open_with("reset.raw", BV_FMT_RAW, &cfg);
    read_ok(n, 0, 4096);                                  /* armed, offset not covered */
    read_fails(n, 65536, 512, EIO, "Input/output error");
    /* write_aio has no inject rule: the active set is kept. */
    write_ok(n, 0, 4096);
    bv_error *err = NULL;
    int r = do_write(n, 65536 - 512, 1024, 1, &err);
    expect_error(r, err, EIO, "Input/output error");
    /* pwritev_zero arms its own rule and disarms the read rule. */
    err = NULL;
    r = bv_node_write_zeroes(n, 4096, 0, 0, &err);
    expect_error(r, err, ENOSPC, "No space left on device");
    assert_int_equal(status_of(n).active_rules, 1);
    err = NULL;
    r = do_write(n, 0, 512, 1, &err);                     /* any offset now */
    expect_error(r, err, ENOSPC, "No space left on device");
    read_fails(n, 65536, 512, EIO, "Input/output error"); /* read_aio re-arms the first */
    read_ok(n, 0, 512);
    assert_int_equal(status_of(n).active_rules, 1);
    bv_node_close(n, NULL);
}

static void test_offset_matching(void **state)
{
    (void)state;
    make_image("off.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO)->offset = 4096;
    bv_node *n = open_with("off.raw", BV_FMT_RAW, &cfg);
    read_ok(n, 0, 4096);
    read_fails(n, 0, 4097, EIO, "Input/output error");
    read_fails(n, 4096, 1, EIO, "Input/output error");
    read_fails(n, 4095, 2, EIO, "Input/output error");
    read_ok(n, 4097, 10);
    read_ok(n, 8192, 65536);
    assert_int_equal(status_of(n).failures, 3);
    bv_node_close(n, NULL);
}

static void test_iotypes(void **state)
{
    (void)state;
    make_image("io.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    struct bv_blkdebug_inject_error *ie = bv_blkdebug_add_inject_error(&cfg, BV_EV_WRITE_AIO);
    ie->iotypes = BV_BLKDEBUG_IO_FLUSH;
    ie->error = EROFS;
    ie = bv_blkdebug_add_inject_error(&cfg, BV_EV_WRITE_AIO);
    ie->iotypes = BV_BLKDEBUG_IO_BLOCK_STATUS | BV_BLKDEBUG_IO_WRITE_ZEROES;
    ie->error = EPERM;
    bv_node *n = open_with("io.raw", BV_FMT_RAW, &cfg);
    write_ok(n, 0, 4096);             /* arms both; writes and reads are not theirs */
    write_ok(n, 4096, 4096);
    read_ok(n, 0, 8192);
    bv_error *err = NULL;
    int r = bv_node_flush(n, &err);
    expect_error(r, err, EROFS, "Read-only file system");
    struct bv_block_status bs;
    err = NULL;
    r = bv_node_block_status(n, 0, 4096, &bs, &err);
    expect_error(r, err, EPERM, "Operation not permitted");
    /* raw discards zero the file, so they count as write-zeroes at this layer */
    err = NULL;
    r = bv_node_discard(n, 4096, 0, &err);
    expect_error(r, err, EPERM, "Operation not permitted");
    err = NULL;
    r = bv_node_close(n, &err);       /* the pending flush still fails */
    expect_error(r, err, EROFS, "Read-only file system");
}

struct reader {
    bv_node *n;
    int failures;
};

static void *reader_main(void *p)
{
    struct reader *rd = p;
    for (int i = 0; i < 50; i++) {
        bv_error *err = NULL;
        if (do_read(rd->n, (uint64_t)(i % 16) * 4096, 4096, &err) < 0)
            rd->failures++;
        bv_error_free(err);
    }
    return NULL;
}

static void test_once_under_threads(void **state)
{
    (void)state;
    make_image("thr.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO)->once = true;
    bv_node *n = open_with("thr.raw", BV_FMT_RAW, &cfg);
    pthread_t t[4];
    struct reader rd[4];
    for (int i = 0; i < 4; i++) {
        rd[i] = (struct reader){ n, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, reader_main, &rd[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += rd[i].failures;
    }
    assert_int_equal(total, 1);
    assert_int_equal(status_of(n).failures, 1);
    bv_node_close(n, NULL);
}

/* ---------------- iotest 124's rules, end to end ---------------- */

static void seed_config(struct bv_blkdebug_config *cfg, bool immediately)
{
    memset(cfg, 0, sizeof(*cfg));
    assert_int_equal(bv_blkdebug_add_set_state(cfg, BV_EV_FLUSH_TO_DISK, 1, 2, NULL), 0);
    struct bv_blkdebug_inject_error *ie = bv_blkdebug_add_inject_error(cfg, BV_EV_READ_AIO);
    ie->error = 5;
    ie->state = 2;
    ie->once = true;
    ie->immediately = immediately;
    assert_int_equal(bv_blkdebug_config_validate(cfg, NULL), 0);
}

/* A "backup": read every 64 KiB of the image; returns the number of failed reads. */
static int backup_reads(bv_node *n, bv_error **first)
{
    int failed = 0;
    for (uint64_t off = 0; off < bv_node_size(n); off += 65536) {
        bv_error *err = NULL;
        if (do_read(n, off, 65536, &err) < 0 && failed++ == 0 && first)
            bv_error_propagate(first, &err);
        bv_error_free(err);
    }
    return failed;
}

static void run_seed_scenario(const char *name, enum bv_format fmt, bool immediately)
{
    make_image(name, fmt, MIB);
    struct bv_blkdebug_config cfg;
    seed_config(&cfg, immediately);
    bv_node *n = open_with(name, fmt, &cfg);
    write_ok(n, 0, 65536);                         /* data to back up */
    write_ok(n, 3 * 65536, 65536);
    assert_int_equal(state_of(n), 1);
    assert_int_equal(backup_reads(n, NULL), 0);    /* anchor backup, state 1 */
    assert_int_equal(state_of(n), 1);
    /* The writes above were not flushed yet: this flush moves to state 2.  A
     * second flush with nothing written must not fire flush_to_disk. */
    assert_int_equal(bv_node_flush(n, NULL), 0);
    assert_int_equal(state_of(n), 2);
    assert_int_equal(bv_node_flush(n, NULL), 0);
    write_ok(n, 65536, 65536);                     /* hmp_io_writes + flush */
    assert_int_equal(bv_node_flush(n, NULL), 0);
    assert_int_equal(state_of(n), 2);
    bv_error *err = NULL;
    assert_int_equal(backup_reads(n, &err), 1);    /* first incremental: one EIO */
    expect_error(-EIO, err, EIO, "Input/output error");
    struct bv_blkdebug_status st = status_of(n);
    assert_int_equal(st.inject_rules, 0);
    assert_int_equal(st.failures, 1);
    write_ok(n, 5 * 65536, 65536);                 /* later flush in state 2: no change */
    assert_int_equal(bv_node_flush(n, NULL), 0);
    assert_int_equal(state_of(n), 2);
    assert_int_equal(backup_reads(n, NULL), 0);    /* second incremental succeeds */
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_seed_raw(void **state)
{
    (void)state;
    run_seed_scenario("seed.raw", BV_FMT_RAW, false);
    run_seed_scenario("seed-imm.raw", BV_FMT_RAW, true);
}

static void test_flush_without_writes_fires_nothing(void **state)
{
    (void)state;
    make_image("fl.raw", BV_FMT_RAW, MIB);
    struct bv_blkdebug_config cfg;
    seed_config(&cfg, false);
    bv_node *n = open_with("fl.raw", BV_FMT_RAW, &cfg);
    assert_int_equal(bv_node_flush(n, NULL), 0);
    assert_int_equal(bv_node_flush(n, NULL), 0);
    assert_int_equal(state_of(n), 1);
    read_ok(n, 0, 65536);
    assert_int_equal(bv_node_close(n, NULL), 0);
    /* A fresh open: write then close; the close-time flush fires flush_to_disk. */
    n = open_with("fl.raw", BV_FMT_RAW, &cfg);
    write_ok(n, 0, 512);
    assert_int_equal(state_of(n), 1);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

static void test_seed_qcow2(void **state)
{
    (void)state;
    run_seed_scenario("seed.qcow2", BV_FMT_QCOW2, false);
    run_seed_scenario("seed-imm.qcow2", BV_FMT_QCOW2, true);
}

/* offset is a host (file) offset: for qcow2, where the guest's cluster is stored. */
static void test_qcow2_offset_is_host_offset(void **state)
{
    (void)state;
    make_image("host.qcow2", BV_FMT_QCOW2, MIB);
    bv_node *n = open_with("host.qcow2", BV_FMT_QCOW2, NULL);
    write_ok(n, 0, 65536);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, 0, 65536, &bs, NULL), 0);
    assert_true(bs.flags & BV_BS_DATA);
    uint64_t host = bs.host_offset;
    assert_true(host >= 65536);
    assert_int_equal(bv_node_close(n, NULL), 0);

    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO)->offset = 0;   /* guest 0, host header */
    n = open_with("host.qcow2", BV_FMT_QCOW2, &cfg);
    read_ok(n, 0, 65536);
    bv_node_close(n, NULL);
    cfg.inject_error[0].offset = host;
    n = open_with("host.qcow2", BV_FMT_QCOW2, &cfg);
    read_fails(n, 0, 512, EIO, "Input/output error");
    bv_node_close(n, NULL);
}

/* Unallocated qcow2 clusters do no I/O and fire no read_aio. */
static void test_qcow2_unallocated_fires_nothing(void **state)
{
    (void)state;
    make_image("unalloc.qcow2", BV_FMT_QCOW2, MIB);
    struct bv_blkdebug_config cfg = { 0 };
    bv_blkdebug_add_inject_error(&cfg, BV_EV_READ_AIO);
    bv_node *n = open_with("unalloc.qcow2", BV_FMT_QCOW2, &cfg);
    read_ok(n, 0, MIB);
    assert_int_equal(status_of(n).active_rules, 0);
    assert_int_equal(bv_node_close(n, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_open_refuses_bad_config),
        cmocka_unit_test(test_filter_list),
        cmocka_unit_test(test_query_without_blkdebug),
        cmocka_unit_test(test_armed_rule_fails_everything),
        cmocka_unit_test(test_once),
        cmocka_unit_test(test_state_applied_after_walk),
        cmocka_unit_test(test_any_state),
        cmocka_unit_test(test_active_list_reset_per_event),
        cmocka_unit_test(test_offset_matching),
        cmocka_unit_test(test_iotypes),
        cmocka_unit_test(test_once_under_threads),
        cmocka_unit_test(test_seed_raw),
        cmocka_unit_test(test_flush_without_writes_fires_nothing),
        cmocka_unit_test(test_seed_qcow2),
        cmocka_unit_test(test_qcow2_offset_is_host_offset),
        cmocka_unit_test(test_qcow2_unallocated_fires_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
