/*
 * test_iocmd: the qemu-io subset parser accepts exactly the documented
 * grammar, and the executor moves the right bytes through a target in
 * bounded chunks (checked against an in-memory target that records calls).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "bv/iocmd.h"

/* ---- parser ---- */

struct accept_case {
    const char *line;
    enum bv_iocmd_op op;
    uint64_t offset, length;
    bool has_pattern;
    uint8_t pattern;
    bool zero;
};

static const struct accept_case accepted[] = {
    { "write -P 0x41 0 512", BV_IOCMD_WRITE, 0, 512, true, 0x41, false },
    { "write -P0xd5 1M 32k", BV_IOCMD_WRITE, 1 << 20, 32 << 10, true, 0xd5, false },
    { "write -P 220 32M 124k", BV_IOCMD_WRITE, 32 << 20, 124 << 10, true, 220, false },
    { "  write\t-z  0x1000 4096 ", BV_IOCMD_WRITE, 4096, 4096, false, 0xcd, true },
    { "write 0 1", BV_IOCMD_WRITE, 0, 1, false, 0xcd, false },
    { "read -P 0 0 32736k", BV_IOCMD_READ, 0, 32736ULL << 10, true, 0, false },
    { "read 1G 1K", BV_IOCMD_READ, 1ULL << 30, 1024, false, 0xcd, false },
    { "read 2T 0", BV_IOCMD_READ, 2ULL << 40, 0, false, 0xcd, false },
    { "read 0XFF 1g", BV_IOCMD_READ, 255, 1ULL << 30, false, 0xcd, false },
    { "discard 64k 1m", BV_IOCMD_DISCARD, 65536, 1 << 20, false, 0xcd, false },
    { "flush", BV_IOCMD_FLUSH, 0, 0, false, 0xcd, false },
    { "write -P 0xab -P 0xcd 0 1", BV_IOCMD_WRITE, 0, 1, true, 0xcd, false },
};

static void test_parse_accepts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        const struct accept_case *c = &accepted[i];
        struct bv_iocmd cmd;
        bv_error *err = NULL;
        int r = bv_iocmd_parse(c->line, &cmd, &err);
        if (r != 0)
            fail_msg("'%s' refused: %s", c->line, err ? err->msg : "?");
        assert_int_equal(cmd.op, c->op);
        assert_int_equal(cmd.offset, c->offset);
        assert_int_equal(cmd.length, c->length);
        assert_int_equal(cmd.has_pattern, c->has_pattern);
        if (c->op == BV_IOCMD_WRITE && !c->zero)
            assert_int_equal(cmd.pattern, c->pattern);
        assert_int_equal(cmd.zero, c->zero);
    }
}

static const char *const rejected[] = {
    "", "   ", "bogus 0 1", "Write 0 1", "write", "write 0", "write 0 1 2",
    "write -P 256 0 1", "write -P -1 0 1", "write -P 0x 0 1", "write -P 0 1",
    "write -P", "write -z -P 1 0 1", "write -P 1 -z 0 1", "write -zz 0 1",
    "write -q 0 1", "read -z 0 1", "discard -P 1 0 1", "flush 0", "flush -z",
    "read 1.5M 1", "read -1 1", "read 0x1k 1", "read 1kk 1", "read 1e3 1",
    "read 0x 1", "read 1 1b", "read 1 1P", "read k 1", "read 0 1025M",
    "read 0 2G", "read 18446744073709551616 1", "read 0xffffffffffffffff 1",
    "read 16777216T 1", "read 0 -", "write 0 1 -P 1", "read 0 1 0 1 0 1 0 1 0",
    "read 0 1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
};

static void test_parse_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
        struct bv_iocmd cmd;
        bv_error *err = NULL;
        int r = bv_iocmd_parse(rejected[i], &cmd, &err);
        if (r != -EINVAL)
            fail_msg("'%s' accepted (r=%d)", rejected[i], r);
        assert_non_null(err);
        assert_true(strlen(err->msg) > 0);
        bv_error_free(err);
    }
}

static void test_parse_messages(void **state)
{
    (void)state;
    struct bv_iocmd cmd;
    bv_error *err = NULL;
    assert_int_equal(bv_iocmd_parse("bogus", &cmd, &err), -EINVAL);
    assert_string_equal(err->msg, "command \"bogus\" not found");
    bv_error_free(err);
    err = NULL;
    assert_int_equal(bv_iocmd_parse("write -P 256 0 1", &cmd, &err), -EINVAL);
    assert_string_equal(err->msg, "256 is not a valid pattern byte");
    bv_error_free(err);
    /* a long argument is quoted in part, never cut inside a UTF-8 sequence
     * (the text goes into a JSON reply; found by fuzz_json_body) */
    err = NULL;
    assert_int_equal(bv_iocmd_parse("write 0x0123456789abcdefg\xc3\xa9"
                                    "0123456789012345678901234567890123456789012345 1",
                                    &cmd, &err), -EINVAL);
    assert_string_equal(err->msg, "argument too long: '0x0123456789abcdefg...'");
    bv_error_free(err);
}

/* ---- executor against memory ---- */

#define MEM_SIZE (12u << 20)

struct mem {
    uint8_t *data;
    unsigned preads, pwrites, zeroes, discards, flushes;
    uint64_t max_io;
    int fail_pwrite;         /* return this from pwrite when non-zero */
    unsigned cancel_after;   /* cancelled() answers true after this many calls (0: never) */
    unsigned cancel_calls;
};

static bool mem_cancelled(void *o)
{
    struct mem *m = o;
    m->cancel_calls++;
    return m->cancel_after && m->cancel_calls > m->cancel_after;
}

static int mem_check(struct mem *m, uint64_t len, uint64_t off, bv_error **errp)
{
    if (off > MEM_SIZE || len > MEM_SIZE - off)
        return bv_error_setf(errp, EINVAL, "out of range");
    if (len > m->max_io)
        m->max_io = len;
    return 0;
}

static int mem_pread(void *o, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    struct mem *m = o;
    int r = mem_check(m, len, off, errp);
    if (r == 0) {
        memcpy(buf, m->data + off, len);
        m->preads++;
    }
    return r;
}

static int mem_pwrite(void *o, const void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    struct mem *m = o;
    if (m->fail_pwrite)
        return bv_error_setf(errp, m->fail_pwrite, "injected");
    int r = mem_check(m, len, off, errp);
    if (r == 0) {
        memcpy(m->data + off, buf, len);
        m->pwrites++;
    }
    return r;
}

static int mem_zero(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    struct mem *m = o;
    int r = mem_check(m, len, off, errp);
    if (r == 0) {
        memset(m->data + off, 0, len);
        m->zeroes++;
    }
    return r;
}

static int mem_discard(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    struct mem *m = o;
    int r = mem_check(m, len, off, errp);
    if (r == 0) {
        memset(m->data + off, 0, len);
        m->discards++;
    }
    return r;
}

static int mem_flush(void *o, bv_error **errp)
{
    (void)errp;
    ((struct mem *)o)->flushes++;
    return 0;
}

static int setup_mem(void **state)
{
    struct mem *m = calloc(1, sizeof(*m));
    m->data = calloc(1, MEM_SIZE);
    *state = m;
    return 0;
}

static int teardown_mem(void **state)
{
    struct mem *m = *state;
    free(m->data);
    free(m);
    return 0;
}

static struct bv_iocmd_target mem_target(struct mem *m)
{
    struct bv_iocmd_target t = {
        .opaque = m, .pread = mem_pread, .pwrite = mem_pwrite, .write_zeroes = mem_zero,
        .discard = mem_discard, .flush = mem_flush, .size = MEM_SIZE, .cancelled = mem_cancelled,
    };
    return t;
}

static int64_t run(struct mem *m, const char *line, bv_error **errp)
{
    struct bv_iocmd cmd;
    int r = bv_iocmd_parse(line, &cmd, errp);
    if (r < 0)
        return r;
    struct bv_iocmd_target t = mem_target(m);
    return bv_iocmd_exec(&cmd, &t, errp);
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return false;
    return true;
}

static void test_exec_write_read(void **state)
{
    struct mem *m = *state;
    assert_int_equal(run(m, "write -P 0x41 0 512", NULL), 512);
    assert_int_equal(run(m, "write -P 0xd5 1M 32k", NULL), 32768);
    assert_true(all_bytes(m->data, 512, 0x41));
    assert_int_equal(m->data[512], 0);
    assert_true(all_bytes(m->data + (1 << 20), 32768, 0xd5));
    assert_int_equal(run(m, "read -P 0x41 0 512", NULL), 512);
    assert_int_equal(run(m, "read -P 0xd5 1M 32k", NULL), 32768);
    assert_int_equal(run(m, "write 2M 1", NULL), 1);
    assert_int_equal(m->data[2 << 20], BV_IOCMD_DEFAULT_PATTERN);
}

static void test_exec_mismatch(void **state)
{
    struct mem *m = *state;
    assert_int_equal(run(m, "write -P 0x41 0 512", NULL), 512);
    bv_error *err = NULL;
    assert_int_equal(run(m, "read -P 0x41 16 1k", &err), -EIO);
    assert_non_null(err);
    assert_int_equal(err->kind, BV_ERR_MISMATCH);
    assert_int_equal(err->offset, 16);
    assert_string_equal(err->msg, "Pattern verification failed at offset 16, 1024 bytes");
    bv_error_free(err);
    /* a mismatch only in the last byte of a multi-chunk read is found */
    assert_int_equal(run(m, "write -P 7 0 10M", NULL), 10 << 20);
    m->data[(10 << 20) - 1] = 8;
    err = NULL;
    assert_int_equal(run(m, "read -P 7 0 10M", &err), -EIO);
    bv_error_free(err);
}

static void test_exec_chunks_bounded(void **state)
{
    struct mem *m = *state;
    assert_int_equal(run(m, "write -P 1 1 12582911", NULL), 12582911);
    assert_int_equal(m->max_io, BV_IOCMD_CHUNK);
    assert_int_equal(m->pwrites, 3);
    assert_true(all_bytes(m->data + 1, MEM_SIZE - 1, 1));
    assert_int_equal(m->data[0], 0);
    assert_int_equal(run(m, "read -P 1 1 12582911", NULL), 12582911);
    assert_int_equal(m->preads, 3);
}

static void test_exec_zero_discard_flush(void **state)
{
    struct mem *m = *state;
    memset(m->data, 0xff, MEM_SIZE);
    assert_int_equal(run(m, "write -z 4k 8k", NULL), 8192);
    assert_int_equal(run(m, "discard 1M 1M", NULL), 1 << 20);
    assert_int_equal(run(m, "flush", NULL), 0);
    assert_int_equal(m->zeroes, 1);
    assert_int_equal(m->discards, 1);
    assert_int_equal(m->flushes, 1);
    assert_int_equal(m->pwrites, 0);
    assert_true(all_bytes(m->data + 4096, 8192, 0));
    assert_int_equal(m->data[4095], 0xff);
    assert_int_equal(m->data[12288], 0xff);
    assert_true(all_bytes(m->data + (1 << 20), 1 << 20, 0));
}

static void test_exec_errors_propagate(void **state)
{
    struct mem *m = *state;
    bv_error *err = NULL;
    m->fail_pwrite = ENOSPC;
    err = NULL;
    assert_int_equal(run(m, "write 0 1", &err), -ENOSPC);
    bv_error_free(err);
    /* a hand-made command over the cap is refused before any I/O */
    struct bv_iocmd big = { .op = BV_IOCMD_READ, .length = BV_IOCMD_MAX_LEN + 1 };
    struct bv_iocmd_target t = mem_target(m);
    err = NULL;
    assert_int_equal(bv_iocmd_exec(&big, &t, &err), -EINVAL);
    bv_error_free(err);
    assert_int_equal(m->preads, 0);
}

/* A request that runs past the end is refused whole, before any byte moves
 * (a chunked executor used to write 12 MiB and then fail), for every op. */
static void test_exec_past_end_changes_nothing(void **state)
{
    static const struct {
        const char *line, *msg;
    } cases[] = {
        { "write -P 0x1 0 1G", "Input/output error: write offset=0 bytes=1073741824 is past "
          "the end of the image (12582912 bytes)" },
        { "write -P 0x1 8M 4194305", "Input/output error: write offset=8388608 bytes=4194305 "
          "is past the end of the image (12582912 bytes)" },
        { "write -z 4M 9M", "Input/output error: write offset=4194304 bytes=9437184 is past "
          "the end of the image (12582912 bytes)" },
        { "discard 0 13M", "Input/output error: discard offset=0 bytes=13631488 is past the "
          "end of the image (12582912 bytes)" },
        { "read -P 0 12M 1", "Input/output error: read offset=12582912 bytes=1 is past the "
          "end of the image (12582912 bytes)" },
        { "read 13M 0", "Input/output error: read offset=13631488 bytes=0 is past the end "
          "of the image (12582912 bytes)" },
    };
    struct mem *m = *state;
    memset(m->data, 0x5a, MEM_SIZE);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bv_error *err = NULL;
        assert_int_equal(run(m, cases[i].line, &err), -EIO);
        assert_non_null(err);
        assert_string_equal(err->msg, cases[i].msg);
        bv_error_free(err);
    }
    assert_int_equal(m->pwrites + m->preads + m->zeroes + m->discards, 0);
    assert_true(all_bytes(m->data, MEM_SIZE, 0x5a));
    /* the last byte and an empty range at the end are inside */
    assert_int_equal(run(m, "write -P 3 12582911 1", NULL), 1);
    assert_int_equal(run(m, "read -P 3 12582911 1", NULL), 1);
    assert_int_equal(run(m, "read 12M 0", NULL), 0);
}

/* The cancel callback is asked before every chunk; a cancelled command
 * stops there and says how far it got. */
static void test_exec_cancel_between_chunks(void **state)
{
    struct mem *m = *state;
    m->cancel_after = 2;           /* exec's first check, chunk 1, then cancelled */
    bv_error *err = NULL;
    assert_int_equal(run(m, "write -P 9 0 12M", &err), -ECANCELED);
    assert_non_null(err);
    assert_string_equal(err->msg, "write cancelled after 4194304 of 12582912 bytes");
    bv_error_free(err);
    assert_int_equal(m->pwrites, 1);
    assert_true(all_bytes(m->data, 4u << 20, 9));
    assert_int_equal(m->data[4u << 20], 0);
    m->cancel_calls = 1;           /* the next call, exec's own check, answers true */
    m->cancel_after = 1;
    err = NULL;
    assert_int_equal(run(m, "discard 0 1M", &err), -ECANCELED);
    assert_string_equal(err->msg, "discard cancelled after 0 of 1048576 bytes");
    bv_error_free(err);
    assert_int_equal(m->discards, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_messages),
        cmocka_unit_test_setup_teardown(test_exec_write_read, setup_mem, teardown_mem),
        cmocka_unit_test_setup_teardown(test_exec_mismatch, setup_mem, teardown_mem),
        cmocka_unit_test_setup_teardown(test_exec_chunks_bounded, setup_mem, teardown_mem),
        cmocka_unit_test_setup_teardown(test_exec_zero_discard_flush, setup_mem, teardown_mem),
        cmocka_unit_test_setup_teardown(test_exec_errors_propagate, setup_mem, teardown_mem),
        cmocka_unit_test_setup_teardown(test_exec_past_end_changes_nothing, setup_mem,
                                        teardown_mem),
        cmocka_unit_test_setup_teardown(test_exec_cancel_between_chunks, setup_mem, teardown_mem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
